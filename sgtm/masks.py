"""Temporal mask strategies (Sec. 3.2 "Saliency-guided temporal mask"; Tables 3-4, Figure 4).

A strategy maps actionness ``[N, T]`` and a number of frames ``n`` to a boolean mask
``[N, T]`` (True = masked, hidden from the encoder). Every video of a batch gets exactly ``n``
masked frames.

Ranking and ties: frames are ranked by their score, highest first, with a stable sort, so among
equal scores the EARLIER frame counts as more salient. With all-equal scores "top" masks the
first frames, "bottom" the last ones and "middle" the middle ones. Any score monotone in
actionness gives the same masks; SGTM passes the pre-sigmoid ``Σ_c A`` (eq. 2 without its
sigmoid), so that saturated actionness (sigmoid = 1.0 in float32) does not create ties.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "MaskStrategy",
    "MASK_STRATEGIES",
    "register_mask",
    "get_mask_strategy",
    "saliency_order",
    "num_masked_frames",
]

MaskFn = Callable[[Tensor, int], Tensor]


@dataclass(frozen=True)
class MaskStrategy:
    """A named mask strategy: ``fn(actionness [N, T], n) -> bool [N, T]``."""

    name: str
    fn: MaskFn
    needs_saliency: bool
    description: str


MASK_STRATEGIES: dict[str, MaskStrategy] = {}


def register_mask(name: str, *, needs_saliency: bool) -> Callable[[MaskFn], MaskFn]:
    """Decorator adding a strategy to :data:`MASK_STRATEGIES`."""

    def add(fn: MaskFn) -> MaskFn:
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        MASK_STRATEGIES[name] = MaskStrategy(name, fn, needs_saliency, doc)
        return fn

    return add


def get_mask_strategy(name: str) -> MaskStrategy | None:
    """The strategy called ``name``; ``None`` for "none" (no masking branch at all)."""
    if name == "none":
        return None
    if name not in MASK_STRATEGIES:
        known = ", ".join(["none", *sorted(MASK_STRATEGIES)])
        raise ValueError(f"unknown SGTM mask strategy {name!r}; known: {known}")
    return MASK_STRATEGIES[name]


def num_masked_frames(seq_len: int, k: int | None, mask_ratio: float | None) -> int:
    """Frames to mask: ``2k``, else ``mask_ratio * T`` rounded half up, else ``T // 2``.

    Raises ``ValueError`` when both are given or the count leaves no frame visible.
    """
    if k is not None and mask_ratio is not None:
        raise ValueError("set either k (2k frames masked) or mask_ratio, not both")
    if k is not None:
        n = 2 * k
    elif mask_ratio is not None:
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in [0, 1), got {mask_ratio}")
        n = math.floor(mask_ratio * seq_len + 0.5)
    else:
        n = seq_len // 2
    if not 0 <= n < seq_len:
        raise ValueError(
            f"masking {n} of {seq_len} frames leaves the encoder nothing to see; "
            f"use k < T/2 = {seq_len / 2} (got k={k}) or mask_ratio < 1"
        )
    return n


def saliency_order(actionness: Tensor) -> Tensor:
    """``[N, T]`` -> ``[N, T]`` frame indices from most to least salient (ties: earlier first)."""
    return torch.sort(actionness, dim=1, descending=True, stable=True).indices


def _mask_ranks(actionness: Tensor, ranks: Tensor) -> Tensor:
    """Mask the frames at saliency ranks ``ranks [R]`` (0 = most salient) -> bool ``[N, T]``."""
    order = saliency_order(actionness)
    mask = torch.zeros_like(actionness, dtype=torch.bool)
    chosen = order[:, ranks.to(order.device)]
    return mask.scatter(1, chosen, True)


@register_mask("saliency", needs_saliency=True)
def mask_top_bottom(actionness: Tensor, n: int) -> Tensor:
    """SGTM: mask the ceil(n/2) most and floor(n/2) least salient frames; the middle is visible."""
    t = actionness.shape[1]
    top, bottom = math.ceil(n / 2), n // 2
    ranks = torch.cat([torch.arange(top), torch.arange(t - bottom, t)])
    return _mask_ranks(actionness, ranks)


@register_mask("top", needs_saliency=True)
def mask_top(actionness: Tensor, n: int) -> Tensor:
    """Mask the n most salient frames (Table 4, row 1)."""
    return _mask_ranks(actionness, torch.arange(n))


@register_mask("bottom", needs_saliency=True)
def mask_bottom(actionness: Tensor, n: int) -> Tensor:
    """Mask the n least salient frames (Table 4, row 2)."""
    t = actionness.shape[1]
    return _mask_ranks(actionness, torch.arange(t - n, t))


@register_mask("middle", needs_saliency=True)
def mask_middle(actionness: Tensor, n: int) -> Tensor:
    """Mask the n frames of middle saliency, ranks (T-n)//2 .. (T-n)//2 + n - 1 (Table 4, row 3)."""
    start = (actionness.shape[1] - n) // 2
    return _mask_ranks(actionness, torch.arange(start, start + n))


@register_mask("random", needs_saliency=False)
def mask_random(actionness: Tensor, n: int) -> Tensor:
    """Mask n frames drawn uniformly per video from the global RNG (Table 3's TML)."""
    noise = torch.rand(actionness.shape, device=actionness.device)
    chosen = noise.argsort(dim=1)[:, :n]
    return torch.zeros_like(actionness, dtype=torch.bool).scatter(1, chosen, True)
