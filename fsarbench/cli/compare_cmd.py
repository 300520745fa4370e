"""``python -m fsarbench compare A B``: paired verdicts per setting, Holm-adjusted."""

from __future__ import annotations

import argparse
import math

from fsarbench.cli.common import UsageError, seed_value
from fsarbench.report.cli_args import (
    add_filter_args,
    add_runs_arg,
    add_stats_args,
    load_filtered_entries,
    print_left_out,
    resamples,
)
from fsarbench.report.compare import (
    TESTS,
    SettingComparison,
    compare_systems,
    paired_by_position,
    resolution_warning,
)
from fsarbench.report.markdown import md_cell_text
from fsarbench.report.recipe_changes import recipe_changes_text
from fsarbench.report.records import STALE_MARK
from fsarbench.report.tables import interval_note, stale_note, test_pool_notes
from fsarbench.stats.paired import DEFAULT_BOOTSTRAP, format_p
from fsarbench.stats.rounding import difference, fixed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="paired comparison of two methods in every setting both have",
        description="For each setting (dataset x way x shot, and track, frame protocol and test "
        "episodes) that both A and B have records "
        "for: both accuracies, the difference A - B with a bootstrap 95% CI, paired t-test, "
        "Wilcoxon and McNemar p-values raw and Holm-adjusted across the settings compared, "
        "and a verdict. Records of the two must share their episodes (manifest hash).",
    )
    p.add_argument("a", help="method (or system) name A")
    p.add_argument("b", help="method (or system) name B")
    add_runs_arg(p)
    add_filter_args(p)
    add_stats_args(p)
    p.add_argument(
        "--bootstrap",
        type=resamples,
        default=DEFAULT_BOOTSTRAP,
        help="bootstrap resamples (seeded; default: %(default)s)",
    )
    p.add_argument("--seed", type=seed_value, default=0, help="bootstrap seed")
    p.set_defaults(func=run)


def _row(c: SettingComparison) -> list[str]:
    s = c.stats
    adj = c.adjusted
    return [
        c.setting.label,
        f"{fixed(s.acc_a)} ± {fixed(c.a.ci95)}{_stale_mark(c.a)}",
        f"{fixed(s.acc_b)} ± {fixed(c.b.ci95)}{_stale_mark(c.b)}",
        difference(s.diff, s.ci_low, s.ci_high),
        # raw: the p that Holm adjusts (with several seeds, the largest of the episode-level,
        # hierarchical bootstrap's and per-seed test's p), so raw and adjusted read together
        *(f"{format_p(s.p_value(TESTS[t]))} / {format_p(adj[t])}" for t in ("ttest", "wilcoxon")),
        f"{format_p(s.p_value(TESTS['mcnemar']))} / {format_p(adj['mcnemar'])} ({_discordant(s)})",
        md_cell_text(c.verdict),
    ]


def _stale_mark(entry) -> str:
    """`` ‡stale`` for an entry made by other code, which stands in for the typed name where
    it has no current one (the row showed its number unmarked under the plain name)."""
    return f" {STALE_MARK}" if entry.stale else ""


def _discordant(s) -> str:
    """``"A:B"`` discordant queries, or ``n/a`` where McNemar did not run (training seeds
    differ): ``(0:0)`` read as "no discordant query"."""
    if math.isnan(s.p_value(TESTS["mcnemar"])):
        return "n/a"
    return f"{s.mcnemar_a_only}:{s.mcnemar_b_only}"


def _family(comps: list[SettingComparison], test: str) -> str:
    """The settings Holm adjusted over: those with a ``test`` p-value (a one-episode
    setting has none and is not counted in the family)."""
    tested = sum(not math.isnan(c.stats.p_value(TESTS[test])) for c in comps)
    if tested == len(comps):
        return f"the {tested} setting(s) compared"
    return f"the {tested} of {len(comps)} setting(s) compared that have a {test} p-value"


def _print_levels(comps: list[SettingComparison], n_boot: int) -> None:
    """Say what each verdict rests on; seed-level statistics where there are several seeds."""
    single = [c for c in comps if c.stats.seed_level is None]
    if single:
        print(
            f"warning: {len(single)} verdict(s) rest on episode-level variance only (one "
            "training seed per system): a different training seed may change them. Train "
            "several (run --train-seeds 0 1 2) for seed-level tests."
        )
    one_side = [c for c in comps if c.stats.seed_level and not c.stats.seed_level.both_sides]
    if one_side:
        print(
            f"warning: {len(one_side)} verdict(s) compare one training seed with several: the "
            "single seed's own seed variance is untested, so a different seed may change "
            "them. Train several seeds of both systems for seed-level tests."
        )
    for c in comps:
        sl = c.stats.seed_level
        if sl is not None:
            print(
                f"Seed level, {c.setting.label}: Δ {difference(sl.diff, sl.ci_low, sl.ci_high)} "
                f"(hierarchical bootstrap over seeds then episodes, p = "
                f"{format_p(sl.p_bootstrap, 1 / n_boot)}); {sl.seed_test}: p = "
                f"{format_p(sl.p_seeds)}. The verdict uses "
                "the largest of the episode-level, hierarchical and per-seed p."
            )


#: Below this many queries on which the two systems differ, a verdict gets a note.
FEW_DISCORDANT = 10


