"""Paired statistics for two methods evaluated on the same episodes.

Every method of one dataset/way/shot/seed sees the same manifest, so comparisons are paired:
per-episode accuracy differences (paired t-test, Wilcoxon signed-rank, bootstrap CI of the mean
difference) and per-query correctness (McNemar). Distributions come from scipy.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fsarbench.stats.defaults import DEFAULT_BOOTSTRAP
from fsarbench.stats.exact import constant_difference_p
from fsarbench.stats.hierarchical import SeedLevel

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "PairedComparison",
    "bootstrap_mean_ci",
    "compare_paired",
    "constant_difference_p",
    "mcnemar",
    "paired_ttest",
    "wilcoxon_signed_rank",
    "signed_rank_sign",
    "MCNEMAR_EXACT_BELOW",
    "format_p",
]

#: McNemar uses the exact binomial test when fewer discordant pairs than this are observed.
MCNEMAR_EXACT_BELOW = 25


def format_p(p: float, floor: float | None = None) -> str:
    """A p-value for people: ``"n/a"`` for NaN, never ``"0"`` (``"<1e-300"``, or ``"<floor"``
    for a resampling p whose resolution is ``floor``, rounded up), scientific notation below
    0.001, and never rounded onto a common significance level it is not (``0.04996``)."""
    if math.isnan(p):
        return "n/a"
    if floor is not None and p < floor:
        return f"<{_ceil_1(floor)}"
    if p <= 0.0:
        return "<1e-300"
    if p < 1e-3:
        return f"{p:.1e}"
    for digits in range(3, 7):  # 0.04996 printed "0.05", as 0.05004 did, on both sides of α
        text = f"{p:.{digits}g}"
        if float(text) == p or float(text) not in COMMON_ALPHAS:
            return text
    return text


#: Significance levels a rounded p must not be printed as unless it equals them.
COMMON_ALPHAS = (0.1, 0.05, 0.01, 0.005, 0.001)


def _ceil_1(x: float) -> str:
    """``x`` rounded up to one significant digit (``"4e-04"`` for 1/3000): ``"<3e-04"``,
    rounded to nearest, was below the p it bounded (1/3001 = 3.3e-04)."""
    exponent = math.floor(math.log10(x))
    digit = math.ceil(round(x / 10.0**exponent, 9))
    if digit >= 10:
        digit, exponent = 1, exponent + 1
    return f"{digit}e{exponent:+03d}"


def _paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` for two equal-length 1-D arrays, as float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be 1-D of equal length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired samples are empty")
    return a - b


def paired_ttest(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided paired t-test of ``mean(a - b) = 0`` on ``[E]`` per-episode values.

    Returns ``(t, p)``. One episode gives ``(nan, nan)``: there is no variance to test, and
    NaN counts as not significant everywhere. Identical samples (all differences zero) give
    ``(0.0, 1.0)`` instead of scipy's NaN. A constant non-zero difference over ``E >= 2``
    episodes (constant meaning equal up to 1e-12, as per-episode accuracies like ``0.6 - 0.4``
    round differently) has no variance either: ``t = ±inf`` and ``p`` is the exact sign-flip
    test's, :func:`constant_difference_p` (scipy's ``p = 0`` called three episodes that each
    differ by one query "significant" at any level).
    """
    from scipy import stats

    d = _paired(a, b)
    if d.size < 2:
        return math.nan, math.nan
    if np.ptp(d) <= 1e-12:  # constant up to rounding: no variance to test
        if abs(d[0]) <= 1e-12:
            return 0.0, 1.0
        return math.copysign(math.inf, d[0]), constant_difference_p(d.size)
    res = stats.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


#: Decimals kept before ranking paired differences (far below any accuracy step: 1/queries).
RANK_DECIMALS = 9


