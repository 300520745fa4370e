"""Exact p-values where a parametric test has nothing to estimate."""

from __future__ import annotations

import math

__all__ = ["constant_difference_p", "constant_groups_p"]


def constant_difference_p(n: int) -> float:
    """Two-sided p of ``n`` paired differences that are all equal and non-zero, by the exact
    sign-flip (permutation) test: of the ``2^n`` sign patterns, the two constant ones are the
    most extreme, so ``p = 2^(1-n)`` (0.5 for two, 0.25 for three, below 0.05 from six on).
    A t-test has no variance to use there (``t = ±inf``, scipy's ``p = 0``)."""
    if n < 1:
        raise ValueError(f"need at least one difference, got {n}")
    return min(1.0, 2.0 ** (1 - n))


def constant_groups_p(n_a: int, n_b: int) -> float:
    """Two-sided p of two unpaired groups of ``n_a`` and ``n_b`` values, each group constant
    and the two different, by the exact permutation test: of the ``C(n_a + n_b, n_a)`` ways
    to split the values, the two that keep the groups apart are the most extreme (one when
    the groups differ in size), so ``p = 2 / C`` (``1 / C`` for unequal sizes): 1/3 for two
    seeds a side. Welch's t-test has no variance to use there (scipy's ``p = 0``)."""
    if min(n_a, n_b) < 1:
        raise ValueError(f"need a value on each side, got {n_a} and {n_b}")
    splits = math.comb(n_a + n_b, n_a)
    return min(1.0, (2 if n_a == n_b else 1) / splits)