def _print_few_discordant(comps: list[SettingComparison]) -> None:
    """A note under verdicts that rest on a handful of queries where A and B differ (near a
    ceiling): the t-test's p on such data (4 queries in 300 episodes gave 0.045) is an
    approximation the exact McNemar p beside it can contradict (0.125 there)."""
    for c in comps:
        s = c.stats
        discordant = s.mcnemar_a_only + s.mcnemar_b_only
        few = discordant < FEW_DISCORDANT and not math.isnan(s.p_mcnemar)
        if c.verdict.endswith(" better") and few:
            print(
                f"Note: the verdict in {c.setting.label} rests on {discordant} queries where "
                f"{c.a.system} and {c.b.system} differ ({s.mcnemar_a_only}:{s.mcnemar_b_only}) "
                f"of {s.queries}; McNemar's p on them is {format_p(s.p_mcnemar)}. "
                "More episodes would say more."
            )


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    if args.a == args.b:
        raise UsageError(
            f"compare needs two systems; both are {args.a!r} ('python -m fsarbench leaderboard "
            f"--runs {args.runs}' lists them)"
        )
    left_out: list[str] = []
    # a name's '‡stale' records stand in where it has no current one: checked alike (a bad
    # stale record stopped the whole comparison)
    names = {args.a, args.b, f"{args.a} {STALE_MARK}", f"{args.b} {STALE_MARK}"}
    entries = load_filtered_entries(args, left_out=left_out, verify=lambda e: e.system in names)
    for name in (args.a, args.b):
        mine = (name, f"{name} {STALE_MARK}")
        if not any(e.system in mine for e in entries) and any(
            note.startswith(f"{n} in ") for note in left_out for n in mine
        ):
            raise ValueError(
                f"every record of {name!r} under {args.runs} was left out (the notes above say "
                "why): re-run those cells, then compare"
            )
    one_sided: list[str] = []
    try:
        comps = compare_systems(
            args.runs,
            entries,
            args.a,
            args.b,
            alpha=args.alpha,
            test=args.test,
            n_boot=args.bootstrap,
            seed=args.seed,
            one_sided=one_sided,
            stale_too=True,
            left_out=left_out,
        )
    finally:  # the settings left out, also when none is left to compare
        print_left_out(one_sided)
    head = [
        "Setting",
        f"{md_cell_text(args.a)} acc ± CI",
        f"{md_cell_text(args.b)} acc ± CI",
        # episode-level: with several training seeds the leaderboard and report print the
        # wider hierarchical CI of the same pair (the lines under the table give it)
        "Δ (A−B) [95% episode bootstrap CI]",
        "t-test p raw / Holm",
        "Wilcoxon p (≥ t-test's) raw / Holm",
        "McNemar p raw / Holm (A:B only)",
        "Verdict",
    ]
    print(tabulate([_row(c) for c in comps], head, tablefmt="github", disable_numparse=True))
    print(
        f"\nVerdicts: {args.test} p after Holm–Bonferroni over {_family(comps, args.test)}, "
        f"α = {args.alpha}. Accuracies in %, ± is the 95% CI half-width over "
        "episodes (pooled over training seeds and episodes for a system with several seeds); "
        "the difference's CI is a seeded percentile bootstrap over episodes. With several "
        "training seeds a raw p is the largest of the episode-level, the hierarchical "
        "bootstrap's and the per-seed test's p. A Wilcoxon p shown is the larger of the "
        "signed-rank test's and the t-test's (a verdict on mean accuracy needs the mean's "
        "test to agree: docs/statistics.md)."
    )
    _print_levels(comps, args.bootstrap)
    _print_few_discordant(comps)
    held = resolution_warning(
        [(c.stats, c.adjusted[args.test]) for c in comps], args.test, args.alpha, args.bootstrap
    )
    if held:
        print(f"warning: {held}")
    seeds = [c for c in comps if c.a.seeds or c.b.seeds]
    for c in seeds:
        parts = [f"{e.system}: {e.seeds}" for e in (c.a, c.b) if e.seeds]
        print(f"Training seeds, {c.setting.label}: " + "; ".join(parts))
    if any(c.a.synthetic or c.b.synthetic for c in comps):
        print("Note: synthetic features; not comparable with published numbers.")
    stale = stale_note([e for c in comps for e in (c.a, c.b)])
    if stale:
        print(f"Note: {stale}")
    intervals = interval_note([e for c in comps for e in (c.a, c.b)])
    if intervals:
        print(f"Note: {intervals}")
    shown = [r for c in comps for e in (c.a, c.b) for r in e.records]
    for pool in test_pool_notes(shown, episodes=False):  # verdicts over part of a test split
        print(f"Note: {pool}")
    changed = recipe_changes_text([r for c in comps for e in (c.a, c.b) for r in e.records])
    if changed:  # the tables said so; the command asking "is A better?" did not
        print(f"Note: {changed}")
    blind = [c.setting.label for c in comps if paired_by_position(c.a, c.b)]
    if blind:
        print(
            f"Note: paired by position only in {', '.join(blind)}: {args.a} and {args.b} were "
            "evaluated on different features files that name no videos and no test list, so "
            "nothing shows that query i is the same video on both sides; the paired tests "
            "assume it (evaluate both on one features file, or on files with video ids)."
        )
    return 0
