"""Multiple-comparison adjustment across a family of tests (Holm–Bonferroni)."""

from __future__ import annotations

import numpy as np

__all__ = ["holm"]


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values, in the input order.

    For ``m`` p-values sorted ascending ``p_(1) <= ... <= p_(m)``, the adjusted value of
    ``p_(i)`` is ``max_{j <= i} min(1, (m - j + 1) * p_(j))``. Rejecting where the adjusted
    value is ``<= alpha`` controls the family-wise error rate at ``alpha``. NaN p-values are
    left out of the family and stay NaN.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p-values must be 1-D, got shape {p.shape}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out
