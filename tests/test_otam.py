"""OTAM head: fast vectorised DP vs. the literal HEADS.md oracle and the reference formula."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fsarbench as fb
from fsarbench.testing.contract import run_contract
from fsarbench_baselines.otam import bidirectional_otam, otam_distance
from oracles.otam_bimhm import (
    logits_and_grads,
    otam_literal,
    otam_logits_literal,
    otam_reference_formula,
    random_episodes,
)

RTOL = 1e-9


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> None:
    scale = b.abs().max().clamp_min(1e-12)
    assert a.shape == b.shape
    assert ((a - b).abs().max() / scale).item() <= rtol, (a - b).abs().max().item()


def _otam(**hp) -> fb.FewShotMethod:
    return fb.create_method("otam", feature_dim=16, seq_len=8, **hp).double()


@pytest.mark.parametrize(
    "shape", [(3, 8, 8), (2, 5, 7), (2, 7, 4), (2, 1, 5), (2, 4, 1), (1, 2, 2)]
)
@pytest.mark.parametrize("lam", [0.1, 0.5])
def test_otam_distance_matches_literal_values_and_grads(shape, lam) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    d = (2 * torch.rand(shape, generator=g, dtype=torch.float64)).requires_grad_()
    fast = otam_distance(d, lam)
    (fast_grad,) = torch.autograd.grad(fast.sum(), d)
    slow = torch.stack([otam_literal(x, lam) for x in d])
    (slow_grad,) = torch.autograd.grad(slow.sum(), d)
    _close(fast.detach(), slow.detach())
    _close(fast_grad, slow_grad)


@pytest.mark.parametrize("shape", [(4, 6, 6), (3, 5, 3)])
def test_bidirectional_is_sum_of_both_directions(shape) -> None:
    d = torch.rand(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expect = torch.stack([otam_literal(x, 0.1) + otam_literal(x.T, 0.1) for x in d])
    _close(bidirectional_otam(d, 0.1), expect)


def test_known_answer_single_row() -> None:
    d = torch.tensor([[[0.5, 0.25, 1.0]]], dtype=torch.float64)  # L = 1: a plain running sum
    assert otam_distance(d, 0.1).item() == pytest.approx(1.75, rel=1e-15)


def test_agrees_with_reference_float32_formula_where_finite() -> None:
    g = torch.Generator().manual_seed(0)
    d = 0.6 * torch.rand(512, 8, 8, generator=g)  # small distances: reference stays finite
    ref = otam_reference_formula(d, 0.1)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(otam_distance(d, 0.1), ref, rtol=2e-5, atol=1e-5)
    ref64 = otam_reference_formula(d.double(), 0.1)
    _close(otam_distance(d.double(), 0.1), ref64, rtol=1e-12)


def test_stable_where_reference_float32_overflows() -> None:
    d = torch.full((2, 8, 8), 1.5)  # every path costs >= 12 > 103 * lam: exp underflows
    ref = otam_reference_formula(d, 0.1)
    assert torch.isinf(ref).all()
    fast = otam_distance(d, 0.1)
    assert torch.isfinite(fast).all()
    _close(fast.double(), otam_literal(d[0].double(), 0.1).expand(2), rtol=1e-6)


@pytest.mark.parametrize(
    "episode, hp",
    [
        (dict(way=3, shot=2, queries=1, frames=8, dim=16, seed=1), {}),
        (dict(way=2, shot=2, queries=1, frames=3, dim=16, seed=5), {"lam": 0.01}),
        (dict(way=2, shot=3, queries=2, frames=5, dim=16, seed=2), {"lam": 0.5}),
        (dict(way=3, shot=1, queries=1, frames=4, dim=16, seed=3), {"bidirectional": False}),
        (dict(way=2, shot=2, queries=1, frames=6, dim=16, seed=4), {"eps": 0.3, "lam": 0.05}),
    ],
)
def test_method_matches_literal_oracle_logits_and_grads(episode, hp) -> None:
    batch = random_episodes(**episode)
    method = _otam(**hp)
    fast = logits_and_grads(batch, lambda b: method(b).logits)
    slow = logits_and_grads(batch, lambda b: otam_logits_literal(b, **hp))
    for a, b in zip(fast, slow):
        _close(a, b)


def test_contract() -> None:
    run_contract("otam")


def test_lam_changes_results() -> None:
    batch = random_episodes(seed=5)
    with torch.no_grad():
        a = _otam(lam=0.1)(batch).logits
        b = _otam(lam=0.5)(batch).logits
    assert (a - b).abs().max() > 1e-3


def test_zero_features_give_finite_equal_logits() -> None:
    batch = random_episodes(seed=6)
    zeros = fb.EpisodeBatch(
        torch.zeros_like(batch.support),
        batch.support_labels,
        torch.zeros_like(batch.query),
        way=batch.way,
    )
    with torch.no_grad():
        logits = _otam()(zeros).logits
    assert torch.isfinite(logits).all()
    assert torch.allclose(logits, logits[..., :1].expand_as(logits))  # d = 1 everywhere
    _, s_grad, q_grad = logits_and_grads(zeros, lambda b: _otam()(b).logits)
    assert torch.isfinite(s_grad).all() and torch.isfinite(q_grad).all()


def test_bad_lam_is_rejected() -> None:
    with pytest.raises(ValueError, match="lam must be positive"):
        _otam(lam=0.0)
    with pytest.raises(ValueError, match="positive soft-min temperature"):
        otam_distance(torch.rand(1, 3, 3), -1.0)
    with pytest.raises(fb.ConfigError):
        _otam(lamda=0.1)


@settings(max_examples=15, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    way=st.integers(2, 5),
    frames=st.integers(2, 8),
    target=st.integers(0, 4),
)
def test_identical_video_has_minimum_distance_and_max_logit(seed, way, frames, target) -> None:
    target = target % way
    batch = random_episodes(batch=1, way=way, shot=1, queries=1, frames=frames, dim=32, seed=seed)
    member = int((batch.support_labels[0] == target).nonzero()[0])
    query = batch.support[:, member : member + 1].clone()
    method = _otam()
    with torch.no_grad():
        dist = method.video_distances(
            method.encode_episodes(batch.support), method.encode_episodes(query)
        )
        logits = method(fb.EpisodeBatch(batch.support, batch.support_labels, query, way=way)).logits
    assert int(dist[0, 0].argmin()) == member
    assert int(logits[0, 0].argmax()) == target


def test_negative_and_large_distances_match_literal() -> None:
    g = torch.Generator().manual_seed(11)
    d = (6 * torch.rand(4, 6, 5, generator=g, dtype=torch.float64) - 1).requires_grad_()
    fast = otam_distance(d, 0.2)
    slow = torch.stack([otam_literal(x, 0.2) for x in d])
    _close(fast.detach(), slow.detach())
    _close(*(torch.autograd.grad(v.sum(), d)[0] for v in (fast, slow)))


def test_negative_eps_is_rejected() -> None:
    with pytest.raises(ValueError, match="eps must be >= 0"):
        _otam(eps=-0.1)


def _log_domain(d: torch.Tensor, lam: float) -> torch.Tensor:
    """The stable log-sum-exp recursion alone, over ``d [P, L, M]``."""
    from fsarbench_baselines._similarity import pairs_last
    from fsarbench_baselines.otam import _log_dp

    return -lam * _log_dp(pairs_last(d) * (-1.0 / lam))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairs_outside_exp_range_take_the_log_path_and_agree(dtype) -> None:
    # Pairs whose distances span more than the dtype's exp range (tiny λ, wide grids) cannot
    # use the sums-and-products path; a batch mixing them with ordinary pairs must give each
    # pair the log-domain value, with gradients.
    from fsarbench_baselines.otam import _exact_in_exp_units

    lam = 0.004 if dtype == torch.float32 else 0.0005
    g = torch.Generator().manual_seed(7)
    d = 0.02 * torch.rand(6, 5, 5, generator=g, dtype=dtype)
    d[::2] = 2 * torch.rand(3, 5, 5, generator=g, dtype=dtype)  # wide: outside the range
    shift = d.amin((1, 2))
    ok = _exact_in_exp_units(d, shift, lam, False)
    assert ok.tolist() == [False, True] * 3
    d.requires_grad_()
    fast = bidirectional_otam(d, lam)
    slow = _log_domain(d, lam) + _log_domain(d.transpose(1, 2), lam)
    _close(fast.detach(), slow.detach(), rtol=1e-5 if dtype == torch.float32 else 1e-12)
    grads = [torch.autograd.grad(v.sum(), d)[0] for v in (fast, slow)]
    assert torch.isfinite(grads[0]).all()
    _close(*grads, rtol=1e-4 if dtype == torch.float32 else 1e-10)


def test_exp_path_agrees_with_log_path_in_float32() -> None:
    g = torch.Generator().manual_seed(8)
    d = 0.4 + 0.5 * torch.rand(256, 8, 8, generator=g)  # cosine-distance-like, λ = 0.1
    fast = otam_distance(d, 0.1)
    torch.testing.assert_close(fast, _log_domain(d, 0.1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast.double(), _log_domain(d.double(), 0.1), rtol=1e-6, atol=1e-6)


def test_half_precision_distances_are_aligned_and_returned_in_float32() -> None:
    """Half-precision costs would tie (bf16 keeps 8 bits): the alignment of half distances
    is computed and returned in float32, equal to aligning their float32 values."""
    d = 0.5 * torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(9))
    for dtype in (torch.float16, torch.bfloat16):
        half = otam_distance(d.to(dtype), 0.1)
        assert half.dtype == torch.float32
        torch.testing.assert_close(half, otam_distance(d.to(dtype).float(), 0.1))


@pytest.mark.parametrize(
    "make, lam",
    [
        (lambda: torch.zeros(1, 119, 119), 0.1),  # long, tiny distances: the final sum is large
        (lambda: 1e-4 * torch.rand(1, 118, 118, generator=torch.Generator().manual_seed(0)), 0.1),
        (lambda: torch.full((1, 8, 8), 1e8).index_fill_(2, torch.tensor([0]), 1e8 + 8), 0.01),
    ],
)
def test_range_check_keeps_extreme_grids_finite_and_exact(make, lam) -> None:
    d = make()
    expect = _log_domain(d.double(), lam) + _log_domain(d.double().transpose(1, 2), lam)
    got = bidirectional_otam(d, lam)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expect, rtol=1e-5, atol=1e-4)
