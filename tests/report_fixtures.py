"""Small results folders for the HTML report's tests (real records from fsarbench.evaluate)."""

from __future__ import annotations

from pathlib import Path

from fsarbench.report.demo import DemoSystem, write_demo_records

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
