"""The paper's protocol through the runner: model units (one model per train shot, N-way cells
on the 5-way model), the finetune track end to end on a tiny synth, resume, evaluation of a
finetune checkpoint through the one evaluation path, and the one training loop."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from finetune_fixtures import TINY_SYNTH, tiny_finetune_track, tiny_recipe

import fsarbench as fb
from fsarbench.data.datasets import get_dataset
from fsarbench.experiments import runner as runner_mod
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.plan import plan_cells, print_plan
from fsarbench.experiments.runner import CellRunner, RunOptions
from fsarbench.experiments.units import unit_for
from fsarbench.report.records import episodes_key
from fsarbench.training import SplitFeatures
from fsarbench.training import loop as loop_mod
from fsarbench.training.loop import LoopConfig, MicroBatch, run_training
from fsarbench.training.recipe import Recipe
from fsarbench.training.trainer import FeatureSource, train
from fsarbench.training.video_method import ClipEpisodes, VideoMethod

CELLS = [
    Cell("protonet", "synth", 5, 1, track="finetune", label="protonet"),
    Cell("protonet", "synth", 5, 2, track="finetune", label="protonet"),
    Cell("protonet", "synth", 7, 1, track="finetune", label="protonet"),
]
#: recipe overrides of the run (a run trains each unit at its cells' shot: no ``shot``)
RUN = {"way": 5, "val_every": 1, "val_episodes": 6, "queries": 1}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    ds = get_dataset("synth", root=tmp_path_factory.mktemp("synth"), config=TINY_SYNTH)
    ds.videos("train")  # generate once
    return ds


def _runner(out, cache, synth, **opts) -> CellRunner:
    track = tiny_finetune_track(synth, cache, recipe=RUN)
    return CellRunner({"finetune": track}, RunOptions(out, episodes=40, progress=False, **opts))


def test_units_one_model_per_shot_and_nway_cells_share_the_5way_model():
    units = [unit_for(c, recipe_way=5, recipe_shot=1, share_shots=False) for c in CELLS]
    assert [(u.train_way, u.train_shot) for u in units] == [(5, 1), (5, 2), (5, 1)]
    assert units[0] == units[2] != units[1]
    shared = {unit_for(c, recipe_way=5, recipe_shot=1, share_shots=True) for c in CELLS}
    assert len(shared) == 1 and next(iter(shared)).train_shot == 1


def test_plan_lists_units_and_their_cells(tmp_path, synth):
    plans = plan_cells(_runner(tmp_path / "out", tmp_path / "cache", synth), CELLS)
    assert [(p.unit.train_shot, [c.way for c in p.cells]) for p in plans] == [(1, [5, 7]), (2, [5])]
    # 2 steps x 2 episodes x 5 ways x (shot + 1 query) x 2 frames
    assert [p.train_frames for p in plans] == [2 * 2 * 5 * 2 * 2, 2 * 2 * 5 * 3 * 2]
    assert not (tmp_path / "out" / "models").exists()  # nothing trained


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory, synth):
    out = tmp_path_factory.mktemp("ft")
    runner = _runner(out / "a", out / "cache", synth)
    records = runner.run_cells(CELLS)
    return out, runner, records


def test_finetune_cells_train_one_model_per_shot_select_on_val_and_record(finetune_run):
    out, runner, records = finetune_run
    assert len(runner.trained_units) == 2
    models = sorted(p.name for p in (out / "a" / "models").iterdir())
    assert len(models) == 2 and all("finetune-seed__5w" in m for m in models)
    assert all((out / "a" / "models" / m / "best.pt").exists() for m in models)
    by = {(r.way, r.shot): r for r in records}
    assert {k: (r.train_way, r.train_shot) for k, r in by.items()} == {
        (5, 1): (5, 1),
        (5, 2): (5, 2),
        (7, 1): (5, 1),
    }
    assert all(r.track == "finetune" and r.protocol == "seed" for r in records)
    assert all(r.recipe["options"]["backbone"] == "resnet18" for r in records)
    summary = pd.read_csv(out / "a" / "summary.csv")
    assert set(summary["track"]) == {"finetune"} and set(summary["train_shot"]) == {1, 2}
    probes = sorted(p.name for p in (out / "cache" / "probes").glob("*.json"))
    assert probes == [f"{runner.tracks['finetune'].open_dataset('synth').variant}.json"]


def test_plan_leaves_out_recorded_cells_and_finished_units(finetune_run, synth, tmp_path, capsys):
    out, _, records = finetune_run
    shutil.copytree(out / "a", tmp_path / "a")
    plans = plan_cells(_runner(tmp_path / "a", out / "cache", synth), CELLS)
    assert all(p.done and p.checkpoint for p in plans)
    print_plan(plans, 800.0)
    text = capsys.readouterr().out
    assert text.startswith("0 model(s) to train for 0 cell(s):")
    assert "already recorded in the output folder: 3 cell(s); 2 model(s) need no training" in text
    assert "total: 0 optimiser steps" in text
    # the 7-way record gone: its unit (5-way 1-shot) is reloaded for that one cell
    seven = next(r for r in records if r.way == 7)
    (tmp_path / "a" / "records" / f"{seven.cell}.json").unlink()
    plans = plan_cells(_runner(tmp_path / "a", out / "cache", synth), CELLS)
    assert [(p.unit.train_shot, len(p.cells), len(p.recorded)) for p in plans] == [
        (1, 2, 1),
        (2, 1, 1),
    ]
    print_plan(plans, 800.0)
    text = capsys.readouterr().out
    assert text.startswith("1 model(s) to train for 1 cell(s):")
    assert "2 cell(s) [5w1s, 7w1s], 1 recorded (checkpoint in models/)" in text
    assert "already recorded in the output folder: 2 cell(s); 1 model(s) need no training" in text


def _checkpoints(run: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (run / "models").glob("*/best.pt")}


def test_other_decode_workers_reuse_the_runs_models_and_records(finetune_run, synth):
    out, _, records = finetune_run
    before = sorted(p.name for p in (out / "a" / "records").iterdir())
    models = _checkpoints(out / "a")
    options = {**tiny_recipe()["options"], "workers": 1}
    track = tiny_finetune_track(synth, out / "cache", recipe=RUN, option_overrides=options)
    again = CellRunner({"finetune": track}, RunOptions(out / "a", episodes=40, progress=False))
    rerun = again.run_cells(CELLS)
    assert [r.config_hash for r in rerun] == [r.config_hash for r in records]
    assert [r.accuracy for r in rerun] == [r.accuracy for r in records]
    assert sorted(p.name for p in (out / "a" / "records").iterdir()) == before
    assert _checkpoints(out / "a") == models  # same units, not trained again


def test_resumed_finetune_run_gives_the_same_summary(finetune_run, synth, monkeypatch):
    out, _, _ = finetune_run
    original, calls = runner_mod.evaluate, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(runner_mod, "evaluate", dying)
    with pytest.raises(KeyboardInterrupt):
        _runner(out / "b", out / "cache", synth).run_cells(CELLS)
    monkeypatch.setattr(runner_mod, "evaluate", original)
    resumed = _runner(out / "b", out / "cache", synth)
    resumed.run_cells(CELLS)
    assert len(resumed.trained_units) == 2  # reloaded from their finished checkpoints
    cols = ["method", "way", "shot", "train_shot", "accuracy", "ci95", "config_hash"]
    a = pd.read_csv(out / "a" / "summary.csv")[cols]
    b = pd.read_csv(out / "b" / "summary.csv")[cols]
    pd.testing.assert_frame_equal(a, b)


def test_eval_checkpoint_of_finetune_model_equals_the_run(finetune_run, synth, tmp_path):
    from fsarbench.cli.main import main

    out, _, records = finetune_run
    record = next(r for r in records if (r.way, r.shot) == (7, 1))
    model = next(p for p in (out / "a" / "models").iterdir() if "5w1s" in p.name)
    argv = _eval_argv(model / "best.pt", tmp_path, out / "cache", way=7, episodes=40)
    assert _with_synth(synth, lambda: main(argv)) == 0
    (evaluated,) = fb.load_records(tmp_path)
    assert evaluated.manifest_hash == record.manifest_hash
    assert (evaluated.accuracy, evaluated.ci95) == (record.accuracy, record.ci95)
    assert evaluated.recipe == record.recipe  # one model, one recipe (and one record id)
    assert (evaluated.track, evaluated.protocol, evaluated.train_shot) == ("finetune", "seed", 1)
    # paired with the run's record: the same test list and the same left-out videos recorded
    assert episodes_key(evaluated) == episodes_key(record) and episodes_key(record).test_list_md5
    assert evaluated.tags == {}  # trained by this code: filed as the method itself


def test_eval_of_a_finetune_model_trained_by_other_code_is_a_variant(
    finetune_run, synth, tmp_path, capsys
):
    """The other-code check covered frozen checkpoints only: a finetune model trained before
    a change to its head or the clip pipeline was filed as the current method."""
    import torch

    from fsarbench.cli.main import main

    out, _, _ = finetune_run
    model = next(p for p in (out / "a" / "models").iterdir() if "5w1s" in p.name)
    data = torch.load(model / "best.pt", map_location="cpu", weights_only=False)
    data["fingerprint"]["code_digest"] = "0123456789abcdef"
    older = tmp_path / "older.pt"
    torch.save(data, older)
    argv = _eval_argv(older, tmp_path / "r", out / "cache")
    assert _with_synth(synth, lambda: main(argv)) == 0
    assert "'protonet [trained with other code]'" in capsys.readouterr().out
    (evaluated,) = fb.load_records(tmp_path / "r")
    assert evaluated.tags["variant_label"] == "trained with other code"


@pytest.mark.parametrize("key", ["files", "test list"])
def test_eval_of_a_finetune_model_trained_on_other_train_videos_is_a_variant(
    finetune_run, synth, tmp_path, capsys, key
):
    """Only frozen checkpoints were checked against the dataset's train/val data now: a
    finetune model trained before a train video was replaced (or on other split lists) was
    filed as the run's model. The unchanged checkpoint is not a variant (the test above)."""
    import torch

    from fsarbench.cli.main import main

    out, _, _ = finetune_run
    model = next(p for p in (out / "a" / "models").iterdir() if "5w1s" in p.name)
    data = torch.load(model / "best.pt", map_location="cpu", weights_only=False)
    trained = data["fingerprint"]["data"]
    if key == "files":
        trained["files"] = "another"
    else:  # a test list of its own changes nothing the model was trained on
        trained["split_md5"] = {**trained["split_md5"], "test": "another"}
    older = tmp_path / "best.pt"
    torch.save(data, older)
    argv = _eval_argv(older, tmp_path / "r", out / "cache")
    assert _with_synth(synth, lambda: main(argv)) == 0
    (evaluated,) = fb.load_records(tmp_path / "r")
    label = "trained on other train/val videos" if key == "files" else None
    assert evaluated.tags.get("variant_label") == label


