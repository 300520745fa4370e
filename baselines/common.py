"""Pieces several heads share: class means over an arbitrary support order."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_mean", "one_hot_weights"]


def one_hot_weights(labels: Tensor, way: int, dtype: torch.dtype) -> Tensor:
    """``[B, Ns]`` labels -> ``[B, way, Ns]`` weights averaging each class's support videos."""
    onehot = F.one_hot(labels, way).to(dtype).transpose(1, 2)
    return onehot / onehot.sum(-1, keepdim=True).clamp_min(1)


def class_mean(values: Tensor, labels: Tensor, way: int) -> Tensor:
    """Mean over each class's support entries.

    Args:
        values: ``[B, ..., Ns]`` per-support values (support on the last axis).
        labels: ``[B, Ns]`` episode labels.

    Returns:
        ``[B, ..., way]``.
    """
    w = one_hot_weights(labels, way, values.dtype)  # [B, way, Ns]
    lead = values.shape[1:-1]
    flat = values.reshape(values.shape[0], -1, values.shape[-1])  # [B, M, Ns]
    out = torch.bmm(flat, w.transpose(1, 2))  # [B, M, way]
    return out.reshape(values.shape[0], *lead, way)
