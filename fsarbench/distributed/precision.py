"""Mixed precision and memory format for a device: bf16 where supported, else fp16 with a
gradient scaler, channels-last — all on CUDA only; the CPU runs plain float32."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Precision", "select_precision"]


@dataclass(frozen=True)
class Precision:
    """How a device computes.

    Attributes:
        dtype: autocast dtype (``None``: no autocast, float32).
        scaler: whether fp16 gradients need a ``GradScaler``.
        channels_last: store the backbone and its inputs channels-last.
    """

    dtype: torch.dtype | None = None
    scaler: bool = False
    channels_last: bool = False
    device_type: str = "cpu"

    @property
    def name(self) -> str:
        return "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the forward pass (a no-op without a dtype)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A scaler that is enabled only for fp16."""
        return torch.amp.GradScaler(self.device_type, enabled=self.scaler)


def select_precision(
    device: torch.device,
    *,
    amp: bool = True,
    channels_last: bool = True,
    bf16_supported: Callable[[], bool] | None = None,
) -> Precision:
    """bf16 autocast on CUDA when the GPU supports it, fp16 + scaler otherwise; float32 and
    the default memory format on every other device or with ``amp=False``."""
    if device.type != "cuda":
        return Precision(device_type=device.type)
    supported = bf16_supported or torch.cuda.is_bf16_supported
    if not amp:
        return Precision(channels_last=channels_last, device_type="cuda")
    if supported():
        return Precision(torch.bfloat16, False, channels_last, "cuda")
    return Precision(torch.float16, True, channels_last, "cuda")
