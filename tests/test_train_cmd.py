"""``python -m fsarbench train`` (frozen track on in-memory features; the finetune track's
torchrun command line is the slow test of test_finetune_ddp.py), and ``eval`` of its
checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fsarbench as fb
import fsarbench.experiments.features as features_mod
from fsarbench.cli.main import main
from fsarbench.cli.train_cmd import parse_overrides
from fsarbench.experiments.runner import DatasetFeatures
from fsarbench.experiments.tracks import DatasetPools, features_pools
from fsarbench.features.store import InMemoryFeatureStore
from fsarbench.training import SplitFeatures, load_checkpoint

T, D = 4, 8


def _split(n_classes: int, seed: int) -> SplitFeatures:
    classes = np.repeat(np.arange(n_classes), 6)
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, 1, D, generator=g)
    feats = centres[classes] + 0.5 * torch.randn(len(classes), T, D, generator=g)
    return SplitFeatures(InMemoryFeatureStore(feats), classes, "toy")


class FakeProvider:
    """Stands in for FrozenFeatureProvider (no extraction)."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs

    def __call__(self, dataset: str) -> DatasetFeatures:
        splits = {"train": _split(8, 0), "val": _split(5, 1), "test": _split(5, 2)}
        names = {s: [f"c{i}" for i in range(sp.num_classes)] for s, sp in splits.items()}
        return DatasetFeatures(dataset, "toy", splits, names)

    def listing(self, dataset: str) -> DatasetPools:
        """What ``run`` checks its cells against before any work (no files here)."""
        return features_pools(self(dataset))

    def cached(self, dataset: str, protocol: str | None = None) -> DatasetFeatures:
        """In memory: ready without extraction (``run --plan`` plans with them)."""
        return self(dataset)

    def outline(self, dataset: str, protocol: str | None = None):
        raise AssertionError("in-memory features are always ready: no outline is needed")


ARGS = [
    "--recipe",
    "steps=4",
    "val_every=2",
    "val_episodes=10",
    "episodes_per_step=2",
    "--no-progress",
]


