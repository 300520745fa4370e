"""SGTM mask strategies: known answers, ties, k extremes, ratio sweep, a slow reference."""

from __future__ import annotations

import math

import pytest
import torch

from fsarbench_sgtm.masks import (
    MASK_STRATEGIES,
    get_mask_strategy,
    num_masked_frames,
    saliency_order,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SCORES = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4]])
# ranks (most salient first): frames 1, 6, 4, 2, 7, 3, 5, 0


def masked(name: str, scores: torch.Tensor, n: int) -> list[set[int]]:
    out = MASK_STRATEGIES[name].fn(scores, n)
    assert out.dtype == torch.bool and out.shape == scores.shape
    return [set(torch.nonzero(row).flatten().tolist()) for row in out]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("saliency", {1, 6, 5, 0}),  # two highest and two lowest
        ("top", {1, 6, 4, 2}),
        ("bottom", {7, 3, 5, 0}),
        ("middle", {4, 2, 7, 3}),
    ],
)
def test_known_answers(name: str, expected: set[int]) -> None:
    assert masked(name, SCORES, 4) == [expected]


def test_all_ties_break_towards_earlier_frames() -> None:
    flat = torch.full((1, 8), 0.5)
    assert saliency_order(flat).tolist() == [list(range(8))]
    assert masked("saliency", flat, 4) == [{0, 1, 6, 7}]
    assert masked("top", flat, 4) == [{0, 1, 2, 3}]
    assert masked("bottom", flat, 4) == [{4, 5, 6, 7}]
    assert masked("middle", flat, 4) == [{2, 3, 4, 5}]


def test_partial_ties() -> None:
    scores = torch.tensor([[0.2, 0.9, 0.2, 0.9, 0.5, 0.2, 0.5, 0.9]])
    # order: 1, 3, 7 (0.9 by index), 4, 6 (0.5), 0, 2, 5 (0.2)
    assert saliency_order(scores).tolist() == [[1, 3, 7, 4, 6, 0, 2, 5]]
    assert masked("saliency", scores, 4) == [{1, 3, 2, 5}]


def reference(name: str, row: list[float], n: int) -> set[int]:
    """Obviously-correct version on a python list: rank by (-score, index)."""
    t = len(row)
    order = sorted(range(t), key=lambda i: (-row[i], i))
    if name == "saliency":
        picked = order[: math.ceil(n / 2)] + order[t - n // 2 :]
    elif name == "top":
        picked = order[:n]
    elif name == "bottom":
        picked = order[t - n :]
    else:
        start = (t - n) // 2
        picked = order[start : start + n]
    return set(picked)


@pytest.mark.parametrize("name", ["saliency", "top", "bottom", "middle"])
def test_matches_slow_reference_with_many_ties(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    for t in (5, 8, 16):
        scores = torch.randint(0, 4, (40, t), generator=g).float() / 4  # heavy ties
        for n in range(t + 1):
            got = masked(name, scores, n)
            want = [reference(name, row, n) for row in scores.tolist()]
            assert got == want, (name, t, n)


@pytest.mark.parametrize("name", sorted(MASK_STRATEGIES))
def test_k_extremes(name: str) -> None:
    scores = torch.rand(6, 8, generator=torch.Generator().manual_seed(1))
    assert masked(name, scores, 0) == [set()] * 6  # k = 0: nothing masked
    assert masked(name, scores, 8) == [set(range(8))] * 6  # k = T/2: everything
    assert num_masked_frames(8, 0, None) == 0
    with pytest.raises(ValueError, match="nothing to see"):
        num_masked_frames(8, 4, None)  # the model refuses k = T/2
    with pytest.raises(ValueError, match="nothing to see"):
        num_masked_frames(8, 5, None)


@pytest.mark.parametrize("name", sorted(MASK_STRATEGIES))
def test_ratio_sweep_masks_the_rounded_count(name: str) -> None:
    scores = torch.rand(5, 8, generator=torch.Generator().manual_seed(2))
    for i in range(8):
        n = num_masked_frames(8, None, i / 8)
        assert n == i
        assert all(len(s) == i for s in masked(name, scores, n))
    assert num_masked_frames(8, None, 1 / 16) == 1  # 0.5 frame rounds half up
    assert num_masked_frames(8, None, 0.3) == 2
    assert num_masked_frames(8, None, None) == 4  # default 50%
    assert num_masked_frames(8, 2, None) == 4  # the paper's k = 2


def test_ratio_and_k_errors() -> None:
    with pytest.raises(ValueError, match="either k"):
        num_masked_frames(8, 2, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        num_masked_frames(8, None, 1.0)
    with pytest.raises(ValueError, match="known: none, bottom, middle, random, saliency, top"):
        get_mask_strategy("salency")
    assert get_mask_strategy("none") is None


def test_random_mask_is_uniform_and_seeded() -> None:
    scores = torch.zeros(4000, 8)
    torch.manual_seed(0)
    a = MASK_STRATEGIES["random"].fn(scores, 4)
    torch.manual_seed(0)
    b = MASK_STRATEGIES["random"].fn(scores, 4)
    assert torch.equal(a, b)
    assert (a.sum(1) == 4).all()
    freq = a.float().mean(0)
    assert torch.allclose(freq, torch.full((8,), 0.5), atol=0.04)
    assert len({tuple(r) for r in a[:50].tolist()}) > 20  # rows differ
    assert not MASK_STRATEGIES["random"].needs_saliency
    assert MASK_STRATEGIES["saliency"].needs_saliency