def test_finetune_train_data_labels():
    """Other files: other videos. The same files under another copy of the train/val lists
    (TRX's and HyRSM's HMDB51 lists): said as such, not as other videos."""
    from fsarbench.cli.eval_cmd import _finetune_data_labels

    md5 = {"train": "a", "val": "b", "test": "c"}
    now = {"split_md5": {"train": "a", "val": "b"}, "files": "f"}
    assert _finetune_data_labels({"split_md5": md5, "files": "f"}, now) == []
    assert _finetune_data_labels({"split_md5": md5, "files": "g"}, now) == [
        "trained on other train/val videos"
    ]
    copy = {"split_md5": {**md5, "val": "d"}, "files": "f"}
    assert _finetune_data_labels(copy, now) == ["trained with other train/val split lists"]
    assert _finetune_data_labels({"files": "g"}, None) == []  # nothing known now


def test_a_run_s_own_finetune_model_evaluated_into_its_folder_is_a_variant(
    finetune_run, synth, tmp_path
):
    """eval of OUT/models/UNIT/best.pt into OUT wrote a second, ordinary record under
    another config hash: the one model stood as two ranked systems in its tables."""
    import shutil

    from fsarbench.cli.main import main

    out, _, records = finetune_run
    run = tmp_path / "run"
    shutil.copytree(out / "a", run)
    model = next(p for p in (run / "models").iterdir() if "5w1s" in p.name)
    argv = _eval_argv(model / "best.pt", run, out / "cache", episodes=40)
    assert _with_synth(synth, lambda: main(argv)) == 0
    evaluated = [r for r in fb.load_records(run) if r.tags.get("variant_label")]
    assert [r.tags["variant_label"] for r in evaluated] == [
        "the run's model evaluated again (its run record stands)"
    ]
    kept = {r.cell for r in fb.load_records(run) if not r.tags.get("variant_label")}
    assert kept == {r.cell for r in records}  # the run's own records are untouched


