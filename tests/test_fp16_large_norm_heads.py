"""Heads under fp16 autocast (GPUs without bf16, the fp16 + GradScaler path) with frames of
norm ~300: raw frame products ``|x||y|`` then pass fp16's 65504. OTAM (and every head that
aligns with it: CLIP-FSAR, SGTM-OTAM without its transformer) gave inf distances, NaN
logits and NaN training losses (review 38b, F2); its products now come from unit frames
there. Outside autocast OTAM's float32 arithmetic is unchanged, bit for bit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import fsarbench as fb
from fsarbench.pairs import class_mean
from fsarbench.testing.contract import make_contract_method, random_batch
from fsarbench_baselines._similarity import frame_dots
from fsarbench_baselines.otam import OTAM, bidirectional_otam

METHODS = fb.list_methods()
NORM = 300.0  # |x||y| = 90000 > 65504


def _large_norm_batch(
    method, *, dim: int, shot: int = 2, batch: int = 4, seed: int = 0
) -> fb.EpisodeBatch:
    """A ``random_batch`` whose videos are their class's random pattern plus noise, every
    frame rescaled to norm ``NORM``: support/query ``[B, N, 8, dim]`` float32."""
    episodes = random_batch(
        batch=batch, shot=shot, queries=2, dtype=torch.float32, names=method.uses_class_names
    )
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(batch, 5, 8, dim, generator=g)

    def videos(labels: torch.Tensor) -> torch.Tensor:
        index = labels[..., None, None].expand(-1, -1, 8, dim)
        x = patterns.gather(1, index) + 0.5 * torch.rand(*labels.shape, 8, dim, generator=g)
        return NORM * x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)

    support, query = videos(episodes.support_labels), videos(episodes.query_labels)
    return dataclasses.replace(episodes, support=support, query=query)


def _logits(method, batch: fb.EpisodeBatch, fp16: bool) -> torch.Tensor:
    """Inference logits ``[B, Nq, way]``, under CPU fp16 autocast when ``fp16``."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
        return method(batch).logits


def _stage_losses(method, batch: fb.EpisodeBatch, fp16: bool) -> list[torch.Tensor]:
    """Each training stage's summed loss under fp16 autocast, back-propagated into frames
    that require grad (a finetuned backbone's). Returns the losses; grads stay on ``batch``."""
    losses = []
    for stage in method.training_stages():
        method.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
            total = sum(v.float() for v in stage.loss(batch).values())
        if total.requires_grad:
            total.backward()
        losses.append(total.detach())
    return losses


def _with_grad_frames(batch: fb.EpisodeBatch) -> fb.EpisodeBatch:
    return dataclasses.replace(
        batch,
        support=batch.support.detach().clone().requires_grad_(),
        query=batch.query.detach().clone().requires_grad_(),
    )


def test_otam_fp16_autocast_large_frames_give_fp32_predictions():
    """D=2048, frames of norm ~300: finite float32 logits under fp16 autocast, with the
    float32 head's predictions, close to its logits."""
    method = fb.create_method("otam", feature_dim=2048, seq_len=8).eval()
    batch = _large_norm_batch(method, dim=2048)
    exact = _logits(method, batch, fp16=False)
    assert torch.isfinite(exact).all()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        raw = frame_dots(batch.query, batch.support)
    assert not torch.isfinite(raw).all(), "the frames no longer overflow fp16: test is moot"
    half = _logits(method, batch, fp16=True)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert torch.equal(half.argmax(-1), exact.argmax(-1))
    torch.testing.assert_close(half, exact, atol=0.05, rtol=0.0)


def test_otam_fp16_autocast_pool_matching_is_finite():
    """``match_indexed`` (the evaluator's pool path) under fp16 autocast."""
    method = fb.create_method("otam", feature_dim=2048, seq_len=8).eval()
    batch = _large_norm_batch(method, dim=2048, batch=2)
    b, ns = batch.support_labels.shape
    nq = batch.query_labels.shape[1]
    pool = torch.cat([batch.support.flatten(0, 1), batch.query.flatten(0, 1)])  # [U, T, D]
    support_index = torch.arange(b * ns).view(b, ns)
    query_index = b * ns + torch.arange(b * nq).view(b, nq)

    def logits(fp16: bool) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
            state = method.encode(pool)
            args = (state, support_index, batch.support_labels, query_index, 5)
            return method.match_indexed(*args).logits

    exact, half = logits(False), logits(True)
    assert torch.isfinite(half).all()
    assert torch.equal(half.argmax(-1), exact.argmax(-1))


def test_otam_fp16_autocast_training_loss_and_grads_are_finite():
    """The training stage (autograd path) under fp16 autocast: a finite loss close to
    float32's and finite gradients into the frames (the loss was NaN)."""
    method = fb.create_method("otam", feature_dim=2048, seq_len=8).train()
    batch = _large_norm_batch(method, dim=2048)
    exact = _stage_losses(method, _with_grad_frames(batch), fp16=False)
    batch = _with_grad_frames(batch)
    half = _stage_losses(method, batch, fp16=True)
    assert all(torch.isfinite(h) for h in half), half
    assert torch.isfinite(batch.query.grad).all() and torch.isfinite(batch.support.grad).all()
    torch.testing.assert_close(torch.stack(half), torch.stack(exact), atol=0.02, rtol=0.0)


def _literal_otam_logits(method: OTAM, batch: fb.EpisodeBatch) -> torch.Tensor:
    """OTAM's logits from the raw frame products, as computed before the fp16 fix."""
    query, support = method.encode(batch.query), method.encode(batch.support)
    dots = frame_dots(query["features"], support["features"])
    eps = method.config.eps
    denom = query["norms"][:, :, :, None, None] * support["norms"][:, None, None] + eps
    d = (1.0 - dots / denom).permute(0, 1, 3, 2, 4)
    return class_mean(-bidirectional_otam(d, method.config.lam), batch.support_labels, 5)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_otam_outside_autocast_is_unchanged_bit_for_bit(dtype, grad):
    """The fix touches the half-precision path only: float32/float64 logits are the raw
    products' (inference path and autograd path alike)."""
    method = make_contract_method("otam", dtype=dtype).eval()
    batch = random_batch(batch=3, shot=2, queries=2, dtype=dtype)
    expect = _literal_otam_logits(method, batch)
    if grad:
        batch = _with_grad_frames(batch)
        got = method(batch).logits.detach()
    else:
        with torch.no_grad():
            got = method(batch).logits
    assert torch.equal(got, expect)


@pytest.mark.parametrize("name", METHODS)
def test_every_head_under_fp16_autocast_keeps_large_frames_finite(name):
    """Every registered head, inference and each training stage, on frames of norm ~300
    under fp16 autocast: finite logits agreeing with float32's, finite losses and grads."""
    method = make_contract_method(name, dtype=torch.float32).eval()
    batch = _large_norm_batch(method, dim=64)
    exact, half = _logits(method, batch, fp16=False), _logits(method, batch, fp16=True)
    assert torch.isfinite(half).all(), f"{name}: non-finite fp16-autocast logits"
    agree = (half.argmax(-1) == exact.argmax(-1)).float().mean().item()
    assert agree >= 0.9, f"{name}: argmax agrees with float32 for {agree:.0%} of queries"
    method.train()
    batch = _with_grad_frames(batch)
    losses = _stage_losses(method, batch, fp16=True)
    assert all(torch.isfinite(x) for x in losses), f"{name}: stage losses {losses}"
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    grads += [t.grad for t in (batch.support, batch.query) if t.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads), f"{name}: non-finite gradients"
