"""Leaderboard: systems ranked per setting, ties where differences are not significant.

Ranking rule (per setting, systems sorted by accuracy): the leader has rank 1; the systems
directly below it that are not significantly different from it (paired test, Holm-adjusted)
share rank 1; any other system shares the rank of the system directly above it when not
significantly different from it (and that system is not in the leader's group), otherwise it
takes its position (competition ranking, "1, 1, 3"). Ranks never go back up down the table: a
system below one that differs from the leader does not rejoin rank 1 (it was "1, 2, 1"). The
Holm family is every comparison made in that setting.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fsarbench.io import atomic_write_text
from fsarbench.report.compare import (
    TESTS,
    compare_entries,
    paired_by_position,
    resolution_warning,
)
from fsarbench.report.markdown import md_cell_text
from fsarbench.report.recipe_changes import recipe_changes_text
from fsarbench.report.records import (
    OUTSIDE_MARK,
    Entry,
    Setting,
    UnpairedError,
    verified_entries,
)
from fsarbench.stats.multiple import holm
from fsarbench.stats.paired import DEFAULT_BOOTSTRAP, PairedComparison, format_p
from fsarbench.stats.rounding import difference, fixed, rounded

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Standing",
    "rank_setting",
    "build_leaderboard",
    "leaderboard_frame",
    "leaderboard_markdown",
    "ranking_caveats",
    "write_leaderboard",
    "untested_note",
    "variants_note",
    "OUTSIDE_MARK",
]

#: The note explaining the marker of an outside result's name (:data:`OUTSIDE_MARK`).
OUTSIDE_NOTE = (
    f"{OUTSIDE_MARK}: an outside result, added from a result bundle (`leaderboard --add`) "
    "that verified: its accuracies and CIs were recomputed here from its per-query "
    "predictions on the official episodes; its code was not run here."
)


@dataclass(frozen=True)
class Standing:
    """One system's place in one setting (``vs_leader`` is ``None`` for the leader)."""

    rank: int
    entry: Entry
    vs_leader: PairedComparison | None
    p_leader_adjusted: float
    p_above_adjusted: float


def _assign_ranks(sig_leader: list[bool], sig_above: list[bool]) -> list[int]:
    """Ranks from significance flags (index 0 is the leader; both lists have index 0 unused)."""
    ranks = [1]
    for i in range(1, len(sig_leader)):
        if not sig_leader[i] and ranks[i - 1] == 1:
            ranks.append(1)
        elif i >= 2 and ranks[i - 1] != 1 and not sig_above[i]:
            ranks.append(ranks[i - 1])
        else:
            ranks.append(i + 1)
    return ranks


def rank_setting(
    run_dir: str | Path,
    entries: list[Entry],
    *,
    alpha: float = 0.05,
    test: str = "ttest",
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    untested: list[str] | None = None,
    family: list[tuple[PairedComparison, float]] | None = None,
) -> list[Standing]:
    """Rank the ``entries`` of one setting (all on one manifest) by accuracy.

    A comparison without a ``test`` p-value (McNemar between entries of different training
    seeds, a t-test on one episode) counts as not significant, a tie; ``untested``, when
    given, receives ``"A vs B"`` for each such comparison (see :func:`untested_note`).
    ``family``, when given, receives each comparison of the Holm family with its adjusted
    p (for :func:`~fsarbench.report.compare.resolution_warning`).
    """
    order = sorted(entries, key=lambda e: (-e.accuracy, e.system))
    field = TESTS[test]
    vs_leader = [None] + [
        compare_entries(run_dir, e, order[0], n_boot=n_boot, seed=seed) for e in order[1:]
    ]
    vs_above = [None, None] + [
        compare_entries(run_dir, e, order[i], n_boot=n_boot, seed=seed)
        for i, e in enumerate(order[2:], start=1)
    ]
    tested = [*vs_leader[1:], *vs_above[2:]]  # the Holm family, in this order
    p_values = [c.p_value(field) for c in tested]
    if untested is not None:
        pairs = [(e, order[0]) for e in order[1:]] + [
            (e, order[i]) for i, e in enumerate(order[2:], 1)
        ]
        untested += [
            f"{a.system} vs {b.system}" for (a, b), p in zip(pairs, p_values) if math.isnan(p)
        ]
    adjusted = list(holm(p_values)) if p_values else []
    if family is not None:
        family += zip(tested, adjusted)
    n = len(order) - 1
    p_leader = [math.nan] + adjusted[:n]
    p_above = [math.nan, math.nan] + adjusted[n:]
    ranks = _assign_ranks([p <= alpha for p in p_leader], [p <= alpha for p in p_above])
    return [
        Standing(r, e, c, pl, pa)
        for r, e, c, pl, pa in zip(ranks, order, vs_leader, p_leader, p_above)
    ]