def wilcoxon_signed_rank(
    a: np.ndarray, b: np.ndarray, zero_method: str = "wilcox"
) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test on ``[E]`` paired values; ``(W, p)``.

    Zero differences are dropped (``zero_method="wilcox"``, scipy's default); if every
    difference is zero the test has nothing to rank and returns ``(0.0, 1.0)``. Differences
    are rounded to :data:`RANK_DECIMALS` first: episode accuracies are fractions such as
    0.6 and 0.4, whose float differences (0.19999999999999996, 0.2, 0.20000000000000007)
    would otherwise rank true ties apart and leave true zeros in.
    """
    from scipy import stats

    d = _rank_differences(a, b)
    if not np.any(d != 0):
        return 0.0, 1.0
    res = stats.wilcoxon(d, zero_method=zero_method)
    return float(res.statistic), float(res.pvalue)


def _rank_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` rounded to :data:`RANK_DECIMALS`, as the signed-rank statistics rank them."""
    return np.round(_paired(a, b), RANK_DECIMALS)


def signed_rank_sign(a: np.ndarray, b: np.ndarray) -> int:
    """The sign of ``W+ - W-`` (ranks of ``|a - b|`` summed with the signs of ``a - b``, the
    differences rounded and zeros dropped as :func:`wilcoxon_signed_rank` does): the side
    the Wilcoxon test favours, which can differ from the side with the higher mean."""
    from scipy import stats

    d = _rank_differences(a, b)
    d = d[d != 0]
    if d.size == 0:
        return 0
    return int(np.sign(np.sum(np.sign(d) * stats.rankdata(np.abs(d)))))


def bootstrap_mean_ci(
    diff: np.ndarray, *, n_boot: int = DEFAULT_BOOTSTRAP, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI ``(low, high)`` of the mean of ``diff [E]`` (resampling episodes).

    Seeded: the same inputs give the same interval. Uses ``scipy.stats.bootstrap``. One
    difference has no sampling distribution to resample: ``(nan, nan)``.
    """
    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no differences to bootstrap")
    if d.size == 1:
        return math.nan, math.nan
    if np.ptp(d) <= 1e-12:
        return float(d.mean()), float(d.mean())
    key = (hashlib.sha1(np.ascontiguousarray(d).tobytes()).hexdigest(), n_boot, level, seed)
    if key not in _BOOTSTRAPS:
        if len(_BOOTSTRAPS) >= _BOOTSTRAP_MEMO:
            _BOOTSTRAPS.pop(next(iter(_BOOTSTRAPS)))
        _BOOTSTRAPS[key] = _percentile_bootstrap(d, n_boot, level, seed)
    return _BOOTSTRAPS[key]


# A run's tables, figures and report compare the same pairs of cells several times; the
# bootstrap is a pure function of its inputs, so each is computed once per process.
_BOOTSTRAP_MEMO = 4096
_BOOTSTRAPS: dict[tuple, tuple[float, float]] = {}


#: Resampling batch of ``scipy.stats.bootstrap`` here (its draws come in this order).
_BATCH = 200
#: Most bytes of resample positions kept for reuse (2000 x 10,000 episodes: 40 MB as int16).
_INDEX_BYTES = 256 * 2**20
_INDICES: dict[tuple[int, int, int], list[np.ndarray]] = {}


def _resample_indices(n: int, n_boot: int, seed: int) -> Iterable[np.ndarray]:
    """The episode positions ``scipy.stats.bootstrap`` draws for ``n`` episodes from
    ``default_rng(seed)``: ``[batch, n]`` per batch of :data:`_BATCH`, in its order.

    They do not depend on the differences, so every comparison of a run (same episode count,
    resamples and seed) reuses one draw: drawing them was half of a bootstrap's time. Kept
    in the smallest integer type that holds ``n`` while they fit :data:`_INDEX_BYTES`;
    larger draws are made batch by batch, as scipy makes them, and not kept."""
    key = (n, n_boot, seed)
    if key in _INDICES:
        return _INDICES[key]
    dtype = np.min_scalar_type(n - 1)
    rng = np.random.default_rng(seed)
    draws = (
        rng.integers(0, n, (min(_BATCH, n_boot - k), n)).astype(dtype, copy=False)
        for k in range(0, n_boot, _BATCH)
    )
    size = n * n_boot * dtype.itemsize
    if size > _INDEX_BYTES:
        return draws
    if size + sum(d.nbytes for v in _INDICES.values() for d in v) > _INDEX_BYTES:
        _INDICES.clear()
    _INDICES[key] = list(draws)
    return _INDICES[key]


def _percentile_bootstrap(d: np.ndarray, n_boot: int, level: float, seed: int):
    """``scipy.stats.bootstrap(method="percentile", batch=200)`` of the mean of ``d``, seeded
    with ``default_rng(seed)``: the same resamples and means, its own quantiles."""
    from scipy import stats

    resamples = _resample_indices(d.size, n_boot, seed)
    means = np.concatenate([np.mean(np.take(d, i), axis=-1) for i in resamples])
    res = stats.bootstrap(
        (d,),
        np.mean,
        n_resamples=0,
        bootstrap_result=_Distribution(means),
        confidence_level=level,
        method="percentile",
        vectorized=True,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass(frozen=True)
class _Distribution:
    """What ``scipy.stats.bootstrap`` reads of a previous result: its resampled statistics."""

    bootstrap_distribution: np.ndarray


def mcnemar(
    correct_a: np.ndarray, correct_b: np.ndarray, episodes: np.ndarray | None = None
) -> tuple[int, int, float, str]:
    """McNemar's test on paired per-query correctness ``[Q]`` (bool).

    ``episodes``: ``[Q]`` the episode of each query. The queries of one episode share its
    support set, so their outcomes are not independent, and the plain test, which counts
    each query as an independent pair, gave p-values far too small (queries of an easy or hard
    episode all move together). Where some episode holds several queries, the test is the
    clustered McNemar of Durkalski et al. (Stat. Med. 2003) over per-episode discordance
    ``d_k = (A only) - (B only)``: the exact sign-flip distribution of ``Σ d_k`` when fewer
    than :data:`MCNEMAR_EXACT_BELOW` episodes are discordant, else
    ``χ² = (Σ d_k)² / Σ d_k²`` with one degree of freedom. With one query per episode (or
    ``episodes=None``) it is the plain test.

    Returns ``(n_a_only, n_b_only, p, method)``: the discordant query counts (A right and B
    wrong, and the reverse), the two-sided p-value, and ``"exact"`` (binomial) or
    ``"chi2-cc"`` (chi-square, continuity corrected) for the plain test,
    ``"clustered-exact"`` or ``"clustered-chi2"`` for the clustered one.
    """
    from scipy import stats

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"per-query correctness must be 1-D of equal length: {a.shape}, {b.shape}")
    n10 = int(np.sum(a & ~b))
    n01 = int(np.sum(~a & b))
    if episodes is not None and _clustered(episodes, a.size):
        return (n10, n01, *_clustered_mcnemar(a, b, np.asarray(episodes)))
    n = n10 + n01
    if n == 0:
        return n10, n01, 1.0, "exact"
    if n < MCNEMAR_EXACT_BELOW:
        return n10, n01, float(stats.binomtest(n10, n, 0.5).pvalue), "exact"
    chi2 = (abs(n10 - n01) - 1) ** 2 / n
    return n10, n01, float(stats.chi2.sf(chi2, df=1)), "chi2-cc"


def _clustered(episodes: np.ndarray, queries: int) -> bool:
    """Whether some episode holds several of the ``queries`` (``episodes``: ``[Q]`` ids)."""
    ids = np.asarray(episodes)
    if ids.shape != (queries,):
        raise ValueError(f"episodes must give one episode id per query: {ids.shape} for {queries}")
    return len(np.unique(ids)) < queries


def _clustered_mcnemar(a: np.ndarray, b: np.ndarray, episodes: np.ndarray) -> tuple[float, str]:
    """``(p, method)`` of the clustered McNemar test (see :func:`mcnemar`)."""
    from scipy import stats

    _, cluster = np.unique(episodes, return_inverse=True)
    d = np.bincount(cluster, weights=(a & ~b).astype(float) - (~a & b))
    d = d[d != 0].astype(np.int64)
    if d.size == 0:
        return 1.0, "clustered-exact"
    if d.size < MCNEMAR_EXACT_BELOW:
        return _sign_flip_p(d), "clustered-exact"
    chi2 = float(d.sum()) ** 2 / float((d * d).sum())
    return float(stats.chi2.sf(chi2, df=1)), "clustered-chi2"


def _sign_flip_p(d: np.ndarray) -> float:
    """Two-sided exact p of ``Σ d`` when each of the integers ``d`` keeps or flips its sign
    with probability ½, independently (fewer than 53 of them: every probability is a
    multiple of ``2^-len(d)``, so the sums below are exact)."""
    sizes = np.abs(d)
    total = int(sizes.sum())
    probs = np.zeros(2 * total + 1)
    probs[total] = 1.0  # position = sum + total
    for m in sizes.tolist():
        moved = np.zeros_like(probs)
        moved[m:] += probs[:-m]
        moved[:-m] += probs[m:]
        probs = moved * 0.5
    sums = np.arange(-total, total + 1)
    return min(1.0, float(probs[np.abs(sums) >= abs(int(d.sum()))].sum()))


@dataclass(frozen=True)
class PairedComparison:
    """A vs B on the same episodes; accuracies and differences in percent.

    Attributes:
        acc_a, acc_b: mean per-episode accuracy of each.
        diff: ``acc_a - acc_b``.
        ci_low, ci_high: seeded bootstrap 95% CI of ``diff``.
        p_ttest, p_wilcoxon, p_mcnemar: two-sided raw p-values.
        mcnemar_a_only, mcnemar_b_only: discordant query counts.
        mcnemar_method: ``"exact"``, ``"chi2-cc"``, ``"clustered-exact"`` or
            ``"clustered-chi2"`` (:func:`mcnemar`).
        episodes, queries: sample sizes.
        seed_level: seed-level statistics when either side has several training seeds
            (:mod:`fsarbench.stats.hierarchical`), else ``None``.
    """

    acc_a: float
    acc_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_ttest: float
    p_wilcoxon: float
    p_mcnemar: float
    mcnemar_a_only: int
    mcnemar_b_only: int
    mcnemar_method: str
    episodes: int
    queries: int
    seed_level: SeedLevel | None = None
    wilcoxon_sign: int = 0

    @property
    def level(self) -> str:
        """What a verdict rests on: ``"seed+episode"`` (several seeds on both sides),
        ``"episode"`` (one seed each) or ``"episode, seeds of one side"`` (one side has a
        single seed, whose seed variance no test can see)."""
        if self.seed_level is None:
            return "episode"
        return "seed+episode" if self.seed_level.both_sides else "episode, seeds of one side"

    @property
    def diff_ci(self) -> tuple[float, float]:
        """The 95% CI of ``diff`` at the level the verdict rests on: with several training
        seeds the hierarchical bootstrap's (seeds, then episodes), else the episode
        bootstrap's. (An episode-level interval beside a seed-level p understated the
        uncertainty the p accounts for.)"""
        if self.seed_level is not None:
            return self.seed_level.ci_low, self.seed_level.ci_high
        return self.ci_low, self.ci_high

    def p_value(self, field: str) -> float:
        """Raw p of test ``field`` (e.g. ``"p_ttest"``; Wilcoxon's is at least the t-test's);
        with several training seeds, the
        largest of it, the hierarchical bootstrap's p and the per-seed t-test's p (every
        level must agree: with 2-3 seeds the bootstrap can only draw a few seed means and
        its p alone came out "significant" in 16-29% of comparisons of equal systems). NaN
        stays NaN (counted as not significant everywhere)."""
        p = float(getattr(self, field))
        if field == "p_wilcoxon" and self.wilcoxon_against_mean:
            return 1.0
        if field == "p_wilcoxon" and not math.isnan(self.p_ttest):
            # signed ranks test a shift of the differences, not their mean: with equal means
            # and skewed differences they called "A better" in 35% of comparisons; a verdict
            # on mean accuracy needs the mean's test to agree
            p = max(p, float(self.p_ttest))
        if self.seed_level is None or math.isnan(p):
            return p
        seeds = self.seed_level.p_seeds
        return max(p, self.seed_level.p_bootstrap, 0.0 if math.isnan(seeds) else seeds)

    @property
    def wilcoxon_against_mean(self) -> bool:
        """Whether the signed ranks favour the side with the lower mean (B wins most episodes
        by a little, A a few by a lot): then Wilcoxon's p is no evidence for the order by
        mean accuracy that tables and ranks use, and :meth:`p_value` gives 1 for it."""
        return self.wilcoxon_sign * self.diff < 0

    def resolution_limited(self, field: str) -> bool:
        """Whether :meth:`p_value` of ``field`` is the hierarchical bootstrap's floor
        ``1/(n_boot + 1)`` while every other level's p is below it: the true p is smaller
        than the resampling can show, so a verdict there is bounded by ``--bootstrap``."""
        sl, raw = self.seed_level, float(getattr(self, field))
        if sl is None or math.isnan(raw) or sl.p_bootstrap > sl.p_floor:
            return False
        return raw < sl.p_floor and (math.isnan(sl.p_seeds) or sl.p_seeds < sl.p_floor)


def compare_paired(
    episode_a: np.ndarray,
    episode_b: np.ndarray,
    correct_a: np.ndarray | None = None,
    correct_b: np.ndarray | None = None,
    *,
    query_episodes: np.ndarray | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> PairedComparison:
    """Every paired statistic of A vs B.

    Args:
        episode_a, episode_b: ``[E]`` per-episode accuracies as fractions, same episode order.
        correct_a, correct_b: ``[Q]`` per-query correctness, same query order (optional; without
            them McNemar is reported as ``p = nan``).
        query_episodes: ``[Q]`` the episode of each query: McNemar is then clustered by
            episode where episodes hold several queries (:func:`mcnemar`).
    """
    diff = _paired(episode_a, episode_b)
    low, high = bootstrap_mean_ci(diff, n_boot=n_boot, seed=seed)
    _, p_t = paired_ttest(episode_a, episode_b)
    _, p_w = wilcoxon_signed_rank(episode_a, episode_b)
    w_sign = signed_rank_sign(episode_a, episode_b)
    if correct_a is not None and correct_b is not None:
        n10, n01, p_m, how = mcnemar(correct_a, correct_b, query_episodes)
        nq = int(np.asarray(correct_a).size)
    else:
        n10, n01, p_m, how, nq = 0, 0, math.nan, "n/a", 0
    return PairedComparison(
        acc_a=100 * float(np.mean(episode_a)),
        acc_b=100 * float(np.mean(episode_b)),
        diff=100 * float(diff.mean()),
        ci_low=100 * low,
        ci_high=100 * high,
        p_ttest=p_t,
        p_wilcoxon=p_w,
        wilcoxon_sign=w_sign,
        p_mcnemar=p_m,
        mcnemar_a_only=n10,
        mcnemar_b_only=n01,
        mcnemar_method=how,
        episodes=int(diff.size),
        queries=nq,
    )
