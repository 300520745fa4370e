"""Spread over training seeds, reported apart from the episode confidence interval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fsarbench.stats.rounding import fixed

__all__ = ["SeedSpread", "seed_mean_std"]


@dataclass(frozen=True)
class SeedSpread:
    """Mean ± std of one number over ``n`` training seeds (std with ddof=1; 0 for one seed)."""

    mean: float
    std: float
    n: int

    @property
    def label(self) -> str:
        return f"std over {self.n} training seed{'s' if self.n != 1 else ''} (ddof=1)"

    def __str__(self) -> str:
        return f"{fixed(self.mean)} ± {fixed(self.std)} ({self.label})"


def seed_mean_std(values: np.ndarray | list[float]) -> SeedSpread:
    """Mean and sample std (ddof=1) of ``values [S]``, one accuracy per training seed."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("need a non-empty 1-D array of per-seed values")
    std = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
    return SeedSpread(float(v.mean()), std, int(v.size))
