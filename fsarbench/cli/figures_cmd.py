"""``python -m fsarbench figures``: every figure the records support, as PNG and PDF."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsarbench.report.cli_args import add_filter_args, add_runs_arg, add_stats_args, filter_entries
from fsarbench.report.figure_set import render_all
from fsarbench.report.records import load_entries


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "figures",
        help="accuracy vs way, vs masking ratio, per-class bars, forest plots",
        description="Render the figures the records under --runs support: accuracy vs N-way "
        "with CI bands (Table 6), accuracy vs masking ratio (Figure 4), per-class accuracy "
        "(Figure 2) and forest plots of paired differences.",
    )
    add_runs_arg(p)
    p.add_argument("--out", default=None, help="output folder (default: RUNS/figures)")
    p.add_argument(
        "--forest",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        default=None,
        help="forest plot of A vs B (repeatable; default: the paper's methods vs "
        "every other method with records)",
    )
    p.add_argument("--published", default=None, help="folder of the published tables")
    add_filter_args(p)
    add_stats_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    entries = filter_entries(load_entries(Path(args.runs)), args)
    out = Path(args.out) if args.out else Path(args.runs) / "figures"
    pairs = [tuple(p) for p in args.forest] if args.forest else None
    paths = render_all(
        args.runs,
        entries,
        out,
        forest_pairs=pairs,
        alpha=args.alpha,
        test=args.test,
        published=args.published,
    )
    if not paths:
        print(f"no figure is supported by the records under {args.runs}")
        return 0
    for path in paths:
        print(path)
    return 0