def _eval_argv(checkpoint, out, cache, *, way: int = 5, episodes: int = 20) -> list[str]:
    """``eval protonet --checkpoint ... --dataset synth`` of a 1-shot setting into ``out``."""
    argv = ["eval", "protonet", "--checkpoint", str(checkpoint), "--dataset", "synth"]
    argv += ["--way", str(way), "--shot", "1", "--episodes", str(episodes)]
    return [*argv, "--cache", str(cache), "--out", str(out), "--device", "cpu"]


def _with_synth(synth, fn):
    """Run ``fn`` with ``get_dataset("synth")`` answering the tiny synth."""
    from fsarbench.data import datasets

    factory = datasets.DATASETS["synth"]
    datasets.DATASETS["synth"] = lambda **kw: synth
    try:
        return fn()
    finally:
        datasets.DATASETS["synth"] = factory


# -- one training loop ----------------------------------------------------------------------
class _Identity(torch.nn.Module):
    feature_dim = 16

    def forward(self, x):
        return x


class _AsClips:
    """A FeatureSource whose batches are ClipEpisodes of features (an identity backbone's
    'clips' [B, N, T, D])."""

    def __init__(self, source: FeatureSource) -> None:
        self.source = source

    def stage(self, name, first_step, steps):
        for micro in self.source.stage(name, first_step, steps):
            yield [MicroBatch(m.first, m.count, _clips(m.batch)) for m in micro]