def test_frozen_train_saves_resumes_and_evaluates(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    out = tmp_path / "m"
    assert main(["train", "protonet", "--dataset", "toy", "--out", str(out), *ARGS]) == 0
    text = capsys.readouterr().out
    assert "protonet (frozen) on toy: best val accuracy" in text
    assert "step time: " in text and " ms = data " in text  # the per-step breakdown (CPU)
    best = load_checkpoint(out / "best.pt")
    assert f"best val accuracy {best['val_accuracy']:.2f} at step {best['step']}" in text
    history = load_checkpoint(out / "last.pt")["history"]
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert main(["train", "protonet", "--dataset", "toy", "--out", str(out), *ARGS]) == 0
    assert load_checkpoint(out / "last.pt")["history"] == history  # resumed: nothing redone

    test = FakeProvider()("toy").splits["test"]
    torch.save(test.store.features, tmp_path / "f.pt")
    fb.make_manifest(test.classes, way=5, shot=1, episodes=20).save(tmp_path / "m.json")
    rc = main(
        [
            "eval",
            "protonet",
            "--features",
            str(tmp_path / "f.pt"),
            "--manifest",
            str(tmp_path / "m.json"),
            "--checkpoint",
            str(out / "best.pt"),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "r"),
            "--amp",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0 and "(20 episodes, 5-way 1-shot" in captured.out
    assert "--amp: mixed precision is for CUDA; on cpu this evaluation runs in float32" in (
        caplog.text
    )
    (record,) = fb.load_records(tmp_path / "r")
    assert record.compute["autocast"] == "off"
    selected = {"selected_step": best["step"], "val_accuracy": round(best["val_accuracy"], 4)}
    assert record.training == selected
    from fsarbench.cli.eval_cmd import checkpoint_training

    resume_point = checkpoint_training(load_checkpoint(out / "last.pt"))  # not val-selected
    assert resume_point == {
        "steps": {"main": 4},
        "selected_step": None,
        "val_accuracy": None,
        "weights_step": 4,
    }


def test_eval_reads_its_checkpoint_once(tmp_path, monkeypatch, capsys):
    """eval --dataset read --checkpoint four times (kind, weights, recipe, seed): slow for a
    large backbone, and a training still replacing best.pt could mix two checkpoints."""
    from fsarbench.training import loop as loop_mod

    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    out = tmp_path / "m"
    argv = ["train", "protonet", "--dataset", "toy", "--out", str(out), "--no-progress"]
    assert main([*argv, "--recipe", "steps=2", "val_episodes=4", "episodes_per_step=2"]) == 0
    reads, original = [], loop_mod.load_checkpoint
    monkeypatch.setattr(loop_mod, "load_checkpoint", lambda p: reads.append(p) or original(p))
    argv = ["eval", "protonet", "--dataset", "toy", "--checkpoint", str(out / "best.pt")]
    argv += ["--way", "5", "--shot", "1", "--episodes", "20", "--out", str(tmp_path / "r")]
    assert main([*argv, "--device", "cpu"]) == 0
    assert reads == [str(out / "best.pt")]
    (record,) = fb.load_records(tmp_path / "r")
    assert record.train_seed == 0 and record.train_shot == 1


def test_eval_builds_the_features_a_frozen_checkpoint_was_trained_on(tmp_path, monkeypatch):
    """A head trained under 'run --features resolution=48' could only be evaluated by run:
    eval built the dataset's default preset (and then refused it). It now takes the preset
    values the checkpoint's fingerprint recorded."""
    from fsarbench.cli import eval_cmd

    made: list[dict] = []

    class Recording(FakeProvider):
        def __call__(self, dataset: str) -> DatasetFeatures:
            made.append(self.kwargs.get("preset_overrides") or {})
            feats = super().__call__(dataset)
            feats.info.update({"backbone": "resnet18", "resolution": 64, **made[-1]})
            return feats

    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", Recording)
    out = tmp_path / "m"
    argv = ["train", "protonet", "--dataset", "toy", "--out", str(out), "--no-progress"]
    assert main([*argv, "--recipe", "steps=2", "val_episodes=4", "episodes_per_step=2"]) == 0
    best = load_checkpoint(out / "best.pt")
    best["fingerprint"]["data"] = {"backbone": "resnet18", "resolution": 48, "num_frames": 4}
    torch.save(best, out / "best.pt")
    argv = ["eval", "protonet", "--dataset", "toy", "--checkpoint", str(out / "best.pt")]
    argv += ["--episodes", "20", "--device", "cpu", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    assert made[-1] == {"backbone": "resnet18", "resolution": 48, "num_frames": 4}
    (record,) = fb.load_records(tmp_path / "r")
    assert record.features["resolution"] == 48
    assert eval_cmd._trained_preset({"protocol": {"name": "trx"}, "split_md5": {}}) == {}


def test_training_without_val_episodes_leaves_the_last_weights_as_best_pt(
    tmp_path, monkeypatch, capsys
):
    """With val_episodes=0 nothing was selected and no best.pt was written, so the
    documented `eval --checkpoint OUT/best.pt` had no file; the report said "best val
    accuracy n/a at step None"."""
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    out = tmp_path / "m"
    argv = ["train", "protonet", "--dataset", "toy", "--out", str(out), "--no-progress"]
    assert main([*argv, "--recipe", "steps=3", "val_episodes=0", "episodes_per_step=2"]) == 0
    text = capsys.readouterr().out
    assert "no val episodes, so no selection: best.pt holds the last step's weights" in text
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best["val_accuracy"] is None and best["selection"].startswith("none")
    for name, value in last["method"].items():
        assert torch.equal(best["method"][name], value), name


def test_bad_arguments_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    base = ["train", "protonet", "--dataset", "toy", "--out", str(tmp_path)]
    assert main([*base, "--option", "crop=32"]) == 2
    assert "--option applies to --track finetune only" in capsys.readouterr().err
    assert main([*base, "--recipe", "stepz=3"]) == 2
    assert "steps" in capsys.readouterr().err
    assert main([*base, "--track", "finetune", "--option", "crops=32"]) == 2
    assert "crop" in capsys.readouterr().err


def test_parse_overrides_reads_yaml_values():
    assert parse_overrides(["a=1", "b=x", "c=[0.5, 0.75]", "d=true"], "--recipe") == {
        "a": 1,
        "b": "x",
        "c": [0.5, 0.75],
        "d": True,
    }
    with pytest.raises(ValueError, match="--recipe sets 'steps' twice"):
        parse_overrides(["steps=50", "steps=60"], "--recipe")  # the last one won silently
    with pytest.raises(ValueError, match="--recipe takes KEY=VALUE, got 'steps'"):
        parse_overrides(["steps"], "--recipe")


@pytest.mark.parametrize("rank", [0, 1])
def test_frozen_track_under_torchrun_stops_on_every_rank_before_any_work(
    tmp_path, monkeypatch, capsys, rank
):
    """torchrun --nproc_per_node=2 ... train (frozen): every rank trained the same head and
    wrote the same checkpoints into one folder. Now each rank stops at once, naming what to
    run instead, and neither reads features nor touches --out (not even with --overwrite)."""

    class NoProvider(FakeProvider):
        def __call__(self, dataset: str) -> DatasetFeatures:
            raise AssertionError("features read under torchrun")

    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", NoProvider)
    for key, value in {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank)}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "m"
    out.mkdir()
    (out / "best.pt").write_bytes(b"kept")
    base = ["train", "protonet", "--dataset", "toy", "--out", str(out), *ARGS]
    assert main([*base, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "the frozen track (a head trained on stored features) runs in one process" in err
    assert f"torchrun started 2 (this is rank {rank})" in err
    assert "--track finetune" in err and "run --launcher local --jobs N" in err
    assert (out / "best.pt").read_bytes() == b"kept" and sorted(out.iterdir()) == [out / "best.pt"]


def test_one_torchrun_process_trains_the_frozen_track(tmp_path, monkeypatch, capsys):
    """torchrun --nproc_per_node=1 is one process: the frozen track trains as without it."""
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.setenv(key, "1" if key == "WORLD_SIZE" else "0")
    out = tmp_path / "m"
    assert main(["train", "protonet", "--dataset", "toy", "--out", str(out), *ARGS]) == 0
    assert (out / "best.pt").exists() and "best val accuracy" in capsys.readouterr().out


@pytest.mark.slow
def test_torchrun_frozen_train_command_line_fails_on_both_ranks(tmp_path):
    """The command line of the defect (10-20 s: two interpreters start and stop)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "fsarbench", "train", "protonet", "--dataset", "synth", "--device", "cpu"]
    cmd += ["--root", str(tmp_path / "synth"), "--out", str(tmp_path / "out"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert f"runs in one process, but torchrun started 2 (this is rank {rank})" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "synth").exists()


@pytest.mark.parametrize("command", ["run", "train"])
def test_bad_videos_error_is_refused_on_the_frozen_track(command, tmp_path, capsys):
    """'--bad-videos error' on the frozen track was accepted and ignored: a damaged video
    was left out and the run printed its number, where the user had asked for a stop."""
    argv = [command, *(["--method", "protonet"] if command == "run" else ["protonet"])]
    argv += ["--dataset", "synth", "--out", str(tmp_path / "o"), "--bad-videos", "error"]
    assert main(argv) == 2
    assert "--bad-videos error applies to --track finetune" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_train_keeps_one_default_folder_per_dataset_and_shows_the_loss(
    tmp_path, monkeypatch, capsys
):
    """The default --out was results/train/METHOD: training it on a second dataset was
    refused, and the remedy offered (--overwrite) deleted the first dataset's model."""
    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", FakeProvider)
    monkeypatch.chdir(tmp_path)
    args = ["--recipe", "steps=10", *ARGS[2:]]
    for dataset in ("toy", "toy2"):
        assert main(["train", "protonet", "--dataset", dataset, *args]) == 0
    made = sorted(p.parent.name for p in tmp_path.glob("results/train/protonet/*/best.pt"))
    assert made == ["toy-frozen", "toy2-frozen"]
    out = capsys.readouterr().out
    assert "training loss (main stage): " in out and " over its first 2 steps -> " in out


def test_a_changed_test_split_leaves_trains_finished_model_in_place(tmp_path, monkeypatch, capsys):
    """The frozen model's fingerprint named the test split's feature cache: a touched test
    video refused train's own finished model, and the --overwrite it suggested retrained it."""

    keys = {"train": "a", "val": "b", "test": "t1"}

    class Keyed(FakeProvider):
        def __call__(self, dataset: str) -> DatasetFeatures:
            feats = super().__call__(dataset)
            feats.info = {"cache_keys": dict(keys)}
            return feats

    monkeypatch.setattr(features_mod, "FrozenFeatureProvider", Keyed)
    out = tmp_path / "m"
    argv = ["train", "protonet", "--dataset", "toy", "--out", str(out), *ARGS]
    assert main(argv) == 0
    trained = load_checkpoint(out / "best.pt")["fingerprint"]
    assert trained["data"] == {"cache_keys": {"train": "a", "val": "b"}}
    keys["test"] = "t2"
    capsys.readouterr()
    assert main(argv) == 0
    assert load_checkpoint(out / "best.pt")["fingerprint"] == trained
    keys["val"] = "b2"  # other val features: another model, refused by name
    assert main(argv) == 2
    assert "data.cache_keys.val: 'b' -> 'b2'" in capsys.readouterr().err
    # a folder trained before the test key was left out keeps resuming while it matches
    keys.update(val="b", test="t2")
    legacy = {**trained, "data": {"cache_keys": dict(keys)}}
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(out / name)
        torch.save({**ckpt, "fingerprint": legacy}, out / name)
    assert main(argv) == 0
    assert load_checkpoint(out / "last.pt")["fingerprint"] == legacy
