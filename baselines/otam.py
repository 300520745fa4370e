"""OTAM: ordered temporal alignment with a soft-min dynamic programme (Cao et al., CVPR'20).

No official code exists; every published number comes from ``OTAM_cum_dist`` of the TRX
library (github.com/tobyperrett/few-shot-action-recognition ``model.py``), which this head
follows: cosine with 0.01 added to its denominator, zero-padded columns, a plain running sum
on row 0, soft-min elsewhere, both directions summed, class distance = mean over the class's
support videos. The soft-min is computed stably (log-sum-exp), so it stays finite where the
reference float32 formula underflows to ``+inf``; elsewhere both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fsarbench import FewShotMethod, MethodOutput
from fsarbench_baselines._similarity import frame_dots, pairs_last
from fsarbench_baselines.common import class_mean

__all__ = ["OTAM", "otam_distance", "bidirectional_otam", "otam_cosine_distance"]


def _lse2(a: Tensor, b: Tensor) -> Tensor:
    """``log(exp(a) + exp(b))``, stable: ``max + log(1 + exp(-|a - b|))``.

    Written with ``exp``/``log`` because those are SIMD-vectorised on CPU while float32
    ``log1p`` (inside ``torch.logaddexp``) is not: ``torch.logaddexp`` was about 2x slower.
    """
    top = torch.maximum(a, b)
    return top + torch.log(torch.exp(torch.minimum(a, b) - top) + 1.0)


def _neg_scaled_dp(nd: Tensor) -> Tensor:
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


def _neg_scaled(d: Tensor, lam: float) -> Tensor:
    """``-d/λ``, after checking that λ is positive."""
    if lam <= 0:
        raise ValueError(f"OTAM needs a positive soft-min temperature lam, got {lam}")
    return d * (-1.0 / lam)


def otam_distance(d: Tensor, lam: float = 0.1) -> Tensor:
    """One-direction OTAM cumulative distance (``OTAM_cum_dist`` of the TRX library).

    Args:
        d: ``[..., L, M]`` frame distances (rows are aligned to columns).
        lam: soft-min temperature λ.

    Returns:
        ``[...]``, ``C[L-1, M+1]`` of the padded soft-min recursion.
    """
    lead = d.shape[:-2]
    return _neg_scaled_dp(pairs_last(_neg_scaled(d, lam))).reshape(lead) * (-lam)


def bidirectional_otam(d: Tensor, lam: float = 0.1) -> Tensor:
    """``otam(d) + otam(dᵀ)`` (summed, no ½), as one batched recursion when ``L == M``.

    Args:
        d: ``[..., L, M]`` frame distances.

    Returns:
        ``[...]``.
    """
    if d.shape[-1] != d.shape[-2]:
        return otam_distance(d, lam) + otam_distance(d.transpose(-1, -2), lam)
    nd = _neg_scaled(d, lam)
    both = pairs_last(torch.stack([nd, nd.transpose(-1, -2)]))  # [L, L, 2P]
    out = _neg_scaled_dp(both).view(2, *d.shape[:-2])
    return (out[0] + out[1]) * (-lam)


def otam_cosine_distance(query: dict, support: dict, eps: float) -> Tensor:
    """``1 - <x, y> / (|x| |y| + eps)`` for every frame pair of every (query, support) pair.

    Args:
        query: ``{"features": [B, Nq, T, D], "norms": [B, Nq, T]}``.
        support: ``{"features": [B, Ns, T, D], "norms": [B, Ns, T]}``.

    Returns:
        ``[B, Nq, Ns, Tq, Ts]``.
    """
    dots = frame_dots(query["features"], support["features"])  # [B, Nq, Tq, Ns, Ts]
    denom = query["norms"][:, :, :, None, None] * support["norms"][:, None, None] + eps
    return (1.0 - dots / denom).permute(0, 1, 3, 2, 4)


class OTAM(FewShotMethod):
    """OTAM temporal alignment (Cao et al., CVPR'20), as the TRX library computes it."""

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

    def pairwise(self, shot: int) -> bool:
        """Always: a class's logit is the mean of per-video scores."""
        return True

    def pair_logits(self, query: dict, support: dict) -> Tensor:
        """Minus the OTAM distance of every (query, support) pair: ``[B, Nq, Ns]``."""
        return -self.video_distances(support, query)
