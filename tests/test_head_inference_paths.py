"""The heads' inference-only fast paths (no autograd: in-place, buffer-reusing) give
bit-identical logits to their differentiable paths, in float32 and float64."""

from __future__ import annotations

import pytest
import torch

import fsarbench as fb
from fsarbench_baselines._similarity import frame_dots
from fsarbench_baselines.otam import (
    _bidirectional_cosine_otam,
    bidirectional_otam,
    otam_cosine_distance,
)


def _fast_otam(q: dict, s: dict, eps: float, lam: float) -> torch.Tensor:
    dots = frame_dots(q["features"], s["features"])
    return _bidirectional_cosine_otam(dots, q["norms"], s["norms"], eps, lam)


SHAPES = [(3, 5, 5, 8, 64), (4, 5, 25, 8, 96), (2, 3, 4, 5, 33), (1, 1, 1, 8, 16)]


def _states(head: str, shape, dtype, scale: float = 1.0, seed: int = 0):
    b, nq, ns, t, d = shape
    g = torch.Generator().manual_seed(seed)
    method = fb.create_method(head, feature_dim=d, seq_len=t).to(dtype).eval()
    q = method.encode(scale * torch.rand(b * nq, t, d, generator=g, dtype=dtype))
    s = method.encode(scale * torch.rand(b * ns, t, d, generator=g, dtype=dtype))
    q = {k: v.reshape(b, nq, *v.shape[1:]) for k, v in q.items()}
    s = {k: v.reshape(b, ns, *v.shape[1:]) for k, v in s.items()}
    return method, q, s


def _with_grad(state: dict) -> dict:
    return {k: v.clone().requires_grad_() for k, v in state.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_otam_inference_path_is_bit_identical(shape, dtype) -> None:
    method, q, s = _states("otam", shape, dtype)
    slow = method.video_distances(_with_grad(s), _with_grad(q)).detach()
    with torch.inference_mode():
        fast = method.video_distances(s, q)
    assert torch.equal(fast, slow)
    expect = bidirectional_otam(otam_cosine_distance(q, s, 0.01), 0.1)
    assert torch.equal(_fast_otam(q, s, 0.01, 0.1), expect)


def test_otam_inference_path_falls_back_outside_the_exponential_range() -> None:
    """Signed features give distances up to 2: at λ = 0.01 many pairs leave the exponential
    units' exact range, and the batch takes the log-domain recursion, identically."""
    method, q, s = _states("otam", (3, 5, 5, 8, 32), torch.float32)
    q["features"] = q["features"] - 0.5
    s["features"] = s["features"] - 0.5
    q["norms"] = torch.linalg.vector_norm(q["features"], dim=-1)
    s["norms"] = torch.linalg.vector_norm(s["features"], dim=-1)
    expect = bidirectional_otam(otam_cosine_distance(q, s, 0.01), 0.01)
    got = _fast_otam(q, s, 0.01, 0.01)
    assert torch.isfinite(got).all()
    assert torch.equal(got, expect)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_bimhm_inference_path_is_bit_identical(shape, dtype) -> None:
    method, q, s = _states("bimhm", shape, dtype)
    slow = method.pair_logits(_with_grad(q), _with_grad(s)).detach()
    with torch.inference_mode():
        fast = method.pair_logits(q, s)
    assert torch.equal(fast, slow)
