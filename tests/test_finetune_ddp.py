"""Finetune under 2 gloo processes: both ranks end with identical weights, equal (to float
rounding) to a 1-process run over the same global episode batches. Under ``bn: train`` the
BatchNorm running statistics are rank 0's (it saw half the episodes), so only they may differ
from the one-process run's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from finetune_fixtures import TINY_SYNTH, tiny_recipe

import fsarbench as fb
from fsarbench.data.datasets import get_dataset
from fsarbench.distributed.env import rank
from fsarbench.distributed.launch import spawn_local
from fsarbench.training.finetune import ClipSplit, build_video_method, finetune, finetune_recipe

RECIPE = tiny_recipe(recipe={"val_episodes": 0})
_RUNNING = ("running_mean", "running_var", "num_batches_tracked")


def _recipe(method: str, micro_batch: int):
    options = {**RECIPE["options"], "frames": 4} if method.startswith("sgtm") else RECIPE["options"]
    over = {"recipe": {**RECIPE["recipe"], "micro_batch": micro_batch}, "options": options}
    return finetune_recipe(method, "synth", over)


def _train(root: str, micro_batch: int, method: str = "otam", summary: list | None = None):
    ds = get_dataset("synth", root=root, config=TINY_SYNTH)
    split = ClipSplit(ds.videos("train"), ds.variant)
    recipe = _recipe(method, micro_batch)
    classes = split.num_classes if method.startswith("sgtm") else None
    model = build_video_method(
        method, recipe.options, torch.device("cpu"), seed=0, num_train_classes=classes
    )
    result = finetune(model, split, None, recipe, progress=False)
    if summary is not None:
        summary.append(result.summary())
    return model


def _worker(root: str, out: str, method: str) -> None:
    summary: list = []
    model = _train(root, micro_batch=1, method=method, summary=summary)
    torch.save({"state": model.state_dict(), "summary": summary[0]}, Path(out) / f"rank{rank()}.pt")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    get_dataset("synth", root=root, config=TINY_SYNTH).videos("train")  # generate once
    return str(root)


# SGTM: stage 1 trains Φ_cls alone, stage 2 everything else (Φ_cls frozen) — DDP per stage
@pytest.mark.parametrize("method", ["otam", "sgtm-otam"])
def test_ddp_weights_equal_on_ranks_and_to_one_process(synth_root, tmp_path, method):
    spawn_local(_worker, 2, synth_root, str(tmp_path), method)
    saved = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    r0, r1 = (s["state"] for s in saved)
    # the number depends on the process count under bn: train: records say it
    assert saved[0]["summary"]["processes"] == [2]
    # 2 ranks x 1 episode each == 1 process walking both episodes in micro-batches of 1
    summary: list = []
    single = _train(synth_root, micro_batch=1, method=method, summary=summary).state_dict()
    assert "processes" not in summary[0]
    start = _train_start(synth_root, method)
    moved = False
    for k, v in r0.items():
        assert torch.equal(v, r1[k]), f"{k} differs between ranks by {(v - r1[k]).abs().max()}"
        if not k.endswith(_RUNNING):
            torch.testing.assert_close(v, single[k], rtol=1e-4, atol=1e-5)
        moved |= not torch.equal(v, start[k])
    assert moved
    assert any(k.endswith(_RUNNING) for k in r0)  # bn: train, the default, was exercised


def _train_start(root: str, method: str) -> dict:
    ds = get_dataset("synth", root=root, config=TINY_SYNTH)
    classes = ClipSplit(ds.videos("train"), ds.variant).num_classes
    options = _recipe(method, 1).options
    kw = {"num_train_classes": classes} if method.startswith("sgtm") else {}
    return build_video_method(method, options, torch.device("cpu"), seed=0, **kw).state_dict()


@pytest.mark.slow
def test_torchrun_train_cli_finetune(tmp_path):
    """The 'done when' command line, on the default synth at low resolution."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "fsarbench",
        "train",
        "protonet",
        "--dataset",
        "synth",
        "--track",
        "finetune",
        "--root",
        str(tmp_path / "synth"),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
        "--recipe",
        "steps=4",
        "val_every=2",
        "val_episodes=20",
        "--option",
        "weights=none",
        "frames=4",
        "workers=0",
        "--test-episodes",
        "20",
        "--shots",
        "1",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and "best val accuracy" in proc.stdout
    assert "test 5-way 1-shot" in proc.stdout
    assert (tmp_path / "out" / "best.pt").exists() and (tmp_path / "out" / "summary.csv").exists()
    (record,) = fb.load_records(tmp_path / "out")  # its code recorded, so staleness is seen
    assert "pipeline" in record.provenance["code"] and record.provenance["code_digest"]
    assert record.training["steps"] == {"main": 4}  # it was left empty
    assert record.training["processes"] == [2]
    assert "intra-op thread(s) per process" in proc.stdout  # torchrun's 1 thread, said


@pytest.mark.slow
def test_sigterm_to_torchrun_train_ends_as_interrupted_and_resumes_to_the_same_weights(tmp_path):
    """torchrun stops its ranks with killpg, so their DataLoader workers got the SIGTERM too:
    they died of it and the ranks failed with "DataLoader worker ... killed by signal"
    instead of the interrupted path, a checkpoint's temporary file could stay behind. Now
    both ranks end as interrupted, nothing stray is left, and the resumed run ends with the
    weights of an uninterrupted one."""
    import signal
    import time

    from fsarbench.training import load_checkpoint

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "fsarbench", "train", "protonet", "--dataset", "synth", "--track", "finetune"]
    cmd += ["--root", str(tmp_path / "synth"), "--no-progress", "--device", "cpu"]
    cmd += ["--recipe", "steps=6", "val_every=1", "val_episodes=10"]
    cmd += ["--option", "weights=none", "frames=4"]  # default decode workers: 2 per rank
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 900
    while not (out / "last.pt").exists():  # the first step's resume point
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert err.count("interrupted; finished work is saved") == 2, err[-3000:]
    assert "DataLoader worker" not in err and "error:" not in err, err[-3000:]
    assert not [p.name for p in out.iterdir() if p.suffix == ".tmp"]
    assert len(load_checkpoint(out / "last.pt")["history"]) < 6  # it stopped early

    for folder in (out, tmp_path / "whole"):  # resumed; uninterrupted
        done = subprocess.run([*cmd, "--out", str(folder)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    for name in ("last.pt", "best.pt"):
        resumed, whole = (load_checkpoint(f / name) for f in (out, tmp_path / "whole"))
        assert resumed.get("history") == whole.get("history")
        for key, value in whole["method"].items():
            assert torch.equal(resumed["method"][key], value), (name, key)
