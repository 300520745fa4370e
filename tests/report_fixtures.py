"""Small results folders for the HTML report's tests (real records from fsarbench.evaluate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fsarbench.episodes import Manifest
from fsarbench.evaluate import summarise_predictions
from fsarbench.report.demo import DemoSystem, write_demo_records
from fsarbench.results import ResultRecord, make_record, save_result

#: Method names the published tables map (so Tables 1-6 get run rows); sgtm-otam is the
#: paper's own method and has two training seeds (seed-level verdicts).
SYSTEMS = [
    DemoSystem("otam"),
    DemoSystem("sgtm-otam", noise=0.05, train_seeds=(0, 1)),
    DemoSystem("trx", noise=3.0),
    DemoSystem("protonet", noise=1.0),
]
SETTINGS = [(5, 1), (5, 5), (6, 1)]
EVIL = "evil<script>alert(1)</script>"


def write_report_runs(path: Path, episodes: int = 40) -> Path:
    """Four systems in three synth settings (5-way 1/5-shot, 6-way 1-shot), and the paper's
    method on ``synth-planted`` (the stand-in of Tables 3 and 4) at 5-way 1/5-shot."""
    write_demo_records(path, SYSTEMS, settings=SETTINGS, episodes=episodes)
    planted = [DemoSystem("sgtm-otam", noise=0.05)]
    write_demo_records(path, planted, settings=SETTINGS[:2], dataset="synth-planted",
                       episodes=episodes)  # fmt: skip
    return path


def write_small_runs(path: Path) -> Path:
    """``trx`` and a system whose name is markup, in one setting: fills Tables 1, 2 and 6 only."""
    systems = [DemoSystem("trx"), DemoSystem(EVIL, noise=2.0)]
    write_demo_records(path, systems, settings=[(5, 1)], episodes=30)
    return path


def save_simulated_record(
    out: Path,
    manifest: Manifest,
    method: str,
    acc: float,
    rng: np.random.Generator,
    *,
    train_seed: int | None = None,
    dataset: str = "toy",
    **record_kw,
) -> ResultRecord:
    """A record of ``method`` on ``manifest`` whose queries are right with probability
    ``acc`` (wrong ones predict the next label), saved with its per-query rows."""
    true = manifest.query_labels
    hit = rng.random(true.shape) < acc
    predicted = np.where(hit, true, (true + 1) % manifest.way)
    result = summarise_predictions(predicted, manifest, "normal", 0.0)
    record = make_record(
        result,
        method=method,
        dataset=dataset,
        split_variant=dataset,
        manifest=manifest,
        train_seed=train_seed,
        **record_kw,
    )
    save_result(out, record, result)
    return record
