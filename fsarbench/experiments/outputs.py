"""After a run: the seed paper's tables (Markdown, LaTeX, CSV) and every figure the records
support, written under the run folder."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from fsarbench.io import atomic_write_text

__all__ = [
    "write_paper_outputs",
    "paper_tables_written",
    "refresh_paper_outputs",
    "mark_outputs_out_of_date",
    "stale_csv",
]

log = logging.getLogger(__name__)
EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv"}


#: Put at the top of a run folder's tables and report once its records change, until the
#: run rewrites them at its end: an interrupted run left them showing superseded numbers.
OUT_OF_DATE = (
    "OUT OF DATE: this folder's records changed after this file was written (a run was "
    "interrupted before rewriting it); summary.csv is current. Re-run the same 'python -m "
    "fsarbench run ... --out DIR' to finish and rewrite it."
)


#: What a CSV table is renamed to end with once it is out of date (see OUT_OF_DATE).
STALE_CSV = ".OUT-OF-DATE.csv"


def stale_csv(path: Path) -> Path:
    """Where CSV ``path`` goes while it is out of date (``NAME.OUT-OF-DATE.csv``): a program
    reading ``NAME.csv`` stops at a missing file instead of reading superseded numbers."""
    return path.with_name(path.stem + STALE_CSV)


def _lead_once(path: Path, banner: str, lead: str) -> bool:
    """Put ``lead`` before ``path``'s text unless ``banner`` is there already."""
    text = path.read_text()
    if banner in text:
        return False
    atomic_write_text(path, lead + text)
    return True


def mark_outputs_out_of_date(run_dir: str | Path) -> list[Path]:
    """Prefix :data:`OUT_OF_DATE` to the Markdown and LaTeX tables and the HTML report of
    ``run_dir``, and rename its CSV tables (:func:`stale_csv`); the files marked. Called
    once a run is about to change a record; the run's end rewrites them."""
    run_dir = Path(run_dir)
    marked = []
    tables = run_dir / "tables"
    for path in sorted(tables.glob("*.csv")):
        if not path.name.endswith(STALE_CSV):
            marked.append(path.replace(stale_csv(path)))
    for path in [*sorted(tables.glob("*.md")), *sorted(tables.glob("*.tex"))]:
        lead = f"% {OUT_OF_DATE}\n" if path.suffix == ".tex" else f"> **{OUT_OF_DATE}**\n\n"
        if _lead_once(path, OUT_OF_DATE, lead):
            marked.append(path)
    marked += _mark_leaderboard(run_dir)
    report = run_dir / "report" / "index.html"
    if report.is_file():
        text = report.read_text()
        if OUT_OF_DATE not in text and "<body>" in text:
            banner = f'<body>\n<p style="background:#fdd;padding:8px"><b>{OUT_OF_DATE}</b></p>'
            atomic_write_text(report, text.replace("<body>", banner, 1))
            marked.append(report)
    return marked


#: The leaderboard's own banner: ``run`` does not rewrite it (its options are the user's).
LEADERBOARD_OUT_OF_DATE = (
    "OUT OF DATE: this folder's records changed after this leaderboard was written; "
    "summary.csv is current. Run 'python -m fsarbench leaderboard --runs DIR' again (with "
    "the options you gave it) to rank the current records."
)


def _mark_leaderboard(run_dir: Path) -> list[Path]:
    """:func:`mark_outputs_out_of_date` for ``leaderboard.md`` (a banner) and
    ``leaderboard.csv`` (renamed ``leaderboard.OUT-OF-DATE.csv``), which a later ``run``
    left ranking the records it had replaced; ``leaderboard`` rewrites both."""
    marked = []
    md, csv = run_dir / "leaderboard.md", run_dir / "leaderboard.csv"
    lead = f"> **{LEADERBOARD_OUT_OF_DATE}**\n\n"
    if md.is_file() and _lead_once(md, LEADERBOARD_OUT_OF_DATE, lead):
        marked.append(md)
    if csv.is_file():
        marked.append(csv.replace(stale_csv(csv)))
    return marked


def write_paper_outputs(run_dir: str | Path, tables: list[int]) -> list[Path]:
    """Render ``tables`` (numbers 1-6) and all supported figures from ``run_dir``'s records."""
    from fsarbench.experiments.grids import grid_stand_in
    from fsarbench.report.figure_set import render_all
    from fsarbench.report.published import (
        known_methods,
        load_citation,
        load_dataset_aliases,
        load_table,
    )
    from fsarbench.report.records import load_entries
    from fsarbench.report.render import render
    from fsarbench.report.tables import build_table

    run_dir = Path(run_dir)
    left_out: list[str] = []
    entries = load_entries(run_dir, left_out=left_out, verify_rows=True)
    for reason in left_out:
        log.warning("left out of the paper tables: %s", reason)
    written: list[Path] = []
    for number in tables:
        table = build_table(
            load_table(number),
            entries,
            source="both",
            stand_in=grid_stand_in(f"table{number}"),
            aliases=load_dataset_aliases(),
            known=known_methods(),
            left_out=left_out,
        )
        for fmt, ext in EXTENSIONS.items():
            path = run_dir / "tables" / f"paper_table{number}.{ext}"
            atomic_write_text(path, render(table, fmt, load_citation()))
            written.append(path)
        stale_csv(run_dir / "tables" / f"paper_table{number}.csv").unlink(missing_ok=True)
    figures = render_all(run_dir, entries, run_dir / "figures", left_out=left_out)
    _remove_figures_not_drawn(run_dir / "figures", figures)
    return written + figures


def paper_tables_written(run_dir: str | Path) -> set[int]:
    """Numbers of the paper tables an earlier ``run`` wrote into ``run_dir/tables``."""
    from fsarbench.report.published import available_tables

    found = {
        int(m[1])
        for p in (Path(run_dir) / "tables").glob("paper_table*.md")
        if (m := re.fullmatch(r"paper_table(\d+)", p.stem))
    }
    return found & set(available_tables())


def refresh_paper_outputs(run_dir: str | Path) -> list[Path]:
    """Redraw the paper tables and figures a run folder already has, after a command other
    than ``run`` changed its records (``eval --out RUN``): they showed the replaced record
    until the next ``run``, ``table`` or ``figures``. A folder without them is left as is."""
    numbers = paper_tables_written(run_dir)
    if not numbers and not (Path(run_dir) / "figures" / DRAWN_LIST).is_file():
        return []
    return write_paper_outputs(run_dir, sorted(numbers))


#: The figure files the last ``run`` drew into its ``figures/`` folder (names, one list).
DRAWN_LIST = ".drawn-by-run.json"


def _remove_figures_not_drawn(folder: Path, drawn: list[Path]) -> None:
    """Delete the figure files an earlier ``run`` drew that the records no longer give (a
    deleted or superseded record's forest plot stayed beside the new one). Files ``run`` did
    not draw (``figures --forest A B``, a user's) are never touched."""
    names = sorted({p.name for p in drawn})
    listed = folder / DRAWN_LIST
    try:
        before = set(json.loads(listed.read_text()))
    except (OSError, ValueError, TypeError):
        before = set()
    for name in sorted(before - set(names)):
        path = folder / Path(name).name  # a name, never a path out of the folder
        if path.suffix in (".png", ".pdf"):
            log.info("removing %s: the records no longer give this figure", path)
            path.unlink(missing_ok=True)
    atomic_write_text(listed, json.dumps(names, indent=0) + "\n")
