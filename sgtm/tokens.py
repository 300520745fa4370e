"""Frame features <-> tokens of size P (Sec. 3.2 "Encoder"), and the sinusoidal table."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_token_dim", "to_tokens", "from_tokens", "frame_token_mask", "sincos_table"]


def check_token_dim(feature_dim: int, token_dim: int) -> int:
    """Tokens per frame, ``D / P``; raises ``ValueError`` unless P divides D."""
    if token_dim <= 0 or feature_dim % token_dim:
        raise ValueError(
            f"token_dim P={token_dim} must be a positive divisor of feature_dim D={feature_dim}: "
            f"a [T, D] video is cut into T*D/P tokens of size P (e.g. P=512 for D=2048)"
        )
    return feature_dim // token_dim


def to_tokens(frames: Tensor, token_dim: int) -> Tensor:
    """``[N, T', D]`` -> ``[N, T'*D/P, P]``: each frame's D values cut into D/P consecutive
    tokens, frame-major (tokens ``t*D/P .. (t+1)*D/P - 1`` belong to frame ``t``)."""
    n, t, d = frames.shape
    per_frame = check_token_dim(d, token_dim)
    return frames.reshape(n, t * per_frame, token_dim)


def from_tokens(tokens: Tensor, seq_len: int) -> Tensor:
    """``[N, T*D/P, P]`` -> ``[N, T, D]``, the inverse of :func:`to_tokens`."""
    n, m, p = tokens.shape
    if m % seq_len:
        raise ValueError(f"{m} tokens cannot be split into {seq_len} frames")
    return tokens.reshape(n, seq_len, (m // seq_len) * p)


def frame_token_mask(frame_mask: Tensor, tokens_per_frame: int) -> Tensor:
    """``[N, T]`` per-frame flags -> ``[N, T*D/P]`` per-token flags (frame-major)."""
    return frame_mask.repeat_interleave(tokens_per_frame, dim=1)


def sincos_table(length: int, dim: int) -> Tensor:
    """Fixed 1-D sinusoidal positions ``[length, dim]`` (Vaswani et al.):
    ``pe[p, 2i] = sin(p / 10000^(2i/dim))``, ``pe[p, 2i+1] = cos(p / 10000^(2i/dim))``."""
    if dim % 2:
        raise ValueError(f"a sinusoidal positional embedding needs an even width, got {dim}")
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)
    return table.float()
