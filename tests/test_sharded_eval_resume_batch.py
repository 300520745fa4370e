"""A sharded evaluation resumed with another batch size (review 38b, F6): each rank's
partial held rows that are now another rank's batches; both ranks' values reached the merge
(``np.max``), and the higher label won wherever they differed. A rank now resumes only the
rows of its own batches."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

import fsarbench as fb
from fsarbench.distributed.env import rank
from fsarbench.distributed.launch import spawn_local
from fsarbench.distributed.sharded_eval import evaluate_sharded
from fsarbench.evaluate import evaluate
from fsarbench.registry import create_method

POOL = np.repeat(np.arange(6), 5)  # 6 classes x 5 videos
T, D, WAY, EPISODES = 4, 16, 3, 9


def _features() -> torch.Tensor:
    """``[U, T, D]`` random frames."""
    return torch.randn(len(POOL), T, D, generator=torch.Generator().manual_seed(1))


def _manifest() -> fb.Manifest:
    return fb.make_manifest(POOL, way=WAY, shot=1, queries=2, episodes=EPISODES, seed=3)


def _worker(batch: int, partial: str, out: str) -> None:
    """Rank's share of the evaluation, resuming ``partial``; rank 0 saves the predictions."""
    method = create_method("protonet", feature_dim=D, seq_len=T)
    result = evaluate_sharded(
        method, _features(), _manifest(), batch_episodes=batch, progress=False, partial_path=partial
    )
    if rank() == 0:
        np.save(out, result.records["predicted_label"])


def _rewrite_row(path: Path, row: int, label: int) -> None:
    """Set every query of episode ``row`` in the partial file ``path`` to ``label`` (a
    prediction made differently there, e.g. a float near-tie in another batch)."""
    data = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
    predicted = np.array(data["predicted"])
    predicted[row] = label
    buf = io.BytesIO()
    np.savez(buf, predicted=predicted, tag=data["tag"])
    path.write_bytes(buf.getvalue())


def test_resume_with_another_batch_size_keeps_only_own_rows(tmp_path):
    """Batches of 1: rank 1 owns episode 1. Resumed with batches of 3, episode 1 is rank 0's
    (batch 0-2) and rank 1's stale row must not reach the merge."""
    partial = tmp_path / "partial" / "eval.npz"
    partial.parent.mkdir()
    out = tmp_path / "pred.npy"
    spawn_local(_worker, 2, 1, str(partial), str(out))
    rank1 = partial.with_name("eval.rank1of2.npz")
    assert rank1.exists() and partial.with_name("eval.rank0of2.npz").exists()
    _rewrite_row(rank1, 1, WAY - 1)  # the highest label: np.max picked it

    spawn_local(_worker, 2, 3, str(partial), str(out))
    method = create_method("protonet", feature_dim=D, seq_len=T)
    ref = evaluate(method, _features(), _manifest(), batch_episodes=3, progress=False)
    expect = ref.records["predicted_label"]
    assert (expect.reshape(EPISODES, -1)[1] != WAY - 1).any(), "the rewrite changes nothing"
    assert np.array_equal(np.load(out), expect)
