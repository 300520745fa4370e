"""Helpers shared by the benchmarks: a feature pool, timing, peak memory."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["feature_pool", "timed", "peak_rss_mib"]


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
