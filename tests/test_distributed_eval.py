"""Sharded evaluation over 2 gloo processes gives exactly the 1-process records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.distributed.env import rank
from fsarbench.distributed.launch import spawn_local
from fsarbench.distributed.sharded_eval import evaluate_sharded
from fsarbench.evaluate import evaluate
from fsarbench.registry import create_method
from fsarbench.training import AdaptedMethod, FrameAdapter

POOL = np.repeat(np.arange(7), 5)  # 7 classes x 5 videos
T, D = 4, 16


def _features() -> torch.Tensor:
    return torch.randn(len(POOL), T, D, generator=torch.Generator().manual_seed(1))


def _method(name: str):
    torch.manual_seed(2)
    method = AdaptedMethod(create_method(name, feature_dim=D, seq_len=T), FrameAdapter(D), D)
    torch.nn.init.normal_(method.adapter.linear.weight)  # an encode that changes the features
    return method


def _manifest():
    return fb.make_manifest(POOL, way=3, shot=2, queries=2, episodes=37, seed=3, dataset="toy")


def _sharded_worker(name: str, out: str) -> None:
    result = evaluate_sharded(
        _method(name), _features(), _manifest(), batch_episodes=5, encode_chunk=4, progress=False
    )
    if rank() == 0:
        torch.save(
            {k: torch.as_tensor(v) for k, v in result.records.items()}
            | {"accuracy": torch.tensor(result.accuracy, dtype=torch.float64)},
            out,
        )
    else:
        assert result is None


def _random_model(seed: int):
    torch.manual_seed(seed)
    method = create_method("hyrsm", feature_dim=D, seq_len=T, heads=2)
    return AdaptedMethod(method, FrameAdapter(D), D)


def _unseeded_worker(out: str) -> None:
    """Each rank builds its own random model, as ``eval`` without a checkpoint did."""
    method = _random_model(10 + rank())
    torch.save(method.state_dict(), f"{out}.rank{rank()}")
    result = evaluate_sharded(method, _features(), _manifest(), batch_episodes=5, progress=False)
    if rank() == 0:
        torch.save({k: torch.as_tensor(v) for k, v in result.records.items()}, out)


def test_every_rank_evaluates_rank_zeros_weights(tmp_path):
    """Ranks holding different weights (a method built without a checkpoint) merged the
    predictions of two models into one record."""
    out = tmp_path / "sharded.pt"
    spawn_local(_unseeded_worker, 2, str(out))
    refs = []
    for r in range(2):
        method = _random_model(0)
        method.load_state_dict(torch.load(f"{out}.rank{r}", weights_only=True))
        refs.append(evaluate(method, _features(), _manifest(), batch_episodes=5, progress=False))
    assert refs[0].accuracy != refs[1].accuracy  # two models that the test can tell apart
    got = torch.load(out, weights_only=True)
    for key, value in refs[0].records.items():
        assert np.array_equal(got[key].numpy(), value), key


def _mismatched_worker(what: str, out: str) -> None:
    """Rank 1 given another batch size, manifest or features identity than rank 0."""
    from fsarbench.distributed.sharded_eval import RankMismatchError

    other = rank() == 1
    manifest = _manifest()
    if what == "manifest" and other:
        manifest = fb.make_manifest(POOL, way=3, shot=2, queries=2, episodes=37, seed=4)
    try:
        evaluate_sharded(
            _method("protonet"),
            _features(),
            manifest,
            batch_episodes=10 if what == "batch" and other else 5,
            progress=False,
            inputs={"file_md5": "b" if what == "features" and other else "a"},
        )
    except RankMismatchError as err:
        Path(f"{out}.rank{rank()}").write_text(str(err))


@pytest.mark.parametrize(
    "what, named", [("batch", "settings"), ("manifest", "manifest"), ("features", "features")]
)
def test_ranks_given_other_inputs_are_refused(tmp_path, what, named):
    """Ranks started with other --batch-episodes (unpredicted queries counted wrong: 62.70
    became 47.40), another manifest or other features merged into one confident record."""
    out = tmp_path / "refused"
    spawn_local(_mismatched_worker, 2, what, str(out))
    for r in range(2):  # every rank refuses: none waits for the other
        message = Path(f"{out}.rank{r}").read_text()
        assert f"rank 1 of this torchrun job was given another {named} than rank 0" in message


@pytest.mark.parametrize("name", ["otam"])
def test_two_process_evaluation_equals_one_process(tmp_path, name):
    out = tmp_path / "sharded.pt"
    spawn_local(_sharded_worker, 2, name, str(out))
    got = torch.load(out, weights_only=True)
    ref = evaluate(
        _method(name), _features(), _manifest(), batch_episodes=5, encode_chunk=4, progress=False
    )
    for key, value in ref.records.items():
        assert np.array_equal(got[key].numpy(), value), key
    assert float(got["accuracy"]) == ref.accuracy
    single = evaluate_sharded(
        _method(name), _features(), _manifest(), batch_episodes=5, encode_chunk=4, progress=False
    )
    assert all(np.array_equal(single.records[k], v) for k, v in ref.records.items())


def _eval_cli(tmp_path: Path, out: str, torchrun: bool) -> Path:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        if torchrun
        else [sys.executable]
    )
    cmd = [
        *launcher,
        "-m",
        "fsarbench",
        "eval",
        "otam",
        "--features",
        str(tmp_path / "f.pt"),
        "--manifest",
        str(tmp_path / "m.json"),
        "--out",
        str(tmp_path / out),
        "--dataset",
        "toy",
        "--batch-episodes",
        "6",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("± is the 95% CI half-width") == 1  # rank 0 alone reports
    return tmp_path / out / "records"


@pytest.mark.slow
def test_torchrun_eval_cli_writes_the_same_records(tmp_path):
    torch.save(_features(), tmp_path / "f.pt")
    _manifest().save(tmp_path / "m.json")
    one = _eval_cli(tmp_path, "one", torchrun=False)
    two = _eval_cli(tmp_path, "two", torchrun=True)
    (q1,), (q2,) = sorted(one.glob("*.queries.csv.gz")), sorted(two.glob("*.queries.csv.gz"))
    assert q1.name == q2.name and q1.read_bytes() == q2.read_bytes()
    r1, r2 = (json.loads(next(d.glob("*.json")).read_text()) for d in (one, two))
    assert (r1["accuracy"], r1["ci95"]) == (r2["accuracy"], r2["ci95"])
