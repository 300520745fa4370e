"""``python -m fsarbench merge``: one summary from the records of every shard.

``run --shard I/N`` on several machines writes records under a shared results folder (or
under per-machine sub-folders copied into it); this rebuilds ``summary.csv`` and the Markdown
tables from every ``records/*.json`` found below ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fsarbench.results import OUTSIDE_TAG, load_records, newest_per_cell, write_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="rebuild summary.csv and tables from every shard's records",
        description="Read every records/*.json below --out (shards of 'run --shard I/N', in "
        "the folder itself or in sub-folders) and rebuild --out/summary.csv and --out/tables.",
    )
    p.add_argument("--out", type=Path, required=True, help="results folder shared by the shards")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsarbench.experiments.summary_tables import write_summary_tables

    if not args.out.is_dir():
        raise FileNotFoundError(f"no results folder {args.out}")
    found = load_records(args.out)
    # outside results (bundles under external/) are not this folder's runs, and one of the
    # same cell as an own record must not win the de-duplication below and hide the own one
    own = [r for r in found if not r.tags.get(OUTSIDE_TAG)]
    records, twice = newest_per_cell(own)
    if not records:
        what = f" (only {len(found)} outside record(s) from bundles)" if found else ""
        raise FileNotFoundError(f"no records/*.json of this folder's runs below {args.out}{what}")
    for cell in twice:
        print(f"note: cell {cell} is recorded by more than one shard; the newest copy is used")
    summary = write_summary(args.out, records)
    tables = write_summary_tables(args.out, records)
    print(
        f"{len(records)} records -> {summary} and {len(tables)} table(s) under "
        f"{args.out / 'tables'}"
    )
    return 0
