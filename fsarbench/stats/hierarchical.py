"""Statistics over training seeds *and* episodes.

With several training seeds, a number varies with the seed as well as with the episodes. Two
methods' difference is then tested at the seed level too:

- a hierarchical bootstrap: resample each method's training seeds (with replacement), then the
  shared episodes (with replacement, one draw for both methods: episodes are paired), and take
  the mean difference; its percentile CI and two-sided p-value;
- a test on per-seed mean accuracies: paired t-test on per-seed differences when both methods
  have the same training seeds, else Welch's t-test.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from fsarbench.stats.defaults import DEFAULT_BOOTSTRAP
from fsarbench.stats.exact import constant_difference_p, constant_groups_p

__all__ = ["SeedLevel", "seed_level_comparison", "hierarchical_bootstrap"]


@dataclass(frozen=True)
class SeedLevel:
    """Seed-level statistics of A - B (percent): bootstrap CI/p and the per-seed test's p."""

    diff: float
    ci_low: float
    ci_high: float
    p_bootstrap: float
    p_seeds: float
    seeds_a: int
    seeds_b: int
    seed_test: str
    #: the smallest ``p_bootstrap`` the resampling can give, ``1/(n_boot + 1)``
    p_floor: float = 0.0

    @property
    def both_sides(self) -> bool:
        """Whether both sides have several seeds (else one side's seed variance is unseen)."""
        return min(self.seeds_a, self.seeds_b) >= 2


def hierarchical_bootstrap(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile 95% CI and two-sided p of ``mean(a) - mean(b)`` for ``a [Sa, E]``,
    ``b [Sb, E]`` (per-seed per-episode accuracies on the same episodes). The p is never
    below the resampling's resolution ``1/(n_boot + 1)``: a verdict takes the larger of it
    and the episode-level p, which must not then stand in for seed-level evidence it lacks.

    The two sides are resampled in one order whatever the argument order (by their
    content), so ``(b, a)`` gives the mirrored interval and the same p (``compare A B`` and
    ``compare B A``, or a leaderboard, agree)."""
    if _digest(b) < _digest(a):
        low, high, p = _resample(b, a, n_boot, seed)
        return -high, -low, p
    return _resample(a, b, n_boot, seed)


def _digest(x: np.ndarray) -> tuple:
    data = np.ascontiguousarray(x, dtype=np.float64)
    return x.shape, hashlib.sha1(data.tobytes()).hexdigest()


def _resample(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    (sa, e), sb = a.shape, b.shape[0]
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        episodes = rng.integers(0, e, e)
        ra = a[rng.integers(0, sa, sa)][:, episodes]
        rb = b[rng.integers(0, sb, sb)][:, episodes]
        diffs[i] = ra.mean() - rb.mean()
    low, high = np.percentile(diffs, [2.5, 97.5])
    p = 2 * min(float((diffs <= 0).mean()), float((diffs >= 0).mean()))
    return float(low), float(high), min(1.0, max(p, 1.0 / (n_boot + 1)))


def seed_level_comparison(
    a: np.ndarray,
    b: np.ndarray,
    *,
    paired: bool = True,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> SeedLevel:
    """Seed-level statistics of ``a [Sa, E]`` vs ``b [Sb, E]`` (fractions; reported in %).

    ``paired``: row ``i`` of ``a`` and of ``b`` is the same training seed (the caller checks
    that both have the same seeds, in the same order); the per-seed test is then a paired
    t-test, else Welch's."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"different episode counts: {a.shape[1]} vs {b.shape[1]}")
    low, high, p_boot = hierarchical_bootstrap(a, b, n_boot=n_boot, seed=seed)
    ma, mb = a.mean(1), b.mean(1)
    if paired and len(ma) == len(mb) and len(ma) >= 2:
        d = ma - mb
        p_seed = 1.0 if np.ptp(d) <= 1e-12 and abs(d[0]) <= 1e-12 else _ttest_1samp(d)
        test = f"paired t over {len(d)} seeds"
    elif len(ma) >= 2 and len(mb) >= 2:
        p_seed = _welch(ma, mb)
        test = f"Welch t over {len(ma)}+{len(mb)} seeds"
    else:
        p_seed, test = math.nan, "n/a (one seed on a side)"
    return SeedLevel(
        100 * float(a.mean() - b.mean()),
        100 * low,
        100 * high,
        p_boot,
        p_seed,
        len(ma),
        len(mb),
        test,
        1.0 / (n_boot + 1),
    )


def _welch(ma: np.ndarray, mb: np.ndarray) -> float:
    """Welch's p of per-seed means; where each side's means are constant (no variance to
    use: scipy gives 0 for any difference), the exact permutation test's p."""
    from scipy import stats

    if np.ptp(ma) <= 1e-12 and np.ptp(mb) <= 1e-12:
        return 1.0 if abs(ma[0] - mb[0]) <= 1e-12 else constant_groups_p(len(ma), len(mb))
    return float(stats.ttest_ind(ma, mb, equal_var=False).pvalue)


def _ttest_1samp(d: np.ndarray) -> float:
    from scipy import stats

    if np.ptp(d) <= 1e-12:  # constant non-zero difference over seeds: the sign-flip test's p
        return constant_difference_p(d.size)
    return float(stats.ttest_1samp(d, 0.0).pvalue)
