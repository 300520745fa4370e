"""Paired statistics, Holm and seed spreads: hand-checked cases and scipy directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fsarbench.stats import paired
from fsarbench.stats.multiple import holm
from fsarbench.stats.paired import (
    MCNEMAR_EXACT_BELOW,
    bootstrap_mean_ci,
    compare_paired,
    mcnemar,
    paired_ttest,
    wilcoxon_signed_rank,
)
from fsarbench.stats.seeds import seed_mean_std

# -- paired t-test --------------------------------------------------------------------------


def test_ttest_hand_checked() -> None:
    # d = [1, 2, 3, 4]: mean 2.5, sample sd sqrt(5/3), t = 2.5 / (sd / 2) = 3.8730; df = 3.
    a, b = np.array([2.0, 4.0, 6.0, 8.0]), np.array([1.0, 2.0, 3.0, 4.0])
    t, p = paired_ttest(a, b)
    assert t == pytest.approx(2.5 / (math.sqrt(5 / 3) / 2))
    assert t == pytest.approx(3.872983, abs=1e-6)
    assert p == pytest.approx(0.030466, abs=1e-6)  # 2 * P(T_3 > 3.873), from t tables


def test_ttest_matches_scipy_on_random_episodes() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, 500) / 5
    b = np.clip(a - rng.integers(-1, 2, 500) / 5, 0, 1)
    t, p = paired_ttest(a, b)
    ref = stats.ttest_rel(a, b)
    assert (t, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)


def test_ttest_degenerate_differences() -> None:
    x = np.array([0.2, 0.4, 1.0])
    assert paired_ttest(x, x) == (0.0, 1.0)
    t, p = paired_ttest(x + 0.2, x)
    assert t == math.inf and p == 0.25  # three equal differences: the sign-flip test's p


def test_constant_difference_p_is_the_exact_sign_flip_test() -> None:
    """Brute force over every sign pattern: the share at least as extreme as the observed
    (all equal) differences' mean."""
    import itertools

    from fsarbench.stats.exact import constant_difference_p

    for n in range(1, 9):
        means = [abs(sum(signs)) for signs in itertools.product((-1, 1), repeat=n)]
        assert constant_difference_p(n) == sum(m >= n for m in means) / len(means)
    assert paired_ttest(np.full(6, 0.6), np.full(6, 0.4))[1] == 2.0**-5 < 0.05
    assert paired_ttest(np.full(5, 0.4), np.full(5, 0.6)) == (-math.inf, 2.0**-4)


