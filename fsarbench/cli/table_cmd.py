"""``python -m fsarbench table N|NAME``: one of the seed paper's tables (N = 1-6) or a
comparison table of published results (NAME, e.g. ``sota``), from published numbers and
result records."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fsarbench.io import atomic_write_text
from fsarbench.report.cli_args import DEFAULT_RUNS, add_runs_arg, add_stats_args, print_left_out
from fsarbench.report.comparison import build_comparison, load_comparison
from fsarbench.report.published import (
    known_methods,
    load_citation,
    load_dataset_aliases,
    load_table,
)
from fsarbench.report.records import load_entries
from fsarbench.report.render import FORMATS, render
from fsarbench.report.tables import (
    SOURCES,
    Table,
    build_table,
    mark_significant,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "table",
        help="render one of the seed paper's Tables 1-6, or a comparison table such as "
        "'sota' (published + our runs)",
        description="Lay out Table N of the seed paper, or the comparison table NAME (published "
        "results of many papers, each row with its backbone, frames, track, text use and "
        "reference): published numbers (labelled) and, from the records under --runs, our "
        "accuracy ± 95% CI; best bold, second underlined.",
    )
    p.add_argument("number", help="table number (1-6) or comparison table name (e.g. sota)")
    add_runs_arg(p)
    p.add_argument("--format", choices=FORMATS, default="md", help="md (default), latex or csv")
    p.add_argument(
        "--out",
        default=None,
        help="write to this file instead of stdout (a folder: tableN.md, .tex or .csv in it)",
    )
    p.add_argument(
        "--source",
        choices=SOURCES,
        default="both",
        help="published rows, run rows, or both (default)",
    )
    p.add_argument(
        "--stand-in",
        default=None,
        help="dataset whose records may stand in for the paper's datasets, labelled "
        "(default: the stand-in of the table's grid, synth-planted for Tables 3 and 4, else "
        "synth; '' for none)",
    )
    p.add_argument(
        "--mark-significant",
        action="store_true",
        help="star run cells of the paper's method that are significantly better "
        "than the best baseline run of their column (paired, Holm)",
    )
    p.add_argument(
        "--published",
        default=None,
        help="folder of the published tables (default: the package's fsarbench/published)",
    )
    add_stats_args(p)
    p.set_defaults(func=run)


def _stand_in(args: argparse.Namespace, entries: list) -> str | None:
    from fsarbench.experiments.grids import grid_stand_in

    if args.stand_in is None:
        return grid_stand_in(f"table{args.number}")
    if args.stand_in:  # a typo showed no run row, silently
        from difflib import get_close_matches

        from fsarbench.data.datasets import list_datasets

        # a registered dataset, or one the records name (a Python-API run's own dataset)
        known = sorted({*list_datasets(), *(e.setting.dataset for e in entries)})
        if args.stand_in not in known:
            close = get_close_matches(args.stand_in, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"--stand-in {args.stand_in!r} is no dataset{hint}; datasets: {', '.join(known)}"
            )
    return args.stand_in or None


def _paper_table(args: argparse.Namespace, entries: list, left_out: list[str]) -> Table:
    return build_table(
        load_table(int(args.number), args.published),
        entries,
        source=args.source,
        stand_in=_stand_in(args, entries),
        aliases=load_dataset_aliases(args.published),
        known=known_methods(args.published),
        left_out=left_out,
    )


def _comparison_table(args: argparse.Namespace, entries: list, left_out: list[str]) -> Table:
    return build_comparison(
        load_comparison(args.number, args.published),
        entries,
        left_out=left_out,
        source=args.source,
        stand_in=_stand_in(args, entries),
        aliases=load_dataset_aliases(args.published),
    )


def run(args: argparse.Namespace) -> int:
    runs = Path(args.runs)
    if _out_is_a_results_folder(args):
        print(
            f"error: --out {args.out} is a results folder ('run --out'), but the records are "
            f"read from --runs ({runs}): pass --runs {args.out} to tabulate them (--out is "
            "where the table is written), or --source published for the paper's rows alone",
            file=sys.stderr,
        )
        return 2
    left_out: list[str] = []
    entries = []
    if args.source == "runs" and not any(runs.rglob("records/*.json")):
        # printed "published rows only" and an empty table, exit 0
        print(
            f"error: --source runs, but there are no records under {runs}"
            + ("" if runs.exists() else " (no such folder)")
            + ": pass --runs with the folder 'run --out' wrote, or --source both / published",
            file=sys.stderr,
        )
        return 2
    if args.source != "published" and runs.exists():
        entries = load_entries(runs, left_out=left_out, verify_rows=True)
        if not entries and not left_out:
            print(f"note: no records under {runs} yet: published rows only", file=sys.stderr)
    elif args.source != "published" and args.runs != DEFAULT_RUNS:
        # a mistyped --runs printed the published rows alone, as if nothing had been run
        print(
            f"error: results folder {runs} does not exist (pass the folder 'run --out' wrote, "
            "or --source published for the paper's numbers alone)",
            file=sys.stderr,
        )
        return 2
    elif args.source != "published":
        print(f"note: no results folder {runs} yet: published rows only", file=sys.stderr)
    print_left_out(left_out)
    paper = args.number.isdigit()
    table = (_paper_table if paper else _comparison_table)(args, entries, left_out)
    if args.mark_significant:
        mark_significant(table, runs, alpha=args.alpha, test=args.test)
    citation = load_citation(args.published) if paper else None
    text = render(table, args.format, citation)
    if args.out:
        path = _out_file(args)
        atomic_write_text(path, text)
        print(f"table {args.number} written to {path}")
    else:
        print(text, end="")
    return 0


def _out_is_a_results_folder(args: argparse.Namespace) -> bool:
    """``table N --out RESULTS`` with no ``--runs`` (``run``'s flag for that folder): it
    printed the published rows alone and wrote them into the results folder."""
    out = Path(args.out) if args.out else None
    return (
        out is not None
        and args.source != "published"
        and Path(args.runs).resolve() == Path(DEFAULT_RUNS).resolve()
        and out.resolve() != Path(args.runs).resolve()
        and ((out / "records").is_dir() or (out / "summary.csv").is_file())
    )


_SUFFIX = {"md": ".md", "latex": ".tex", "csv": ".csv"}


def _out_file(args: argparse.Namespace) -> Path:
    """``--out``, or ``table<N>.<md|tex|csv>`` inside it when it is a folder (or ends with
    a slash: ``--out tables/`` wrote a file named ``tables``)."""
    out = Path(args.out)
    if out.is_dir() or str(args.out).endswith(("/", os.sep)):
        return out / f"table{args.number}{_SUFFIX[args.format]}"
    return out
