"""``python -m fsarbench leaderboard``: every method with records, ranked per setting."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsarbench.cli.common import add_splits_dir_argument
from fsarbench.report.cli_args import (
    add_filter_args,
    add_runs_arg,
    add_stats_args,
    filters_text,
    load_filtered_entries,
    print_left_out,
    resamples,
)
from fsarbench.report.leaderboard import (
    build_leaderboard,
    leaderboard_markdown,
    untested_note,
    variants_note,
    write_leaderboard,
)
from fsarbench.report.tables import interval_note, stale_note, test_pool_notes
from fsarbench.stats.paired import DEFAULT_BOOTSTRAP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="rank every method with records, per setting",
        description="Rank the methods with records in each setting (dataset x way x shot, "
        "and track, frame protocol and test episodes); "
        "methods not significantly different from the leader (paired, Holm-adjusted) share "
        "rank 1. Prints Markdown and writes RUNS/leaderboard.md and RUNS/leaderboard.csv.",
    )
    add_runs_arg(p)
    add_filter_args(p)
    add_stats_args(p)
    p.add_argument(
        "--include-variants",
        action="store_true",
        help="also rank hyper-parameter overrides and tagged ablation variants",
    )
    p.add_argument(
        "--bootstrap",
        type=resamples,
        default=DEFAULT_BOOTSTRAP,
        help="bootstrap resamples (seeded; default: %(default)s)",
    )
    p.add_argument(
        "--add",
        default=None,
        metavar="BUNDLE",
        help="first verify BUNDLE (see 'verify') and store its records in RUNS/external/ as "
        "outside results, marked †outside; a bundle that does not verify is refused",
    )
    add_splits_dir_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.add:
        from fsarbench.bundles.outside import add_bundle

        folder = add_bundle(args.runs, args.add, splits_dir=args.splits_dir)
        print(f"verified and added as outside results: {args.add} -> {folder}")
    left_out: list[str] = []
    entries = load_filtered_entries(
        args, left_out=left_out, verify=lambda e: args.include_variants or not e.is_variant
    )
    variants: list = []
    if not args.include_variants:
        if args.add:
            _say_added_variants(entries, Path(args.add).name)
        variants = [e for e in entries if e.is_variant]
        entries = [e for e in entries if not e.is_variant]
    left_variants = variants_note(variants)
    if not entries:
        why = f"; {left_variants}" if left_variants else ""
        raise ValueError(f"no records to rank under {args.runs} with these filters{why}")
    unranked: list[str] = []
    untested: dict = {}
    held: list[str] = []
    board = build_leaderboard(
        args.runs,
        entries,
        left_out=unranked,
        untested=untested,
        held=held,
        alpha=args.alpha,
        test=args.test,
        n_boot=args.bootstrap,
    )
    print_left_out(unranked)
    if not board:
        raise ValueError(f"no setting under {args.runs} could be ranked (see the notes above)")
    notes = [f"left out {r}" for r in left_out + unranked]
    if filters_text(args):  # the folder's leaderboard files now hold only these settings
        notes.insert(
            0,
            f"Filtered: {filters_text(args)} (a 'leaderboard' without filters ranks every "
            "setting of the folder)",
        )
    tie_note = untested_note(args.test, untested)
    ranked = [st.entry for standings in board.values() for st in standings]
    stale, intervals = stale_note(ranked), interval_note(ranked)
    pools = test_pool_notes([r for e in ranked for r in e.records], episodes=False)
    for note in [n for n in (tie_note, stale, intervals, left_variants) if n] + held + pools:
        print(f"note: {note}", file=sys.stderr)
        notes.append(note)
    kw = {"alpha": args.alpha, "test": args.test, "notes": notes}
    print(leaderboard_markdown(board, **kw))
    md, csv = write_leaderboard(args.runs, board, **kw)
    print(f"written: {md} and {csv}")
    return 0


def _say_added_variants(entries: list, bundle: str) -> None:
    """Name the just-added outside results that the ranking leaves out as variants (an
    ablation's ``variant_label``, overridden hyper-parameters): "added" and then absent
    from the table read as lost."""
    from fsarbench.results import OUTSIDE_TAG

    names = sorted(
        {
            e.system
            for e in entries
            if e.is_variant and (e.tags.get(OUTSIDE_TAG) or {}).get("bundle") == bundle
        }
    )
    if names:
        print(
            f"not ranked: {', '.join(names)} from {bundle} (variants, like ablation rungs; "
            "add --include-variants to rank them, or see them in 'compare' and 'table')"
        )