def test_unequal_lengths_rejected() -> None:
    with pytest.raises(ValueError, match="equal length"):
        paired_ttest(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        paired_ttest(np.zeros(0), np.zeros(0))


# -- Wilcoxon -------------------------------------------------------------------------------


def test_wilcoxon_hand_checked() -> None:
    # Five positive distinct differences: W- = 0, exact two-sided p = 2 / 2^5.
    w, p = wilcoxon_signed_rank(np.array([1.0, 2, 3, 4, 5]), np.zeros(5))
    assert w == 0.0
    assert p == pytest.approx(2 / 32)


def test_wilcoxon_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(300), rng.random(300) * 0.9
    w, p = wilcoxon_signed_rank(a, b)
    ref = stats.wilcoxon(a - b)
    assert (w, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)


def test_wilcoxon_ranks_episode_accuracies_as_exact_fractions() -> None:
    """Float differences of episode accuracies (0.6 - 0.4 != 0.2 - 0.0) ranked true ties
    apart: p 0.0751 against 0.0425 on the integer counts for 100 simulated episodes."""
    rng = np.random.default_rng(3)
    hits_a = rng.binomial(5, 0.65, 100)
    hits_b = rng.binomial(5, 0.58, 100)
    _, p = wilcoxon_signed_rank(hits_a / 5, hits_b / 5)
    ref = stats.wilcoxon(hits_a - hits_b)  # integer counts: exact ties
    assert p == pytest.approx(ref.pvalue, rel=1e-12)
    # seed means of equal accuracies differ by 1e-16 in floats: still zero differences
    a = np.array([(1.0 + 0.2) / 2, 0.8, 0.6, 0.4])
    b = np.array([(0.8 + 0.4) / 2, 0.2, 0.2, 0.0])
    assert wilcoxon_signed_rank(a, b) == pytest.approx(stats.wilcoxon([0.6, 0.4, 0.4])[:2])


def test_wilcoxon_all_ties_is_p_one() -> None:
    x = np.array([0.2, 0.4])
    assert wilcoxon_signed_rank(x, x) == (0.0, 1.0)


# -- bootstrap ------------------------------------------------------------------------------


def test_bootstrap_seeded_and_sensible() -> None:
    rng = np.random.default_rng(2)
    d = rng.normal(0.3, 1.0, 400)
    low, high = bootstrap_mean_ci(d, seed=5)
    assert (low, high) == bootstrap_mean_ci(d, seed=5)
    assert (low, high) != bootstrap_mean_ci(d, seed=6)
    assert low < d.mean() < high
    normal_half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert (high - low) / 2 == pytest.approx(normal_half, rel=0.15)


def test_bootstrap_matches_slow_percentile_bootstrap() -> None:
    d = np.random.default_rng(3).normal(0.0, 1.0, 60)
    low, high = bootstrap_mean_ci(d, n_boot=4000, seed=0)
    rng = np.random.default_rng(123)
    means = [d[rng.integers(0, d.size, d.size)].mean() for _ in range(4000)]
    ref_low, ref_high = np.percentile(means, [2.5, 97.5])
    assert low == pytest.approx(ref_low, abs=0.05)
    assert high == pytest.approx(ref_high, abs=0.05)


def _scipy_bootstrap(d: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    res = stats.bootstrap(
        (d,),
        np.mean,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
        batch=200,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@pytest.mark.parametrize(
    ("n", "n_boot", "level"),
    [(10_000, 2000, 0.95), (37, 999, 0.9), (300, 201, 0.95), (2, 50, 0.95), (70_000, 200, 0.99)],
)
def test_bootstrap_equals_scipy_to_the_bit(n: int, n_boot: int, level: float, monkeypatch) -> None:
    # the resample positions are drawn once per (n, n_boot, seed) and reused: the interval must
    # stay scipy's own, bit for bit, for every comparison that reuses them (and after eviction)
    monkeypatch.setattr(paired, "_INDICES", {})
    monkeypatch.setattr(paired, "_BOOTSTRAPS", {})
    rng = np.random.default_rng(n)
    for seed in (0, 0, 3):
        d = (rng.integers(0, 6, n) - rng.integers(0, 6, n)) / 5  # episode accuracy differences
        assert bootstrap_mean_ci(d, n_boot=n_boot, level=level, seed=seed) == _scipy_bootstrap(
            d, n_boot, level, seed
        )
    monkeypatch.setattr(paired, "_INDEX_BYTES", 1)  # too large to keep: drawn batch by batch
    d = rng.normal(0.1, 1.0, n)
    assert bootstrap_mean_ci(d, n_boot=n_boot, level=level, seed=1) == _scipy_bootstrap(
        d, n_boot, level, 1
    )
    assert (n, n_boot, 1) not in paired._INDICES


def test_bootstrap_constant_difference() -> None:
    assert bootstrap_mean_ci(np.full(10, 0.2)) == (0.2, 0.2)


# -- McNemar --------------------------------------------------------------------------------


def test_mcnemar_exact_hand_checked() -> None:
    # 3 discordant pairs, all favouring A: p = 2 * 0.5^3.
    a = np.array([1, 1, 1, 1, 0], bool)
    b = np.array([0, 0, 0, 1, 0], bool)
    assert mcnemar(a, b) == (3, 0, pytest.approx(0.25), "exact")
    # 8 vs 2: p = 2 * P(X <= 2 | n=10, 1/2) = 2 * (1 + 10 + 45) / 1024.
    a = np.array([1] * 8 + [0] * 2 + [1] * 5, bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5, bool)
    n10, n01, p, how = mcnemar(a, b)
    assert (n10, n01, how) == (8, 2, "exact")
    assert p == pytest.approx(112 / 1024)


def test_mcnemar_chi_square_hand_checked() -> None:
    a = np.array([1] * 30 + [0] * 10 + [1] * 50, bool)
    b = np.array([0] * 30 + [1] * 10 + [1] * 50, bool)
    n10, n01, p, how = mcnemar(a, b)
    assert (n10, n01, how) == (30, 10, "chi2-cc")
    chi2 = (abs(30 - 10) - 1) ** 2 / 40  # 9.025
    assert p == pytest.approx(math.erfc(math.sqrt(chi2 / 2)))  # chi2(1) survival, by hand
    assert MCNEMAR_EXACT_BELOW <= 30 + 10


def test_mcnemar_no_discordance() -> None:
    a = np.array([1, 0, 1], bool)
    assert mcnemar(a, a) == (0, 0, 1.0, "exact")


def test_mcnemar_with_one_query_per_episode_is_the_plain_test() -> None:
    rng = np.random.default_rng(0)
    for n in (12, 400):
        a, b = rng.random(n) < 0.7, rng.random(n) < 0.6
        assert mcnemar(a, b, np.arange(n)) == mcnemar(a, b)


def test_clustered_mcnemar_exact_hand_checked() -> None:
    # episodes of 3 queries; per-episode discordance d = [2, -1, 3, 0]: sum 4. Of the 8 sign
    # patterns of (2, 1, 3), sums are +-6, +-4, +-2, 0, 0: |sum| >= 4 in 4 of 8, p = 0.5
    a = np.array([1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1], bool)
    b = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1], bool)
    episodes = np.repeat(np.arange(4), 3)
    assert mcnemar(a, b, episodes) == (5, 1, 0.5, "clustered-exact")
    # unclustered, the same queries give the binomial 5 vs 1: p = 2 * 7/64
    assert mcnemar(a, b) == (5, 1, pytest.approx(14 / 64), "exact")
    assert mcnemar(a, a, episodes) == (0, 0, 1.0, "clustered-exact")


def test_clustered_mcnemar_chi_square_hand_checked() -> None:
    # 30 discordant episodes of 5 queries: 20 with d = +2, 10 with d = -1, 10 concordant
    a = np.concatenate([[1, 1, 0, 0, 0]] * 20 + [[0, 1, 1, 1, 1]] * 10 + [[1] * 5] * 10)
    b = np.concatenate([[0, 0, 0, 0, 0]] * 20 + [[1, 1, 1, 1, 1]] * 10 + [[1] * 5] * 10)
    n10, n01, p, how = mcnemar(a.astype(bool), b.astype(bool), np.repeat(np.arange(40), 5))
    assert (n10, n01, how) == (40, 10, "clustered-chi2")
    chi2 = (20 * 2 - 10) ** 2 / (20 * 4 + 10 * 1)  # (sum d)^2 / sum d^2 = 900 / 90
    assert p == pytest.approx(math.erfc(math.sqrt(chi2 / 2)))


def test_clustered_mcnemar_holds_its_level_where_the_plain_test_does_not() -> None:
    """Two equally good methods on 5-query episodes whose difficulty varies: the plain test
    treats the 5 queries of an episode as independent and rejects far more often than 5%."""
    rng = np.random.default_rng(7)
    episodes = np.repeat(np.arange(300), 5)
    plain = clustered = 0
    trials = 300
    for _ in range(trials):
        # per episode one of the methods gets all its queries right, at random (a shared
        # support set that suits one method's features): discordance comes in blocks
        favoured = rng.random(300) < 0.5
        right = rng.random((300, 5)) < 0.6
        a = np.where(favoured[:, None], True, right).ravel()
        b = np.where(favoured[:, None], right, True).ravel()
        plain += mcnemar(a, b)[2] < 0.05
        clustered += mcnemar(a, b, episodes)[2] < 0.05
    assert plain / trials > 0.15  # 0.20 here
    assert clustered / trials < 0.09


def test_mcnemar_refuses_episode_ids_of_another_length() -> None:
    a = np.array([1, 0, 1, 1], bool)
    with pytest.raises(ValueError, match="one episode id per query"):
        mcnemar(a, ~a, np.arange(3))


# -- Holm -----------------------------------------------------------------------------------


def test_holm_known_set() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(.., 1*0.04)
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_textbook_example() -> None:
    # Holm (1979)-style example: with alpha 0.05 only the smallest two are rejected.
    p = [0.01, 0.02, 0.03, 0.04, 0.05]
    adjusted = holm(p)
    np.testing.assert_allclose(adjusted, [0.05, 0.08, 0.09, 0.09, 0.09])
    assert list(adjusted <= 0.05) == [True, False, False, False, False]


def _slow_holm(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_holm_matches_slow_version_and_caps_at_one() -> None:
    rng = np.random.default_rng(4)
    for _ in range(50):
        p = list(rng.random(rng.integers(1, 12)) ** 3)
        np.testing.assert_allclose(holm(p), _slow_holm(p))
    assert holm([0.6, 0.7])[0] == 1.0


def test_holm_ignores_nan_and_rejects_bad_input() -> None:
    out = holm([0.01, math.nan, 0.04])
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.04])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.5])


