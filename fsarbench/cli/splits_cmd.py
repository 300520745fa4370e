"""``python -m fsarbench splits verify|fetch|import``: the published few-shot split lists."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from fsarbench_splits.catalog import SPLITS
from fsarbench_splits.fetch import SplitFetchError, all_sources, fetch_splits, import_splits
from fsarbench_splits.registry import VARIANTS, default_splits_dir, verify_splits


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "splits",
        help="verify, fetch or import the published split lists",
        description="The few-shot split lists live in a splits directory "
        "(--splits-dir, else $FSAR_SPLITS, else the user cache).",
    )
    p.add_argument("--splits-dir", type=Path, default=None, help="splits directory")
    actions = p.add_subparsers(dest="splits_action", metavar="ACTION")
    v = actions.add_parser("verify", help="check md5, counts, leakage and duplicates")
    v.add_argument("--variant", action="append", choices=sorted(VARIANTS), default=None)
    v.add_argument(
        "--allow-modified",
        action="store_true",
        help="report lists whose md5 differs from the published one without failing",
    )
    v.set_defaults(func=run_verify)
    f = actions.add_parser("fetch", help="download the lists from their source repositories")
    f.add_argument("--variant", action="append", choices=sorted(VARIANTS), default=None)
    f.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per download (default: %(default)s)"
    )
    f.set_defaults(func=run_fetch)
    i = actions.add_parser("import", help="copy the lists from a local folder (or a clone)")
    i.add_argument("source", type=Path, help="folder holding the lists")
    i.set_defaults(func=run_import)
    for action in (
        v,
        f,
        i,
    ):  # `splits verify --splits-dir X` as well as `splits --splits-dir X verify`
        action.add_argument(
            "--splits-dir", type=Path, default=argparse.SUPPRESS, help="splits directory"
        )
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _dir(args: argparse.Namespace) -> Path:
    return args.splits_dir if args.splits_dir is not None else default_splits_dir()


def run_verify(args: argparse.Namespace) -> int:
    report = verify_splits(_dir(args), variants=args.variant, allow_modified=args.allow_modified)
    if not report.sources:
        print(
            f"error: no split lists under {report.splits_dir}; run 'python -m fsarbench splits "
            "fetch' or 'splits import DIR'",
            file=sys.stderr,
        )
        return 2
    print(tabulate(report.rows(), headers="keys"))
    for rel, md5 in report.modified.items():
        print(f"modified: {rel} md5 {md5} (recorded with results when used)")
    errors = report.errors()
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    found = sum(f.found for f in report.files)
    print(
        f"{found} files checked under {report.splits_dir}: "
        f"{'OK' if not errors else f'{len(errors)} problem(s)'}"
    )
    return 1 if errors else 0


def run_fetch(args: argparse.Namespace) -> int:
    try:
        written = fetch_splits(_dir(args), args.variant, timeout=args.timeout)
    except SplitFetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(written)} list(s) downloaded into {_dir(args)}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    skipped: dict[str, str] = {}
    copied = import_splits(args.source, _dir(args), skipped)
    for rel, md5 in skipped.items():
        print(f"kept the published {rel}: the copy under {args.source} is modified (md5 {md5})")
    if not copied:
        if skipped:
            return 0
        print(f"error: no known split list found under {args.source}", file=sys.stderr)
        return 1
    published = {s.rel_path(k): s.file(k).md5 for s in all_sources() for k in SPLITS}
    for rel, md5 in copied.items():
        note = "" if published.get(rel) == md5 else "  MODIFIED (not the published md5)"
        print(f"{rel}  {md5}{note}")
    print(f"{len(copied)} list(s) copied into {_dir(args)}; run 'splits verify' to check them")
    return 0
