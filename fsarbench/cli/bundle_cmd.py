"""``python -m fsarbench bundle``: one file with a method's records and per-query predictions."""

from __future__ import annotations

import argparse

from fsarbench.cli.common import file_path
from fsarbench.report.cli_args import add_runs_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bundle",
        help="write a method's records and per-query predictions into one verifiable file",
        description="Write every record of METHOD under the runs folder (all datasets, ways, "
        "shots, seeds, protocols) with its per-query predictions into one zip file, which "
        "'python -m fsarbench verify' checks and 'leaderboard --add' accepts without the "
        "method's code. See docs/bundles.md.",
    )
    add_runs_arg(p)
    p.add_argument("--method", required=True, help="method name as its records carry it")
    p.add_argument(
        "--out",
        type=file_path,
        default=None,
        metavar="FILE",
        help="bundle file to write (default RUNS/bundles/<method>.zip)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsarbench.bundles import read_bundle, write_bundle

    path = write_bundle(args.runs, args.method, args.out)
    bundle = read_bundle(path)
    print(f"written: {path} ({len(bundle.records)} records of {bundle.method})")
    return 0