# -- seeds and the combined comparison -----------------------------------------------------


def test_seed_mean_std() -> None:
    s = seed_mean_std([70.0, 72.0, 74.0])
    assert (s.mean, s.std, s.n) == (72.0, 2.0, 3)
    assert "training seed" in s.label
    assert seed_mean_std([70.0]).std == 0.0
    with pytest.raises(ValueError):
        seed_mean_std([])


def test_compare_paired_consistent_with_parts() -> None:
    rng = np.random.default_rng(5)
    qa = rng.random(1000) < 0.7
    qb = rng.random(1000) < 0.6
    ea, eb = qa.reshape(200, 5).mean(1), qb.reshape(200, 5).mean(1)
    c = compare_paired(ea, eb, qa, qb, seed=1)
    assert c.diff == pytest.approx(100 * (ea.mean() - eb.mean()))
    assert c.acc_a == pytest.approx(100 * qa.mean())
    assert c.ci_low < c.diff < c.ci_high
    assert c.p_ttest == pytest.approx(stats.ttest_rel(ea, eb).pvalue)
    assert c.p_mcnemar == pytest.approx(mcnemar(qa, qb)[2])
    assert (c.episodes, c.queries) == (200, 1000)


def test_constant_groups_p_is_the_exact_permutation_test() -> None:
    """Brute force over every split of the pooled values into the two group sizes."""
    import itertools

    from fsarbench.stats.exact import constant_groups_p
    from fsarbench.stats.hierarchical import seed_level_comparison

    for n_a, n_b in ((2, 2), (3, 3), (2, 3), (4, 2), (3, 5)):
        values = [1.0] * n_a + [0.0] * n_b
        observed = abs(np.mean(values[:n_a]) - np.mean(values[n_a:]))
        splits = list(itertools.combinations(range(n_a + n_b), n_a))
        extreme = sum(
            abs(
                np.mean([values[i] for i in s])
                - np.mean([values[i] for i in range(n_a + n_b) if i not in s])
            )
            >= observed - 1e-12
            for s in splits
        )
        assert constant_groups_p(n_a, n_b) == pytest.approx(extreme / len(splits))
    # unpaired seeds whose means are constant on each side: Welch gave p = 0
    level = seed_level_comparison(
        np.full((2, 10), 0.6), np.full((2, 10), 0.4), paired=False, n_boot=50
    )
    assert level.p_seeds == pytest.approx(1 / 3) and "Welch" in level.seed_test


def test_a_wilcoxon_p_whose_ranks_favour_the_lower_mean_is_no_evidence_for_the_mean():
    """B wins 500 episodes by a little and A 150 by a lot: the mean favours A, the signed
    ranks B (p ~ 1e-5), and 'A better' was printed and ranked from Wilcoxon's p."""
    from fsarbench.stats.paired import compare_paired, signed_rank_sign

    a = np.concatenate([np.full(500, 0.4), np.full(150, 1.0), np.full(350, 0.2)])
    b = np.concatenate([np.full(500, 0.6), np.full(150, 0.0), np.full(350, 0.2)])
    c = compare_paired(a, b)
    assert c.diff > 0 and c.p_wilcoxon < 1e-3 and signed_rank_sign(a, b) == -1
    assert c.wilcoxon_against_mean and c.p_value("p_wilcoxon") == 1.0
    assert c.p_value("p_ttest") == c.p_ttest  # the t-test's sign is the mean's
    same = compare_paired(a, a * 0.5)
    assert not same.wilcoxon_against_mean and same.p_value("p_wilcoxon") == same.p_wilcoxon
