"""Where autocast stops: heads let autocast run their big matrix products in bf16/fp16 and
compute what follows them (distances, recursions, class means, logits) in float32, because
half-precision logits tie (bf16 keeps 8 bits) and half-precision sums of large products
overflow (fp16 tops out at 65504)."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ["HALF", "float32_region", "upcast"]

HALF = (torch.float16, torch.bfloat16)
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


def float32_region(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast switched off for ``device`` (a no-op for devices autocast does not know)."""
    kind = torch.device(device).type
    if kind not in _AUTOCAST_DEVICES:
        return contextlib.nullcontext()
    return torch.autocast(kind, enabled=False)


def upcast(t: Tensor) -> Tensor:
    """``t`` in float32 when it is half precision, else unchanged (float64 stays float64)."""
    return t.float() if t.dtype in HALF else t
