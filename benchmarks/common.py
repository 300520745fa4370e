"""Helpers shared by the benchmarks: a feature pool, timing, peak memory."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["bench_device", "feature_pool", "synchronize", "timed", "peak_rss_mib"]


def bench_device() -> torch.device:
    """Where the device-aware benchmarks run: ``FSAR_BENCH_DEVICE`` (set by ``--device``),
    default the CPU. Asking for CUDA where there is none is an error, not a silent CPU run."""
    device = torch.device(os.environ.get("FSAR_BENCH_DEVICE", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: torch sees no CUDA GPU here")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (a no-op on the CPU), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def feature_pool(
    n_classes: int = 24, per_class: int = 100, t: int = 8, d: int = 2048, seed: int = 0
):
    """Non-negative random float32 features ``[n_classes*per_class, T, D]`` and class ids."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.rand(n_classes * per_class, t, d, generator=g)
    return feats, np.repeat(np.arange(n_classes), per_class)


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
