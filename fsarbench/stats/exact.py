"""Exact p-values where a parametric test has nothing to estimate."""

from __future__ import annotations

__all__ = ["constant_difference_p"]


def constant_difference_p(n: int) -> float:
    """Two-sided p of ``n`` paired differences that are all equal and non-zero, by the exact
    sign-flip (permutation) test: of the ``2^n`` sign patterns, the two constant ones are the
    most extreme, so ``p = 2^(1-n)`` (0.5 for two, 0.25 for three, below 0.05 from six on).
    A t-test has no variance to use there (``t = ±inf``, scipy's ``p = 0``)."""
    if n < 1:
        raise ValueError(f"need at least one difference, got {n}")
    return min(1.0, 2.0 ** (1 - n))
