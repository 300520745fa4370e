"""Bi-MHM head: fast batched version vs. the literal oracle, symmetric Chamfer, properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

import fsarbench as fb
from fsarbench.testing.contract import run_contract
from oracles.otam_bimhm import bimhm_logits_literal, logits_and_grads, random_episodes

RTOL = 1e-9


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> None:
    scale = b.abs().max().clamp_min(1e-12)
    assert a.shape == b.shape
    assert ((a - b).abs().max() / scale).item() <= rtol, (a - b).abs().max().item()


def _logits_of(method: fb.FewShotMethod):
    return lambda batch: method(batch).logits


def _bimhm(**hp) -> fb.FewShotMethod:
    return fb.create_method("bimhm", feature_dim=16, seq_len=8, **hp).double()


@pytest.mark.parametrize(
    "episode",
    [
        dict(way=3, shot=2, queries=1, frames=8, dim=16, seed=1),
        dict(way=2, shot=3, queries=2, frames=5, dim=16, seed=2),
        dict(way=4, shot=1, queries=1, frames=3, dim=16, seed=3),
    ],
)
@pytest.mark.parametrize("prototype", [False, True])
def test_matches_literal_oracle_logits_and_grads(episode, prototype) -> None:
    batch = random_episodes(**episode)
    method = _bimhm(prototype=prototype)
    fast = logits_and_grads(batch, lambda b: method(b).logits)
    slow = logits_and_grads(batch, lambda b: bimhm_logits_literal(b, prototype=prototype))
    for a, b in zip(fast, slow):
        _close(a, b)


def _chamfer_class_distance(batch: fb.EpisodeBatch) -> np.ndarray:
    """Symmetric Chamfer (means of nearest-frame cosine distances), scipy, ``[B, Nq, way]``."""
    out = np.zeros((batch.batch_size, batch.query.shape[1], batch.way))
    for b in range(batch.batch_size):
        for i, q in enumerate(batch.query[b].numpy()):
            per_support = []
            for s in batch.support[b].numpy():
                d = cdist(q, s, metric="cosine")
                per_support.append(d.min(0).mean() + d.min(1).mean())
            labels = batch.support_labels[b].numpy()
            for c in range(batch.way):
                out[b, i, c] = np.mean(np.array(per_support)[labels == c])
    return out


def test_is_positive_affine_map_of_symmetric_chamfer() -> None:
    batch = random_episodes(batch=3, way=5, shot=3, queries=2, frames=8, dim=24, seed=7)
    with torch.no_grad():
        logits = _bimhm()(batch).logits.numpy()
    chamfer = _chamfer_class_distance(batch)
    np.testing.assert_allclose(logits, -8 * chamfer, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(np.argsort(logits, -1), np.argsort(-chamfer, -1))


def test_one_shot_prototype_equals_per_video() -> None:
    batch = random_episodes(way=4, shot=1, queries=2, seed=8)
    with torch.no_grad():
        _close(_bimhm(prototype=True)(batch).logits, _bimhm()(batch).logits, rtol=1e-12)


def test_prototype_option_changes_five_shot_results() -> None:
    batch = random_episodes(way=3, shot=5, queries=1, seed=9)
    with torch.no_grad():
        diff = (_bimhm(prototype=True)(batch).logits - _bimhm()(batch).logits).abs().max()
    assert diff > 1e-3


def test_sums_not_means_known_answer() -> None:
    # query frames e0, e1; support frames e0, e0: d = [[0, 0], [1, 1]]
    eye = torch.eye(4, dtype=torch.float64)
    query = torch.stack([eye[0], eye[1]])[None, None]
    support = torch.stack([eye[0], eye[0]])[None, None]
    batch = fb.EpisodeBatch(support, torch.zeros(1, 1, dtype=torch.long), query, way=1)
    with torch.no_grad():
        logits = _bimhm()(batch).logits
    assert logits.item() == pytest.approx(-1.0)  # (0 + 0) + (0 + 1)


def test_zero_features_give_no_nan() -> None:
    run_contract("bimhm")
    batch = random_episodes(seed=10)
    zeros = fb.EpisodeBatch(
        torch.zeros_like(batch.support),
        batch.support_labels,
        torch.zeros_like(batch.query),
        way=batch.way,
    )
    for prototype in (False, True):
        with torch.no_grad():
            logits = _bimhm(prototype=prototype)(zeros).logits
        assert torch.isfinite(logits).all()
        _, s_grad, q_grad = logits_and_grads(zeros, _logits_of(_bimhm(prototype=prototype)))
        assert torch.isfinite(s_grad).all() and torch.isfinite(q_grad).all()


@settings(max_examples=20, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    way=st.integers(2, 5),
    frames=st.integers(1, 8),
    target=st.integers(0, 4),
)
def test_identical_video_gets_max_logit(seed, way, frames, target) -> None:
    target = target % way
    batch = random_episodes(batch=1, way=way, shot=1, queries=1, frames=frames, dim=32, seed=seed)
    member = int((batch.support_labels[0] == target).nonzero()[0])
    query = batch.support[:, member : member + 1].clone()
    with torch.no_grad():
        logits = _bimhm()(
            fb.EpisodeBatch(batch.support, batch.support_labels, query, way=way)
        ).logits
    assert int(logits[0, 0].argmax()) == target
    assert logits[0, 0, target].item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("prototype", [False, True])
def test_frames_below_normalize_eps_follow_its_clamp(prototype) -> None:
    # F.normalize divides by max(|x|, 1e-12): frames shorter than that are not made unit.
    batch = random_episodes(way=3, shot=2, queries=1, frames=6, dim=16, seed=9)
    support, query = batch.support.clone(), batch.query.clone()
    support[:, :, ::2] *= 1e-14
    query[:, :, 1::3] *= 1e-14
    tiny = fb.EpisodeBatch(support, batch.support_labels, query, way=batch.way)
    method = _bimhm(prototype=prototype)
    with torch.no_grad():
        fast = method(tiny).logits
    _close(fast, bimhm_logits_literal(tiny, prototype=prototype))


def test_half_precision_large_frames_stay_finite() -> None:
    # Raw dot products of frames with norms in the hundreds overflow float16 (65504).
    batch = random_episodes(way=3, shot=2, queries=1, frames=6, dim=16, seed=4)
    big = fb.EpisodeBatch(300 * batch.support, batch.support_labels, 300 * batch.query, way=3)
    method = fb.create_method("bimhm", feature_dim=16, seq_len=6)
    with torch.no_grad():
        half_states = [method.encode(x.half()) for x in (big.support, big.query)]
        half = method.pair_logits(half_states[1], half_states[0]).float()
        ref = method.pair_logits(
            method.encode(big.query.float()), method.encode(big.support.float())
        )
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half, ref, rtol=0, atol=0.05)
