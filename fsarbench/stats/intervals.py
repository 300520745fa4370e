"""Confidence intervals over per-episode accuracies."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["INTERVALS", "mean_and_halfwidth"]

#: name -> what the half-width is, recorded beside every "±".
INTERVALS = {
    "normal": "95% CI half-width, 1.96*std/sqrt(n), population std (ddof=0; TRX convention)",
    "t": "95% CI half-width, t(0.975, n-1)*std/sqrt(n), sample std (ddof=1)",
}


def mean_and_halfwidth(values: np.ndarray, interval: str = "normal") -> tuple[float, float, float]:
    """Mean, 95% CI half-width and std of ``values`` (same units as ``values``).

    ``interval="normal"`` is the convention of the published FSAR numbers (TRX/STRM):
    ``1.96 * np.std(values) / sqrt(n)``; ``"t"`` uses Student's t and the sample std, which
    one value does not define: its half-width and std are then NaN (printed "nan"), not 0.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    if n == 0:
        raise ValueError("no values to average")
    if interval == "normal":
        std = float(np.std(v))
        return float(v.mean()), 1.96 * std / math.sqrt(n), std
    if interval == "t":
        from scipy import stats

        if n == 1:
            return float(v.mean()), math.nan, math.nan
        std = float(np.std(v, ddof=1))
        return float(v.mean()), float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n), std
    raise ValueError(f"interval must be one of {sorted(INTERVALS)}, not {interval!r}")
