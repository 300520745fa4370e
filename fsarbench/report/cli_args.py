"""Arguments the reporting sub-commands share (table, compare, leaderboard, figures)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fsarbench.report.compare import TESTS
from fsarbench.report.records import Entry, left_out_entry, load_entries, verified_entries

__all__ = [
    "DEFAULT_RUNS",
    "add_runs_arg",
    "resamples",
    "add_stats_args",
    "add_filter_args",
    "filter_entries",
    "load_filtered_entries",
    "print_left_out",
]

#: Results folder used when ``--runs`` is not given: ``$FSARBENCH_RUNS``, else where
#: ``python -m fsarbench run`` writes by default.
DEFAULT_RUNS = os.environ.get("FSARBENCH_RUNS", str(Path("results") / "runs" / "default"))


def add_runs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs",
        type=_runs_folder,
        default=DEFAULT_RUNS,
        help=f"results folder holding records/ (default: {DEFAULT_RUNS}; $FSARBENCH_RUNS sets it)",
    )


def _runs_folder(text: str) -> str:
    """``--runs``: refused when a file is there (``table 1 --runs summary.csv`` printed the
    published rows alone, exit 0, as if nothing had been run)."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} is a file, not a results folder: pass the folder 'run --out' wrote"
        )
    return text


_runs_folder.__name__ = "folder"


def _alpha(text: str) -> float:
    """``--alpha``: a significance level strictly between 0 and 1 (``--alpha 2`` called a
    difference at p = 0.46 significant)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--alpha takes a number, not {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"--alpha is a significance level between 0 and 1 (e.g. 0.05), not {text}"
        )
    return value


def resamples(text: str) -> int:
    """``--bootstrap``: a number of resamples of at least :data:`MIN_RESAMPLES` (0 or fewer
    stopped in scipy with a message about ``n_resamples``; 1 printed a "95% CI" of one point
    that excluded the estimate, ``+4.52 [+3.16, +3.16]``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--bootstrap takes a whole number, not {text!r}"
        ) from None
    if value < MIN_RESAMPLES:
        raise argparse.ArgumentTypeError(
            f"--bootstrap is a number of resamples, at least {MIN_RESAMPLES} (each 2.5% tail of "
            f"a 95% interval needs one; default 2000), not {text}"
        )
    return value


#: Fewest resamples a percentile 95% interval can rest on: one per 2.5% tail.
MIN_RESAMPLES = 40


def add_stats_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--alpha",
        type=_alpha,
        default=0.05,
        help="family-wise significance level after Holm adjustment (default 0.05)",
    )
    p.add_argument(
        "--test",
        choices=sorted(TESTS),
        default="ttest",
        help="test behind verdicts and ranks: paired t-test on per-episode accuracy "
        "(default), Wilcoxon signed-rank, or McNemar on per-query correctness (clustered by "
        "episode)",
    )


def add_filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="only this dataset")
    p.add_argument("--way", type=int, default=None, help="only N-way settings")
    p.add_argument("--shot", type=int, default=None, help="only K-shot settings")
    p.add_argument("--track", default=None, help="only this track (frozen or finetune)")
    p.add_argument(
        "--protocol", default=None, help="only this frame protocol (seed, trx, hyrsm, ...)"
    )


class FilterError(ValueError):
    """Filters (``--dataset``, ``--way``, ``--shot``, ``--track``, ``--protocol``) that match
    no record of the folder."""


def filter_entries(entries: list[Entry], args: argparse.Namespace) -> list[Entry]:
    """Entries matching ``--dataset``, ``--way``, ``--shot``, ``--track`` and ``--protocol``
    (those given)."""
    kept = [e for e in entries if _matches_filters(e, args)]
    asked = {k: v for k, v in _filters(args).items() if v is not None}
    if entries and not kept and asked:
        have = {k: sorted({getattr(e.setting, k) for e in entries}, key=str) for k in asked}
        raise FilterError(
            "no records match "
            + ", ".join(f"--{k} {v}" for k, v in asked.items())
            + f" under {getattr(args, 'runs', 'the runs folder')}; its records have "
            + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in have.items())
        )
    return kept


def filters_text(args: argparse.Namespace) -> str:
    """The filters given, as typed (``"--dataset synth --shot 1"``); ``""`` for none."""
    return " ".join(f"--{k} {v}" for k, v in _filters(args).items() if v is not None)


def _filters(args: argparse.Namespace) -> dict:
    names = ("dataset", "way", "shot", "track", "protocol")
    return {k: getattr(args, k) for k in names}


def _matches_filters(entry: Entry, args: argparse.Namespace) -> bool:
    return all(v is None or getattr(entry.setting, k) == v for k, v in _filters(args).items())


def load_filtered_entries(
    args: argparse.Namespace,
    *,
    left_out: list[str] | None = None,
    verify: Callable[[Entry], bool] | None = None,
) -> list[Entry]:
    """The entries of ``--runs`` matching the filters, less those whose records their
    per-query rows do not give (:func:`~fsarbench.report.records.verified_entries`, as
    ``table`` and ``report`` check): a hand-edited record or rows that lost a query were
    plotted and ranked as they stood. ``verify``, when given, picks the entries to check
    (``compare`` checks only the two systems it pairs); the others are kept unchecked.

    An entry that cannot be reported (that, or training seeds on different manifests) is
    left out with a note on stderr, also appended to ``left_out`` when given, so it does not
    stop a report of the others."""
    found: list[str] = []
    entries = filter_entries(load_entries(Path(args.runs), left_out=found), args)
    # reasons naming an entry the filters leave out are not this report's to give
    notes = [n for n in found if (e := left_out_entry(n)) is None or _matches_filters(e, args)]
    checked = [e for e in entries if verify is None or verify(e)]
    good = {id(e) for e in verified_entries(Path(args.runs), checked, notes)}
    checked_ids = {id(e) for e in checked}
    entries = [e for e in entries if id(e) in good or id(e) not in checked_ids]
    print_left_out(notes)
    if left_out is not None:
        left_out += notes
    return entries


def print_left_out(reasons: list[str], what: str = "") -> None:
    """One ``note: left out ...`` line on stderr per reason (entries or settings a report
    could not include)."""
    for reason in reasons:
        print(f"note: left out {what}{reason}", file=sys.stderr)