def _clips(b) -> ClipEpisodes:
    return ClipEpisodes(
        b.support,
        b.support_labels,
        b.query,
        b.query_labels,
        b.support_classes,
        b.query_classes,
        b.way,
    )


def _features() -> SplitFeatures:
    g = torch.Generator().manual_seed(3)
    classes = np.repeat(np.arange(6), 5)
    f = torch.randn(6, 16, generator=g)[torch.as_tensor(classes)][:, None].expand(-1, 4, -1)
    f = (f + 0.5 * torch.randn(len(classes), 4, 16, generator=g)).contiguous()
    return SplitFeatures(fb.InMemoryFeatureStore(f), classes, "toy")


def test_frozen_step_equals_the_finetune_loop_with_a_frozen_identity_backbone(monkeypatch):
    from fsarbench.registry import create_method
    from fsarbench.training.finetune_recipe import FinetuneOptions

    recipe = Recipe(steps=3, episodes_per_step=4, micro_batch=2, queries=2, val_episodes=0)
    torch.manual_seed(0)
    head = create_method("trx", feature_dim=16, seq_len=4, num_train_classes=6)
    frozen = copy.deepcopy(head)
    calls = []
    real = loop_mod.run_training
    monkeypatch.setattr(
        "fsarbench.training.trainer.run_training",
        lambda *a, **k: calls.append("frozen") or real(*a, **k),
    )
    train(frozen, _features(), None, recipe, seed=5, progress=False)
    video = VideoMethod(_Identity(), copy.deepcopy(head), FinetuneOptions(train_backbone="all"))
    source = _AsClips(FeatureSource(_features(), recipe, 5, torch.device("cpu")))
    run_training(video, source, None, LoopConfig(recipe=recipe, seed=5, progress=False))
    assert calls == ["frozen"]
    trained = video.inner.state_dict()
    for name, value in frozen.state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0, msg=name)
    start = head.state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in trained.items())  # it trained


