"""OTAM: ordered temporal alignment with a soft-min dynamic programme (Cao et al., CVPR'20).

No official code exists; every published number comes from ``OTAM_cum_dist`` of the TRX
library (github.com/tobyperrett/few-shot-action-recognition ``model.py``), which this head
follows: cosine with 0.01 added to its denominator, zero-padded columns, a plain running sum
on row 0, soft-min elsewhere, both directions summed, class distance = mean over the class's
support videos. The recursion runs in shifted exponential units (sums and products, no
``exp``/``log`` per cell) for every pair where that provably stays in the normal float range,
and as a stable log-sum-exp for the rest: it stays finite where the reference float32 formula
underflows to ``+inf``; elsewhere both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fsarbench import FewShotMethod, MethodOutput
from fsarbench.autocast import HALF, upcast
from fsarbench.state import state_gather
from fsarbench_baselines._similarity import frame_dots, indexed_frame_dots, pairs_last
from fsarbench_baselines.common import class_mean

__all__ = ["OTAM", "otam_distance", "bidirectional_otam", "otam_cosine_distance"]


def _lse2(a: Tensor, b: Tensor) -> Tensor:
    """``log(exp(a) + exp(b))``, stable: ``max + log(1 + exp(-|a - b|))``.

    Written with ``exp``/``log`` because those are SIMD-vectorised on CPU while float32
    ``log1p`` (inside ``torch.logaddexp``) is not: ``torch.logaddexp`` was about 2x slower.
    """
    top = torch.maximum(a, b)
    return top + torch.log(torch.exp(torch.minimum(a, b) - top) + 1.0)


def _log_dp(nd: Tensor) -> Tensor:
    """The OTAM recursion in negated, ``1/λ``-scaled units.

    With ``n = -C/λ`` and ``nd = -d/λ`` the soft-min ``-λ log Σ exp(-x/λ)`` becomes a
    max-shifted log-sum-exp (exact associativity, no underflow). Column 1 chains down the
    rows; columns 2..M depend only on the previous column (one vectorised step each); the
    right pad unrolls into a single log-sum-exp over column M.

    Args:
        nd: ``[L, M, P]``, ``-d/λ`` for P independent ``L x M`` distance grids.

    Returns:
        ``[P]``, ``-C[L-1, M+1]/λ``.
    """
    rows, cols = nd.shape[:2]
    row0 = nd[0].cumsum(0)  # row 0: running sum, [M, P]
    log2 = torch.tensor(math.log(2.0), dtype=nd.dtype, device=nd.device)
    first = [nd[0, 0]]
    for l in range(1, rows):  # column 1: softmin(C[l-1,0]=0, C[l-1,1], C[l,0]=0)
        first.append(nd[l, 0] + _lse2(first[-1], log2))
    col = torch.stack(first)  # [L, P]
    for m in range(1, cols):  # columns 2..M: diagonal or horizontal predecessor
        col = torch.cat([row0[m : m + 1], nd[1:, m] + _lse2(col[:-1], col[1:])])
    # Right pad (d = 0): C[0,M+1] = C[0,M], then softmin(C[l-1,M], C[l-1,M+1], C[l,M]) down
    # the rows. Unrolled, every C[l,M] but the last enters twice (from row l and row l+1):
    # -C[L-1,M+1]/λ = log(2 Σ_{l<L-1} exp(n[l,M]) + exp(n[L-1,M])), one log-sum-exp.
    weight = torch.full((rows, 1), math.log(2.0), dtype=nd.dtype, device=nd.device)
    weight[-1] = 0.0
    return torch.logsumexp(col + weight, dim=0)


def _check_lam(lam: float) -> None:
    if lam <= 0:
        raise ValueError(f"OTAM needs a positive soft-min temperature lam, got {lam}")


def _exp_dp(w: Tensor, sigma: Tensor) -> Tensor:
    """The OTAM recursion in shifted exponential units: sums and products only.

    With a per-pair shift ``δ`` (the grid's minimum distance), ``w = exp((δ - d)/λ) <= 1``,
    ``σ = exp(-δ/λ)`` and ``G[l, m] = exp(-C[l, m]/λ) / σ^(m+1)``, the soft-min becomes a sum:
    ``G[l, m] = w[l, m] (G[l-1, m-1] + G[l, m-1])``; row 0 is a product (the running sum);
    column 1's free start (``C[·, 0] = 0``) enters as ``2`` in absolute units, ``2/σ`` after
    scaling, i.e. ``G[l, 1] = w (2 + σ G[l-1, 1])``; the right pad unrolls as in
    :func:`_log_dp`. No ``exp``/``log`` per cell, but no protection against under/overflow:
    :func:`_exact_in_exp_units` decides per pair whether this path is exact.

    Args:
        w: ``[L, M, P]`` shifted weights in ``(0, 1]``.
        sigma: ``[P]`` scale ``exp(-δ/λ)``.

    Returns:
        ``[P]``, ``exp(-C[L-1, M+1]/λ) / σ^M``.
    """
    rows, cols = w.shape[:2]
    first = [w[0, 0]]
    for l in range(1, rows):
        first.append(w[l, 0] * (2.0 + sigma * first[-1]))
    col = torch.stack(first)  # [L, P]
    for m in range(1, cols):
        step = col.clone()
        step[1:] += col[:-1]  # diagonal + horizontal predecessors; row 0: horizontal only
        col = w[:, m] * step
    return 2.0 * col[:-1].sum(0) + col[-1]


def _exact_in_exp_units(d: Tensor, shift: Tensor, lam: float, transposed: bool) -> Tensor:
    """``[P]`` mask: pairs whose :func:`_exp_dp` intermediates are all normal floats.

    Every intermediate is at least ``Π_m min_l w[l, m] = exp(-Σ_m (max_l d[l, m] - δ)/λ)``
    and at most ``2L · 2^(M-1) · max(1, σ)^(L-1)`` (the final sum ``2L`` times that). Where
    both stay inside the dtype's normal range, the recursion is a chain of sums and products
    of positive normal numbers: each result carries only relative rounding error, as in the
    log-sum-exp form.

    Args:
        d: ``[P, L, M]`` distances; ``shift``: ``[P]`` their minimum per pair.
        transposed: check the recursion over ``dᵀ`` (rows and columns swapped).
    """
    rows = d.shape[2] if transposed else d.shape[1]
    col_max = d.amax(2) if transposed else d.amax(1)  # [P, cols]
    return _exact_from_col_max(col_max, shift, lam, rows)


def _exact_from_col_max(col_max: Tensor, shift: Tensor, lam: float, rows: int) -> Tensor:
    """:func:`_exact_in_exp_units` from each grid column's maximum ``col_max [P, cols]``
    (contiguous: the sum over columns then adds in the same order whatever the grid layout)."""
    cols = col_max.shape[1]
    info = torch.finfo(col_max.dtype)
    low = (col_max - shift[:, None]).sum(1) / lam  # -log of the smallest possible value
    high = (rows - 1) * torch.clamp(-shift, min=0) / lam  # log of the largest, less constants
    # cells reach 2L·2^(M-1)·max(1, σ)^(L-1); the final 2Σ_{l<L-1} + last up to 2L times that
    high_budget = math.log(info.max) - 2 * math.log(2 * rows) - (cols - 1) * math.log(2.0) - 1.0
    return (low <= -math.log(info.tiny) - 1.0) & (high <= high_budget)


def _costs(d: Tensor, lam: float, directions: tuple[bool, ...]) -> Tensor:
    """``C[L-1, M+1]`` of every grid of ``d [P, L, M]``, per direction: ``[len(directions), P]``.

    ``directions`` lists, per output row, whether to align ``dᵀ`` instead of ``d``. Both
    directions share one ``exp`` per cell. Sums and products in shifted exponential units
    (:func:`_exp_dp`) where that is exact (:func:`_exact_in_exp_units`; every pair of typical
    cosine distances at λ = 0.1), the stable log-sum-exp recursion (:func:`_log_dp`) for the
    rest. Half precision is computed, and returned, in float32.
    """
    work = d.float() if d.dtype in (torch.float16, torch.bfloat16) else d
    n = len(directions)
    shift = work.detach().amin((1, 2))  # [P]; any shift is exact: it cancels below
    ok = _exact_in_exp_units(work.detach(), shift, lam, directions[0])
    for t in directions[1:]:
        ok &= _exact_in_exp_units(work.detach(), shift, lam, t)
    all_ok = bool(ok.all())
    safe = work if all_ok else torch.where(ok[:, None, None], work, shift[:, None, None])
    w = torch.exp((shift[:, None, None] - safe) * (1.0 / lam))  # [P, L, M], keeps unused finite
    grids = pairs_last(torch.stack([w.transpose(1, 2) if t else w for t in directions], 1))
    sigma = torch.exp(shift * (-1.0 / lam)).repeat_interleave(n)
    cols = [d.shape[1] if t else d.shape[2] for t in directions]  # columns of each grid
    total = _exp_dp(grids, sigma).view(-1, n).T  # [n, P]
    fast = torch.stack([c * shift for c in cols]) - lam * torch.log(total)
    if not all_ok:
        bad = (~ok).nonzero().squeeze(1)
        sub = work[bad]
        slow = [
            -lam * _log_dp(pairs_last(sub.transpose(1, 2) if t else sub) * (-1.0 / lam))
            for t in directions
        ]
        fast = fast.T.index_put((bad,), torch.stack(slow, 1)).T
    return fast  # float32 for half-precision d: half costs would tie


def otam_distance(d: Tensor, lam: float = 0.1) -> Tensor:
    """One-direction OTAM cumulative distance (``OTAM_cum_dist`` of the TRX library).

    Args:
        d: ``[..., L, M]`` frame distances (rows are aligned to columns).
        lam: soft-min temperature λ.

    Returns:
        ``[...]``, ``C[L-1, M+1]`` of the padded soft-min recursion.
    """
    _check_lam(lam)
    flat = d.reshape(-1, *d.shape[-2:])
    return _costs(flat, lam, (False,))[0].reshape(d.shape[:-2])


def bidirectional_otam(d: Tensor, lam: float = 0.1) -> Tensor:
    """``otam(d) + otam(dᵀ)`` (summed, no ½), both in one batched recursion when ``L == M``.

    Args:
        d: ``[..., L, M]`` frame distances.

    Returns:
        ``[...]``.
    """
    if d.shape[-1] != d.shape[-2]:
        return otam_distance(d, lam) + otam_distance(d.transpose(-1, -2), lam)
    _check_lam(lam)
    out = _costs(d.reshape(-1, *d.shape[-2:]), lam, (False, True))
    return (out[0] + out[1]).reshape(d.shape[:-2])


def _half_products(frames: Tensor) -> bool:
    """Whether :func:`frame_dots` of ``frames`` would run in half precision: half frames, or
    autocast on their device (which runs the ``bmm`` in bf16/fp16)."""
    return frames.dtype in HALF or torch.is_autocast_enabled(frames.device.type)


def _unit(frames: Tensor, norms: Tensor) -> Tensor:
    """``frames [..., T, D] / norms [..., T]``; a zero frame stays zero (the norm is clamped to
    the dtype's smallest normal: 1e-12 is 0 in fp16)."""
    return frames / norms.clamp_min(torch.finfo(norms.dtype).tiny).unsqueeze(-1)


def safe_frame_dots(query: dict, support: dict) -> Tensor:
    """:func:`frame_dots` of the frames of ``query`` and ``support``, safe in half precision.

    Raw frame products overflow fp16 (65504) once ``|x||y|`` passes it (frames of norm ~256).
    Where the product would run in half precision, both sides are made unit first and the
    products are scaled back by the norms in float32. Otherwise the raw products, unchanged.

    Args:
        query: ``{"features": [B, Nq, Tq, D], "norms": [B, Nq, Tq]}``.
        support: ``{"features": [B, Ns, Ts, D], "norms": [B, Ns, Ts]}``.

    Returns:
        ``[B, Nq, Tq, Ns, Ts]``: float32 on the half-precision path.
    """
    q, s = query["features"], support["features"]
    if not _half_products(q):
        return frame_dots(q, s)
    cos = upcast(frame_dots(_unit(q, query["norms"]), _unit(s, support["norms"])))
    q_norms, s_norms = upcast(query["norms"]), upcast(support["norms"])
    return cos * q_norms[:, :, :, None, None] * s_norms[:, None, None]


def otam_cosine_distance(query: dict, support: dict, eps: float) -> Tensor:
    """``1 - <x, y> / (|x| |y| + eps)`` for every frame pair of every (query, support) pair.

    In half precision (half frames or autocast) the products come from unit frames and the
    distances are float32 (:func:`safe_frame_dots`).

    Args:
        query: ``{"features": [B, Nq, T, D], "norms": [B, Nq, T]}``.
        support: ``{"features": [B, Ns, T, D], "norms": [B, Ns, T]}``.

    Returns:
        ``[B, Nq, Ns, Tq, Ts]``.
    """
    dots = safe_frame_dots(query, support)  # [B, Nq, Tq, Ns, Ts]
    q_norms, s_norms = upcast(query["norms"]), upcast(support["norms"])  # |x||y| overflows fp16
    denom = q_norms[:, :, :, None, None] * s_norms[:, None, None] + eps
    return (1.0 - dots / denom).permute(0, 1, 3, 2, 4)


def _exp_dp_into(w: Tensor, sigma: Tensor) -> Tensor:
    """:func:`_exp_dp` without autograd, in two reused ``[L, P]`` buffers: the same
    operations on the same operands in the same order (bit-identical), fewer allocations."""
    rows, cols = w.shape[:2]
    col, step = torch.empty_like(w[:, 0]), torch.empty_like(w[:, 0])
    col[0] = w[0, 0]
    for l in range(1, rows):
        torch.mul(sigma, col[l - 1], out=col[l])
        col[l].add_(2.0).mul_(w[l, 0])
    for m in range(1, cols):
        step[0] = col[0]
        torch.add(col[1:], col[:-1], out=step[1:])
        torch.mul(w[:, m], step, out=col)
    # _exp_dp's last column comes out pairs-major ([P, L] in memory, its weights' layout
    # in _costs), and torch sums a contiguous run in its own order: sum in that layout
    rows_last = col.t().contiguous().t()
    return 2.0 * rows_last[:-1].sum(0) + col[-1]


def _pairs_last_cosine_distance(
    dots: Tensor, q_norms: Tensor, s_norms: Tensor, eps: float
) -> Tensor:
    """:func:`otam_cosine_distance` without autograd, from the frame products, written straight
    into the grid layout of the recursion (same arithmetic, bit-identical values).

    Args:
        dots: ``[B, Nq, Tq, Ns, Ts]`` (:func:`frame_dots`); q_norms: ``[B, Nq, Tq]``;
            s_norms: ``[B, Ns, Ts]``.

    Returns:
        ``[Tq, Ts, B·Nq·Ns]``.
    """
    dots = upcast(dots)  # the product may come out of autocast in bf16/fp16
    b, nq, tq, ns, ts = dots.shape
    q_norms = q_norms.permute(2, 0, 1)[:, None, :, :, None]  # [Tq, 1, B, Nq, 1]
    s_norms = s_norms.permute(2, 0, 1)[None, :, :, None, :]  # [1, Ts, B, 1, Ns]
    grid = torch.empty(tq, ts, b, nq, ns, dtype=dots.dtype, device=dots.device)
    torch.mul(q_norms, s_norms, out=grid).add_(eps)
    torch.div(dots.permute(2, 4, 0, 1, 3), grid, out=grid)
    return grid.neg_().add_(1.0).view(tq, ts, -1)  # 1 - x, rounded as 1.0 - x


@torch.no_grad()
def _bidirectional_cosine_otam(
    dots: Tensor, q_norms: Tensor, s_norms: Tensor, eps: float, lam: float
) -> Tensor:
    """``bidirectional_otam(otam_cosine_distance(query, support, eps), lam)`` for inference,
    from the frame products ``dots [B, Nq, Tq, Ns, Ts]`` and the frame norms
    ``q_norms [B, Nq, Tq]``, ``s_norms [B, Ns, Ts]``: bit-identical, with the distances made
    once in the recursion's layout, both directions' weights written into one buffer and no
    autograd bookkeeping. Pairs outside the exponential units' exact range send the whole
    batch to :func:`_costs`.

    Returns:
        ``[B, Nq, Ns]``.
    """
    d = _pairs_last_cosine_distance(dots, q_norms, s_norms, eps)  # [L, M, P]
    rows, cols, p = d.shape
    b, nq, ns = q_norms.shape[0], q_norms.shape[1], s_norms.shape[1]
    shift = d.amin((0, 1))  # [P]
    ok = _exact_from_col_max(d.amax(0).t().contiguous(), shift, lam, rows)
    ok &= _exact_from_col_max(d.amax(1).t().contiguous(), shift, lam, cols)
    if not bool(ok.all()):
        out = _costs(d.permute(2, 0, 1), lam, (False, True))
        return (out[0] + out[1]).view(b, nq, ns)
    grids = torch.empty(rows, cols, 2, p, dtype=d.dtype, device=d.device)
    forward = torch.sub(shift, d, out=grids[:, :, 0]).mul_(1.0 / lam).exp_()
    grids[:, :, 1].copy_(forward.transpose(0, 1))
    sigma = torch.exp(shift * (-1.0 / lam))
    total = _exp_dp_into(grids.view(rows, cols, 2 * p), sigma.repeat(2)).view(2, p)
    out = (cols * shift) - lam * torch.log(total)  # rows == cols: one shift term for both
    return (out[0] + out[1]).view(b, nq, ns)


def _inference(query: dict, support: dict) -> bool:
    """Whether no gradient can flow (eval under ``no_grad``/``inference_mode``) and the
    frames are float32/float64: then :func:`_bidirectional_cosine_otam` applies."""
    leaves = (query["features"], query["norms"], support["features"], support["norms"])
    if torch.is_grad_enabled() and any(t.requires_grad for t in leaves):
        return False
    return all(t.dtype in (torch.float32, torch.float64) for t in leaves)


def _indexed_inference(state: dict) -> bool:
    """Whether :func:`_bidirectional_cosine_otam` applies to episodes of the pool ``state``
    outside autocast (the chunked products are written into one float32/float64 output)."""
    autocast = torch.is_autocast_enabled(state["features"].device.type)
    return not autocast and _inference(state, state)


class OTAM(FewShotMethod):
    """OTAM temporal alignment (Cao et al., CVPR'20), as the TRX library computes it."""

    #: fastest episodes per batch in ``make bench`` (2 CPU threads, T=8, D=2048)
    episode_batch = {"cpu": {1: 64, 5: 64}}

    @dataclass
    class Config:
        """Hyper-parameters.

        Attributes:
            lam: soft-min temperature λ (0.1 in the HyRSM and TRX-library configs of
                Cao et al.'s OTAM; CLIP-FSAR uses 0.5).
            bidirectional: add the support-to-query alignment to query-to-support.
            eps: added to the cosine denominator ``|x||y| + eps`` (reference quirk, not a clamp).
        """

        lam: float = 0.1
        bidirectional: bool = True
        eps: float = 0.01

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.config.lam <= 0:
            raise ValueError(f"OTAM lam must be positive, got {self.config.lam}")
        if self.config.eps < 0:
            raise ValueError(f"OTAM eps must be >= 0 (it keeps cos <= 1), got {self.config.eps}")

    def encode(self, features: Tensor) -> dict[str, Tensor]:
        """``[N, T, D]`` -> ``{"features": [N, T, D], "norms": [N, T]}`` (frame L2 norms)."""
        return {"features": features, "norms": torch.linalg.vector_norm(features, dim=-1)}

    def video_distances(self, support: dict, query: dict) -> Tensor:
        """OTAM distance of every (query, support) pair: ``[B, Nq, Ns]``."""
        frames = query["features"].shape[2], support["features"].shape[2]
        if self.config.bidirectional and frames[0] == frames[1] and _inference(query, support):
            dots = safe_frame_dots(query, support)  # raw products in fp32; unit ones in autocast
            return _bidirectional_cosine_otam(
                dots, query["norms"], support["norms"], self.config.eps, self.config.lam
            )
        d = otam_cosine_distance(query, support, self.config.eps)
        if self.config.bidirectional:
            return bidirectional_otam(d, self.config.lam)
        return otam_distance(d, self.config.lam)

    def match(self, support, support_labels, query, way, **_) -> MethodOutput:
        """Encoded ``support [B, Ns, ...]``, ``query [B, Nq, ...]`` -> logits ``[B, Nq, way]``.

        Logits are minus the mean OTAM distance to each class's support videos.
        """
        return MethodOutput(
            logits=class_mean(self.pair_logits(query, support), support_labels, way)
        )

    @property
    def gathers_episodes(self) -> bool:
        """Bidirectional OTAM matches episodes from pool positions (:meth:`match_indexed`)."""
        return self.config.bidirectional

    def match_indexed(self, state, support_index, support_labels, query_index, way):
        """:meth:`match` of episodes given as pool positions: the frame products are made a
        few episodes at a time while their gathered frames are in cache
        (:func:`indexed_frame_dots`); bit-identical logits. Where the inference path does not
        apply (gradients, half precision, autocast), the episodes are gathered and matched."""
        if not _indexed_inference(state):
            support, query = state_gather(state, support_index), state_gather(state, query_index)
            return self.match(support, support_labels, query, way)
        dots = indexed_frame_dots(state["features"], query_index, support_index)
        norms = state["norms"]
        distances = _bidirectional_cosine_otam(
            dots, norms[query_index], norms[support_index], self.config.eps, self.config.lam
        )
        return MethodOutput(logits=class_mean(-distances, support_labels, way))

    def pairwise(self, shot: int) -> bool:
        """Always: a class's logit is the mean of per-video scores."""
        return True

    def pair_logits(self, query: dict, support: dict) -> Tensor:
        """Minus the OTAM distance of every (query, support) pair: ``[B, Nq, Ns]``."""
        return -self.video_distances(support, query)
