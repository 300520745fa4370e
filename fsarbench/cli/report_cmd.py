"""``python -m fsarbench report``: one self-contained HTML page of a results folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsarbench.cli.common import writable_folder
from fsarbench.report.cli_args import add_runs_arg, add_stats_args, resamples
from fsarbench.stats.paired import DEFAULT_BOOTSTRAP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a static HTML report of a results folder (tables, leaderboard, figures)",
        description="Write OUT/index.html: the seed paper's tables beside our runs, the "
        "leaderboard (sortable, shared ranks), pairwise verdicts with the level each rests on, "
        "the figures (embedded), the data-health summary and each number's provenance on "
        "click. One file, no server, nothing fetched: open it from disk or any static host.",
    )
    add_runs_arg(p)
    p.add_argument(
        "--out", type=writable_folder, default=None, help="output folder (default: RUNS/report)"
    )
    p.add_argument(
        "--bootstrap",
        type=resamples,
        default=DEFAULT_BOOTSTRAP,
        help="bootstrap resamples (seeded; default: %(default)s)",
    )
    p.add_argument("--published", default=None, help="folder of the published tables")
    p.add_argument("--no-figures", action="store_true", help="leave the figures out (faster)")
    add_stats_args(p)
    p.set_defaults(func=run)


def print_report_path(path: Path) -> None:
    """The report's absolute path and its ``file://`` URL."""
    print(f"report: {path}\n        {path.as_uri()}")


def run(args: argparse.Namespace) -> int:
    from fsarbench.report.page import build_report

    path = build_report(
        Path(args.runs),
        args.out,
        alpha=args.alpha,
        test=args.test,
        n_boot=args.bootstrap,
        published=args.published,
        figures=not args.no_figures,
    )
    print_report_path(path)
    return 0