def test_finetune_runs_the_same_loop(monkeypatch, synth, tmp_path):
    from fsarbench.training import finetune as ft

    seen = []
    monkeypatch.setattr(ft, "run_training", lambda *a, **k: seen.append(a[1]) or "done")
    recipe = ft.finetune_recipe("protonet", "synth", tiny_recipe())
    split = ft.ClipSplit(synth.videos("train"), synth.variant)
    model = ft.build_video_method("protonet", recipe.options, torch.device("cpu"))
    assert ft.finetune(model, split, None, recipe) == "done"
    assert isinstance(seen[0], ft.ClipSource)


def test_shards_deal_out_whole_units_and_cover_every_cell():
    from fsarbench.cli.main import build_parser
    from fsarbench.cli.run_cmd import _setup, _shard, select_cells

    args = build_parser().parse_args(["run", "--all", "--out", "/tmp/unused"])
    _, tracks = _setup(args)
    cells = select_cells(args, [])
    shards = [_shard(cells, f"{i}/3", tracks, False) for i in range(3)]
    assert sorted(map(id, sum(shards, []))) == sorted(map(id, cells))

    def unit(cell):
        return (cell.method, cell.hparams, cell.dataset, cell.shot, cell.train_seed)

    owners = {}
    for i, shard in enumerate(shards):
        for cell in shard:
            assert owners.setdefault(unit(cell), i) == i  # a unit lives on one shard
    assert all(shards)
    # one shard per unit: each holds one (a unit's hash modulo N left a third empty)
    units = len(owners)
    per_unit = [_shard(cells, f"{i}/{units}", tracks, False) for i in range(units)]
    assert all(len({unit(c) for c in shard}) == 1 for shard in per_unit)
    counts = [len({unit(c) for c in shard}) for shard in shards]
    assert max(counts) - min(counts) <= 1  # dealt in turn


def test_eval_checkpoint_of_frozen_model_equals_the_run(synth, tmp_path, monkeypatch):
    from fsarbench.cli.main import main
    from fsarbench.experiments.features import FrozenFeatureProvider
    from fsarbench.experiments.runner import FrozenTrack

    monkeypatch.setenv("FSAR_CACHE", str(tmp_path / "cache"))
    recipe = {"steps": 3, "val_every": 3, "val_episodes": 10, "queries": 1}
    provider = FrozenFeatureProvider(progress=False, workers=0)
    track = FrozenTrack(provider, recipe_overrides=recipe, device="cpu", progress=False)
    opts = RunOptions(tmp_path / "runs", episodes=30, progress=False, recipe_overrides=recipe)
    cells = [Cell("otam", "synth", 5, 1, label="otam"), Cell("otam", "synth", 6, 1)]
    records = _with_synth(synth, lambda: CellRunner({"frozen": track}, opts).run_cells(cells))
    (model,) = (tmp_path / "runs" / "models").iterdir()
    assert "frozen-seed__5w1s" in model.name
    argv = ["eval", "otam", "--checkpoint", str(model / "best.pt"), "--dataset", "synth"]
    argv += ["--way", "6", "--shot", "1", "--episodes", "30", "--out", str(tmp_path / "ev")]
    assert _with_synth(synth, lambda: main([*argv, "--device", "cpu"])) == 0
    (evaluated,) = fb.load_records(tmp_path / "ev")
    run = records[1]
    assert (evaluated.manifest_hash, evaluated.accuracy) == (run.manifest_hash, run.accuracy)
    assert (evaluated.track, evaluated.train_shot) == ("frozen", 1)