def build_leaderboard(
    run_dir: str | Path,
    entries: list[Entry],
    *,
    left_out: list[str] | None = None,
    untested: dict[Setting, list[str]] | None = None,
    held: list[str] | None = None,
    alpha: float = 0.05,
    test: str = "ttest",
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> dict[Setting, list[Standing]]:
    """Standings of every setting among ``entries``.

    Args:
        left_out: when given, an entry whose records its per-query rows do not give is left
            out (:func:`~fsarbench.report.records.verified_entries`; its setting is ranked
            without it), and a setting whose systems were evaluated on different episodes
            (they cannot be ranked by paired tests) is left out; the reasons are appended
            here. Without it, such an entry or setting raises :class:`UnpairedError`.
        untested: when given, receives per setting the comparisons that had no p-value for
            the test and were counted as ties (:func:`rank_setting`).
        held: when given, receives per setting a line where the seed-level bootstrap's
            resolution holds verdicts back (:func:`~fsarbench.report.compare.resolution_warning`).
    """
    if left_out is not None:
        entries = verified_entries(run_dir, entries, left_out)  # cached: cheap when checked
    by_setting: dict[Setting, list[Entry]] = {}
    for e in entries:
        by_setting.setdefault(e.setting, []).append(e)
    board = {}
    for setting, group in sorted(by_setting.items()):
        if left_out is not None:
            group = _on_shared_episodes(setting, group, left_out)
        pairs: list[str] = []
        family: list = []
        try:
            board[setting] = rank_setting(
                run_dir,
                group,
                untested=pairs,
                family=family,
                alpha=alpha,
                test=test,
                n_boot=n_boot,
                seed=seed,
            )
        except UnpairedError as err:
            if left_out is None:
                raise
            left_out.append(f"the setting: {err}")
            continue
        if pairs and untested is not None:
            untested[setting] = pairs
        if held is not None:
            line = resolution_warning(family, test, alpha, n_boot)
            if line:
                held.append(f"{setting.label}: {line}")
    return board


def _on_shared_episodes(setting: Setting, group: list[Entry], left_out: list[str]) -> list[Entry]:
    """The entries of ``group`` on the test episodes most of them share; the others are left
    out, each named: one record that lost a test video took its whole setting off the
    leaderboard, four current entries on the official episodes included. Without a
    majority (two systems, two sets of episodes) ``group`` is returned whole, and ranking it
    names the setting as one that cannot be ranked."""
    counts = Counter(e.episodes_key for e in group).most_common()
    if len(counts) < 2 or counts[0][1] == counts[1][1]:
        return group
    shared = counts[0][0]
    kept = [e for e in group if e.episodes_key == shared]
    left_out += [
        f"{e.system} in {setting.label}: evaluated on other test episodes (other test videos "
        f"or test list) than the {len(kept)} other system(s) of its setting, so it cannot be "
        "ranked against them by paired tests"
        for e in group
        if e.episodes_key != shared
    ]
    return kept


#: Why a test has no p-value for a comparison, and what to do instead.
_UNTESTED_WHY = {
    "mcnemar": ("McNemar needs the same training seeds on both sides", "use --test ttest"),
    "ttest": ("a paired t-test needs at least two episodes", "evaluate more --episodes"),
    "wilcoxon": ("the Wilcoxon test gave no p-value", "use --test ttest"),
}


def untested_note(test: str, untested: dict[Setting, list[str]]) -> str:
    """One line naming the comparisons that had no ``test`` p-value and why (``""`` when
    none): they count as ties, which a reader took for "tested, not significant"."""
    n = sum(len(pairs) for pairs in untested.values())
    if not n:
        return ""
    why, instead = _UNTESTED_WHY.get(test, (f"{test} gave no p-value", "use --test ttest"))
    where = "; ".join(f"{s.label}: {', '.join(pairs)}" for s, pairs in untested.items())
    return f"{why}: {n} comparison(s) untested, counted as ties ({where}); {instead}"


def variants_note(variants: Iterable[Entry]) -> str:
    """One line naming the systems left out of the ranking as variants (``""`` when none):
    a user's ``my-head[temperature=5.0]`` run from a grid vanished without a word."""
    names = sorted({e.system.removesuffix(f" {e.mark}") if e.mark else e.system for e in variants})
    if not names:
        return ""
    return (
        f"{len(names)} system(s) with hyper-parameter overrides or ablation variants left "
        f"out ({', '.join(names)}): --include-variants ranks them"
    )


def _row(setting: Setting, st: Standing) -> dict:
    e, c = st.entry, st.vs_leader
    seeds = e.seeds
    return {
        "dataset": setting.dataset,
        "track": setting.track,
        "protocol": setting.protocol,
        "way": setting.way,
        "shot": setting.shot,
        "episode_seed": setting.seed,
        "rank": st.rank,
        "method": e.system.removesuffix(f" {OUTSIDE_MARK}"),  # the `outside` column says it
        "accuracy": rounded(e.accuracy),
        "ci95": rounded(e.ci95),
        "seed_std": rounded(seeds.std) if seeds else None,
        "train_seeds": len(e.records),
        "diff_vs_leader": rounded(c.diff) if c else None,
        "diff_ci_low": rounded(c.diff_ci[0]) if c else None,
        "diff_ci_high": rounded(c.diff_ci[1]) if c else None,
        "p_vs_leader_holm": st.p_leader_adjusted,
        # as leaderboard.md prints it: a p below the float range reads "<1e-300", not 0.0
        "p_vs_leader_holm_text": format_p(st.p_leader_adjusted) if c else "",
        "episodes": e.records[0].episodes,
        "queries": setting.queries,
        "synthetic": e.synthetic,
        "outside": e.outside,
        "manifest_hash": e.manifest_hash,
    }


def leaderboard_frame(board: dict[Setting, list[Standing]]) -> pd.DataFrame:
    """One row per (setting, system), in rank order."""
    import pandas as pd

    return pd.DataFrame([_row(s, st) for s, sts in board.items() for st in sts])


def _md_cell(st: Standing) -> list[str]:
    e, c = st.entry, st.vs_leader
    acc = f"{fixed(e.accuracy)} ± {fixed(e.ci95)}"
    seeds = f"{fixed(e.seeds.mean)} ± {fixed(e.seeds.std)} (n={e.seeds.n})" if e.seeds else "-"
    diff = difference(c.diff, *c.diff_ci) if c else "leader"
    p = format_p(st.p_leader_adjusted) if c else "-"
    return [str(st.rank), md_cell_text(e.system), acc, seeds, diff, p]


def leaderboard_markdown(
    board: dict[Setting, list[Standing]],
    *,
    alpha: float = 0.05,
    test: str = "ttest",
    notes: list[str] | tuple[str, ...] = (),
) -> str:
    """Markdown: one section per setting, then ``notes`` (entries and settings left out,
    comparisons without a p-value) as a list."""
    from tabulate import tabulate

    head = [
        "Rank",
        "Method",
        "Acc. ± 95% CI (episodes; seeds and episodes pooled with several seeds)",
        "Mean ± std (training seeds)",
        "Δ vs leader [95% bootstrap CI]",
        f"p vs leader ({test}, Holm)",
    ]
    parts = [
        "# Leaderboard",
        "",
        f"Ranks are shared where a paired {test} (Holm-adjusted within the setting, "
        f"α = {alpha}) finds no significant difference from the leader (rank 1) or from the "
        "system directly above; a long group can therefore hold two systems that differ "
        "significantly from each other ('python -m fsarbench compare A B' tests any two). "
        "See docs/statistics.md.",
        "",
    ]
    for setting, standings in board.items():
        synth = (
            " — synthetic features, not comparable with published numbers"
            if any(st.entry.synthetic for st in standings)
            else ""
        )
        parts += [
            f"## {setting.label}{synth}",
            "",
            tabulate([_md_cell(st) for st in standings], head, tablefmt="github"),
            "",
        ]
    if any(st.entry.outside for sts in board.values() for st in sts):
        parts += [OUTSIDE_NOTE, ""]
    entries = [st.entry for sts in board.values() for st in sts if not st.entry.outside]
    own = [r for e in entries for r in e.records]
    changed = recipe_changes_text(own)
    parts += [changed, ""] if changed else []
    notes = [*notes, *ranking_caveats(board)]
    if notes:
        parts += ["Notes:", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(parts)


def ranking_caveats(board: dict[Setting, list[Standing]]) -> list[str]:
    """What the ranks of ``board`` rest on that a reader cannot see in them: systems of one
    training seed (their seed variance is untested, so equal systems are split more often
    than α says), and pairs evaluated on features files that name no videos (paired by
    position alone). ``compare`` says both for its two systems; ranks and marks did not."""
    single, blind = [], []
    for setting, standings in board.items():
        own = [st.entry for st in standings if not st.entry.outside]
        if len(own) > 1 and any(len(e.records) == 1 for e in own):
            single.append(setting.label)
        if any(paired_by_position(a, b) for i, a in enumerate(own) for b in own[i + 1 :]):
            blind.append(setting.label)
    caveats = []
    if single:
        caveats.append(
            f"Ranks of systems with one training seed rest on episode variance only (in "
            f"{', '.join(single)}): a seed's own effect on accuracy is not tested, so two equal "
            "methods are split more often than α says; several seeds ('run --train-seeds 0 1 "
            "2') test at the seed level."
        )
    if blind:
        caveats.append(
            f"Paired by position only in {', '.join(blind)}: some systems were evaluated on "
            "different features files that name no videos and no test list, so nothing shows "
            "that query i is the same video for both; the ranks assume it."
        )
    return caveats


def write_leaderboard(
    run_dir: str | Path, board: dict[Setting, list[Standing]], **kw
) -> tuple[Path, Path]:
    """Write ``run_dir/leaderboard.md`` and ``run_dir/leaderboard.csv``; return their paths."""
    md, csv = Path(run_dir) / "leaderboard.md", Path(run_dir) / "leaderboard.csv"
    atomic_write_text(md, leaderboard_markdown(board, **kw))
    atomic_write_text(csv, leaderboard_frame(board).to_csv(index=False))
    from fsarbench.experiments.outputs import stale_csv

    stale_csv(csv).unlink(missing_ok=True)  # what a run that replaced records renamed
    return md, csv
