"""``synth-planted``: the generated benchmark whose only class evidence is a short action
window among shared background frames (issue #16), and the grids and tables that use it as
the stand-in for SGTM's saliency ablations (Tables 3 and 4)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fsarbench.data.datasets import get_dataset, is_synthetic, settings_dataset
from fsarbench.data.protocols import get_protocol
from fsarbench.data.synth import (
    PLANTED_BACKGROUND_ACTIONS,
    PLANTED_CLASS_ACTIONS,
    PLANTED_PLAN,
    PLANTED_WINDOW,
    SynthConfig,
    _render,
    _window_of,
    plan_classes,
)
from fsarbench.experiments.features import feature_preset
from fsarbench.experiments.grids import expand_grid, grid_stand_in
from fsarbench.report.demo import DemoSystem, write_demo_records
from fsarbench.report.published import load_table
from fsarbench.report.records import load_entries
from fsarbench.report.tables import build_table
from fsarbench.training.recipe import frozen_recipe

CLASSES = plan_classes(0, "planted")


def test_plan_has_disjoint_ordered_pairs_per_split() -> None:
    for split, n in PLANTED_PLAN.items():
        assert sum(c.split == split for c in CLASSES) == n
    pairs = [c.actions for c in CLASSES]
    assert len(set(pairs)) == len(pairs)  # no pair names two classes
    assert all(len(p) == 2 and p[0] != p[1] for p in pairs)
    assert plan_classes(0, "planted") == CLASSES  # deterministic


@pytest.mark.parametrize("index", range(6))
def test_only_the_window_shows_the_class_actions_alone(index: int) -> None:
    config = SynthConfig()
    c = CLASSES[index * 5]
    frames, segments = _render(c, index, config, seed=0)
    start, stop = _window_of(segments)
    assert config.min_frames <= len(frames) <= config.max_frames
    assert stop - start == max(4, round(PLANTED_WINDOW * len(frames)))
    window = [s for s in segments if len(s.actions) == 1]
    assert [s.actions[0] for s in window] == list(c.actions)  # in the class's order
    background = [s for s in segments if s not in window]
    assert all(len(s.actions) == 2 for s in background)  # overlaid at half opacity
    assert {a for s in background for a in s.actions} <= set(PLANTED_BACKGROUND_ACTIONS)
    assert not set(PLANTED_BACKGROUND_ACTIONS) & set(PLANTED_CLASS_ACTIONS)
    assert sum(s.length for s in segments) == len(frames)


def test_dataset_generates_with_windows_and_shares_synths_settings(tmp_path) -> None:
    small = replace(SynthConfig(), videos_per_class=1, min_frames=10, max_frames=12)
    ds = get_dataset("synth-planted", root=tmp_path, config=small)
    test = ds.videos("test")
    assert len(test) == PLANTED_PLAN["test"] and all(v.path.exists() for v in test)
    windows = ds.windows("test")
    assert set(windows) == {v.video_id for v in test}
    assert all(0 <= a < b <= 12 for a, b in windows.values())
    assert ds.name == "synth-planted" and ds.variant.startswith("synth-planted-v")
    assert ds.path != get_dataset("synth", root=tmp_path, config=small).path
    assert is_synthetic("synth-planted") and not is_synthetic("kinetics100")
    assert settings_dataset("synth-planted") == "synth"
    assert feature_preset("synth-planted") == feature_preset("synth")
    assert get_protocol("seed", "synth-planted").flip is False  # synth's entry applies
    planted, plain = (frozen_recipe("otam", dataset=d) for d in ("synth-planted", "synth"))
    assert planted == replace(plain, adapter="none")  # synth's budget, no LayerNorm adapter


def test_sgtm_on_planted_windows_uses_softplus_evidence_that_starts_off() -> None:
    import fsarbench as fb

    kw = dict(feature_dim=16, seq_len=8, num_train_classes=4, token_dim=8, num_heads=2)
    planted = fb.create_method("sgtm-otam", dataset="synth-planted", **kw).config
    assert (planted.saliency_rectify, planted.saliency_init) == ("softplus", "off")
    plain = fb.create_method("sgtm-otam", dataset="synth", **kw).config
    assert (plain.saliency_rectify, plain.saliency_init) == ("relu", "zero_sum")
    mean_ce = fb.create_method("sgtm-otam-meance", dataset="synth-planted", **kw).config
    assert mean_ce.saliency_rectify == "none"  # a registered variant's own choice wins


def test_saliency_grids_stand_in_with_planted_windows() -> None:
    assert grid_stand_in("table3") == grid_stand_in("table4") == "synth-planted"
    assert grid_stand_in("table1") == "synth"
    assert {c.dataset for c in expand_grid("table3", [])} == {"synth-planted"}
    assert {c.dataset for c in expand_grid("table4", [])} == {"synth-planted"}
    assert {c.dataset for c in expand_grid("table5", [])} == {"synth"}
    assert {c.dataset for c in expand_grid("table3", ["kinetics100"])} == {"kinetics100"}


def test_table3_reads_planted_records_and_not_plain_synth(tmp_path) -> None:
    systems = [DemoSystem("sgtm-otam"), DemoSystem("sgtm-otam-tml", noise=0.5)]
    write_demo_records(tmp_path / "planted", systems, dataset="synth-planted", episodes=60)
    write_demo_records(tmp_path / "plain", systems, dataset="synth", episodes=60)
    planted, plain = load_entries(tmp_path / "planted"), load_entries(tmp_path / "plain")
    assert all(e.synthetic for e in planted)
    t3 = build_table(load_table(3), planted + plain, source="runs", stand_in="synth-planted")
    assert [r.labels[0] for r in t3.rows] == ["2", "Ours"]
    assert {r.source for r in t3.rows} == {"run (synth-planted)"}  # the stand-in is named
    assert any(n.startswith("run (synth-planted): synthetic") for n in t3.notes)
    ours = {e.setting.shot: e for e in planted if e.method == "sgtm-otam"}
    text = t3.rows[1].cells[0].text
    assert text.startswith(f"{ours[1].accuracy:.2f}"), (text, ours[1].accuracy)
    assert np.isfinite(ours[1].accuracy)


def test_report_shows_table3_from_planted_records(tmp_path) -> None:
    from fsarbench.report.page.paper_tables import collect_tables

    systems = [DemoSystem("sgtm-otam"), DemoSystem("sgtm-otam-tml", noise=0.5)]
    write_demo_records(tmp_path, systems, dataset="synth-planted", episodes=60)
    shown, absent = collect_tables(tmp_path, load_entries(tmp_path))
    assert shown
    assert 3 not in {a.number for a in absent}
    assert 1 in {a.number for a in absent}  # Table 1's stand-in is synth


def test_too_short_planted_videos_are_refused_by_name() -> None:
    short = replace(SynthConfig(), min_frames=4, max_frames=5)
    with pytest.raises(ValueError, match="at least 6 frames.*min_frames"):
        _render(CLASSES[0], 0, short, seed=0)
