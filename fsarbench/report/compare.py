"""Paired comparison of two systems across settings, Holm-adjusted over the settings compared."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsarbench.report.records import (
    STALE_MARK,
    Entry,
    Setting,
    UnpairedError,
    episode_accuracy,
    left_out_entry,
    query_correct,
    seed_matrix,
)
from fsarbench.stats.hierarchical import seed_level_comparison
from fsarbench.stats.multiple import holm
from fsarbench.stats.paired import DEFAULT_BOOTSTRAP, PairedComparison, compare_paired

__all__ = [
    "TESTS",
    "SettingComparison",
    "compare_entries",
    "compare_systems",
    "paired_by_position",
    "resolution_warning",
    "verdict",
    "verdict_level",
]

#: test name -> the PairedComparison field holding its raw p-value.
TESTS = {"ttest": "p_ttest", "wilcoxon": "p_wilcoxon", "mcnemar": "p_mcnemar"}


@dataclass(frozen=True)
class SettingComparison:
    """A vs B in one setting: raw statistics plus Holm-adjusted p-values (by test name)."""

    setting: Setting
    a: Entry
    b: Entry
    stats: PairedComparison
    adjusted: dict[str, float]
    test: str
    alpha: float

    @property
    def verdict(self) -> str:
        if self.test == "wilcoxon" and self.stats.wilcoxon_against_mean:
            favoured = self.a.system if self.stats.diff < 0 else self.b.system
            return f"no significant difference (the signed ranks favour {favoured})"
        return verdict(
            self.stats.diff, self.adjusted[self.test], self.alpha, self.a.system, self.b.system
        )


#: The verdict where the chosen test has no p-value (McNemar across other training seeds, a
#: test on one episode): it was never run, so it says nothing about a difference.
NOT_TESTED = "not tested (no p-value for this test here)"


def verdict(
    diff: float, p_adjusted: float, alpha: float, name_a: str = "A", name_b: str = "B"
) -> str:
    """``"<A> better"``, ``"<B> better"``, ``"no significant difference"`` or, without a
    p-value, :data:`NOT_TESTED` (it printed "no significant difference" for a 36.8-point
    gap McNemar never tested)."""
    if math.isnan(p_adjusted):
        return NOT_TESTED
    if p_adjusted > alpha or diff == 0:
        return "no significant difference"
    return f"{name_a} better" if diff > 0 else f"{name_b} better"


def verdict_level(comparison: PairedComparison) -> str:
    """What the verdict rests on, for printing beside it."""
    if comparison.seed_level is None:
        return "episode level (one training seed each: seed variance untested)"
    sl = comparison.seed_level
    if not sl.both_sides:
        return (
            f"episode level, seeds of one side only ({sl.seeds_a} vs {sl.seeds_b} seeds: the "
            "one-seed side's seed variance is untested)"
        )
    return f"seed and episode level ({sl.seeds_a} vs {sl.seeds_b} seeds; {sl.seed_test})"


def _check_paired(a: Entry, b: Entry) -> None:
    differences = a.episodes_key.differences(b.episodes_key)
    if differences:
        raise UnpairedError(
            f"cannot compare {a.system} and {b.system} in {a.setting.label}: their records were "
            f"evaluated on different episodes ({differences}), so a paired test does not apply. "
            "Re-evaluate both on the same manifest (same test list, readable videos, way, "
            "shot, queries, episodes and seed; 'python -m fsarbench data check' lists "
            "unreadable videos)."
        )


def compare_entries(
    run_dir: str | Path, a: Entry, b: Entry, *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> PairedComparison:
    """Paired statistics of entry ``a`` vs ``b`` (same manifest) from their per-query rows.

    Per-episode accuracies are averaged over training seeds. When both entries have the
    same training seeds (or one record each, whatever its seed), McNemar pairs each seed's
    queries with the same seed's (clustered by episode:
    :func:`~fsarbench.stats.paired.mcnemar`), and the per-seed test is paired; with other
    seeds McNemar is skipped (p = NaN) and the per-seed test is Welch's. With several
    training seeds on either side, seed-level statistics are added
    (:func:`fsarbench.stats.hierarchical.seed_level_comparison`) and verdicts use them too.
    """
    _check_paired(a, b)
    ep_a, ep_b = episode_accuracy(run_dir, a), episode_accuracy(run_dir, b)
    # one record a side pairs its queries whatever its seed label (0 vs 1, None from eval)
    single = len(a.records) == 1 and len(b.records) == 1
    same_seeds = single or [r.train_seed for r in a.records] == [r.train_seed for r in b.records]
    ca = cb = episodes = None
    if same_seeds:
        per_seed = query_correct(run_dir, a)
        ca, cb = np.concatenate(per_seed), np.concatenate(query_correct(run_dir, b))
        # a query's cluster is its episode, in every seed: the seeds share the episodes
        episodes = np.concatenate([np.arange(len(x)) * len(ep_a) // len(x) for x in per_seed])
    result = compare_paired(ep_a, ep_b, ca, cb, query_episodes=episodes, n_boot=n_boot, seed=seed)
    if len(a.records) > 1 or len(b.records) > 1:
        level = seed_level_comparison(
            seed_matrix(run_dir, a),
            seed_matrix(run_dir, b),
            paired=same_seeds,
            n_boot=n_boot,
            seed=seed,
        )
        result = dataclasses.replace(result, seed_level=level)
    return result


def resolution_warning(
    comparisons: list[tuple[PairedComparison, float]], test: str, alpha: float, n_boot: int
) -> str | None:
    """A warning when verdicts are held back by the hierarchical bootstrap's resolution.

    ``comparisons``: each comparison of one Holm family with its adjusted ``test`` p. With
    ``n_boot`` resamples the seed-level p is never below ``1/(n_boot + 1)``; where that floor
    is the p Holm adjusted (:meth:`PairedComparison.resolution_limited`) and the adjusted p
    misses ``alpha``, the data may well be significant: more resamples would say."""
    field = TESTS[test]
    held = [c for c, adjusted in comparisons if c.resolution_limited(field) and adjusted > alpha]
    if not held:
        return None
    family = sum(not math.isnan(c.p_value(field)) for c, _ in comparisons)
    needed = math.ceil(2 * family / alpha)
    return (
        f"{len(held)} verdict(s) are held back by the seed-level bootstrap's "
        f"resolution: with --bootstrap {n_boot} its p is never below 1/{n_boot + 1}, and "
        f"Holm over {family} test(s) needs p <= {alpha}/{family} at best. Rerun with "
        f"--bootstrap {needed} or more to resolve them."
    )


def _find(entries: list[Entry], name: str, stale_too: bool) -> list[Entry]:
    """The entries of system ``name``, and in settings where it has none, those of
    ``name ‡stale`` (records of other code): 'compare sgtm-otam otam' found nothing after a
    code change and asked for the mark to be typed. Their rows and verdicts keep the mark."""
    found = [e for e in entries if e.system == name]
    if not stale_too and found:  # reports pass both names, each its own system
        return found
    current = {e.setting for e in found}
    stale = f"{name} {STALE_MARK}"
    return found + [e for e in entries if e.system == stale and e.setting not in current]


def compare_systems(
    run_dir: str | Path,
    entries: list[Entry],
    name_a: str,
    name_b: str,
    *,
    alpha: float = 0.05,
    test: str = "ttest",
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    one_sided: list[str] | None = None,
    stale_too: bool = False,
    left_out: Sequence[str] = (),
    unpaired: list[Setting] | None = None,
) -> list[SettingComparison]:
    """Compare systems ``name_a`` and ``name_b`` in every setting both have (``stale_too``:
    a name's ``‡stale`` entries stand in where it has no current one, as a user typing the
    plain name means).

    The family for Holm–Bonferroni is the set of settings compared (separately per test).
    ``one_sided``: when given, receives a line per setting only one of the two has (e.g. a
    shard run with other ``--episodes``; ``left_out``: the notes of the records left out,
    which such a line names), where one entry would be both sides (a name's ``‡stale``
    stand-in against that stale system), and where the two were evaluated on other
    episodes: none of them is compared or in the family. ``unpaired`` (with ``one_sided``)
    receives the settings of that last kind (a figure names them under its plot).

    Raises:
        ValueError: a name has no records, or the two share no setting.
        UnpairedError: records of a shared setting come from different manifests (every
            shared setting's, when ``one_sided`` is given).
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {sorted(TESTS)}, not {test!r}")
    known = sorted({e.system for e in entries})
    by_a = {e.setting: e for e in _find(entries, name_a, stale_too)}
    by_b = {e.setting: e for e in _find(entries, name_b, stale_too)}
    for name, found in ((name_a, by_a), (name_b, by_b)):
        configs = [k for k in known if k.startswith(f"{name} @")]
        if not found and configs:
            raise ValueError(
                f"{name} has {len(configs)} configurations in these records "
                f"({', '.join(configs)}; the report's provenance of each names its "
                "hyper-parameters and recipe): compare one by its full name"
            )
        if not found and not known:
            raise ValueError(
                f"no records for {name!r}: this results folder holds none (run 'python -m "
                "fsarbench run ...' into it first, or name another with --runs)"
            )
        if not found:
            raise ValueError(f"no records for {name!r}; systems with records: {', '.join(known)}")
    shared = sorted(set(by_a) & set(by_b))
    if not shared:
        raise ValueError(
            f"{name_a!r} and {name_b!r} share no setting: {name_a} has "
            f"{[s.label for s in sorted(by_a)]}, {name_b} has {[s.label for s in sorted(by_b)]}"
        )
    if one_sided is not None:
        _note_one_sided(entries, (name_a, by_a), (name_b, by_b), left_out, one_sided)
        shared = _comparable(by_a, by_b, shared, one_sided, unpaired)
    raw = [compare_entries(run_dir, by_a[s], by_b[s], n_boot=n_boot, seed=seed) for s in shared]
    adjusted = {t: holm([r.p_value(f) for r in raw]) for t, f in TESTS.items()}
    return [
        SettingComparison(
            s, by_a[s], by_b[s], r, {t: float(adjusted[t][i]) for t in TESTS}, test, alpha
        )
        for i, (s, r) in enumerate(zip(shared, raw))
    ]


def _note_one_sided(
    entries: list[Entry],
    side_a: tuple[str, dict[Setting, Entry]],
    side_b: tuple[str, dict[Setting, Entry]],
    left_out: Sequence[str],
    notes: list[str],
) -> None:
    """A note per setting only one side has: why the other has none there (another
    configuration, a record left out, or no record)."""
    gone = {(e.system, e.setting) for n in left_out if (e := left_out_entry(n)) is not None}
    unreadable = sum(left_out_entry(n) is None for n in left_out)
    for (name, mine), (other, theirs) in ((side_a, side_b), (side_b, side_a)):
        base = other.split(" @", 1)[0]
        for s in sorted(set(mine) - set(theirs)):
            configs = sorted(
                e.system for e in entries if e.setting == s and e.system.startswith(f"{base} @")
            )
            if configs:
                why = (
                    f"{base} has {len(configs)} other configuration(s) there "
                    f"({', '.join(configs)}): compare one by its full name"
                )
            elif {(other, s), (f"{other} {STALE_MARK}", s)} & gone:
                why = f"{other}'s record there was left out (the note above says why)"
            elif unreadable:
                why = (
                    f"only {name} has readable records there ({unreadable} record file(s) "
                    "could not be read: the notes above name them)"
                )
            else:
                why = f"only {name} has records there"
            notes.append(f"{s.label}: {why}, so it is not compared")


def _comparable(
    by_a: dict[Setting, Entry],
    by_b: dict[Setting, Entry],
    shared: list,
    notes: list[str],
    unpaired_settings: list[Setting] | None = None,
) -> list:
    """The ``shared`` settings that can be compared; a note for each left out: one entry on
    both sides (``compare NAME "NAME ‡stale"`` where NAME has only the stale record: it was
    paired with itself and counted in Holm's family), or other episodes on the two sides
    (those settings also go to ``unpaired_settings``, where given).

    Raises:
        ValueError: one entry is both sides in every shared setting.
        UnpairedError: the first setting's, when no shared setting is paired.
    """
    kept, unpaired = [], []
    for s in shared:
        a, b = by_a[s], by_b[s]
        if a is b:
            notes.append(
                f"{s.label}: {a.system} is both sides there (the other name has no current "
                "record there), so it is not compared"
            )
            continue
        try:
            _check_paired(a, b)
        except UnpairedError as err:
            unpaired.append(err)
            notes.append(f"{s.label}: {err}")
            if unpaired_settings is not None:
                unpaired_settings.append(s)
            continue
        kept.append(s)
    if not kept and unpaired:
        raise unpaired[0]
    if not kept:
        raise ValueError(
            "nothing to compare: in every shared setting one record is both sides (the notes "
            "above name them)"
        )
    return kept


def paired_by_position(a: Entry, b: Entry) -> bool:
    """Whether entries ``a`` and ``b`` were evaluated on other features files (``file_md5``)
    that name no test list: their episodes are paired by index alone (a shuffled copy paired
    at p 4e-52)."""
    ra, rb = a.records[0], b.records[0]
    files = ra.features.get("file_md5"), rb.features.get("file_md5")
    return (
        None not in files
        and files[0] != files[1]
        and not a.episodes_key.test_list_md5
        and not b.episodes_key.test_list_md5
    )
