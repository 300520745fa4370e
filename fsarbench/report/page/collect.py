"""Everything the report page shows, collected from a results folder (no markup here)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fsarbench.report.page.board import BoardSection, collect_leaderboard
from fsarbench.report.page.figures import FigureView, embed_figures, figure_views
from fsarbench.report.page.health import DatasetHealth, data_health
from fsarbench.report.page.paper_tables import AbsentTable, TableView, collect_tables
from fsarbench.report.page.verdicts import VerdictRow, choose_pairs, collect_verdicts
from fsarbench.report.published import Citation, load_citation
from fsarbench.report.records import given_copies, group_entries, verified_entries
from fsarbench.results import load_records
from fsarbench.stats.paired import DEFAULT_BOOTSTRAP
from fsarbench.version import code_version

__all__ = ["NoRecordsError", "ReportData", "collect_report"]


class NoRecordsError(FileNotFoundError):
    """The results folder does not exist or holds no result records."""


@dataclass
class ReportData:
    """The page's content; see the section modules for each part."""

    runs: Path
    generated: str
    version: str
    alpha: float
    test: str
    records: int
    citation: Citation
    tables: list[TableView]
    absent_tables: list[AbsentTable]
    boards: list[BoardSection]
    board_notes: list[str]
    verdicts: list[VerdictRow]
    verdict_notes: list[str]
    figures: list[FigureView]
    health: list[DatasetHealth]
    synthetic: bool = False
    synthetic_datasets: tuple[str, ...] = ()


def _records(run_dir: Path, left_out: list[str]):
    what = (
        f"run 'python -m fsarbench run --all --out {run_dir}' (or 'run --table N') to make "
        "records there, or pass --runs with the folder a run wrote"
    )
    if not run_dir.is_dir():
        raise NoRecordsError(f"results folder {run_dir} does not exist: {what}")
    records = load_records(run_dir, unreadable=left_out)
    if not records:
        raise NoRecordsError(f"no result records (records/*.json) under {run_dir}: {what}")
    records, dropped = given_copies(run_dir, records)
    left_out += dropped  # named under the tables, as the left-out records are
    return records


def collect_report(
    run_dir: str | Path,
    *,
    alpha: float = 0.05,
    test: str = "ttest",
    n_boot: int = DEFAULT_BOOTSTRAP,
    published: str | Path | None = None,
    figures: bool = True,
    figure_files: list[Path] | None = None,
) -> ReportData:
    """The report of the records under ``run_dir``; ``figure_files`` (PNGs ``run`` has just
    drawn from the same records) are embedded as they are instead of drawn again.

    Raises:
        NoRecordsError: ``run_dir`` is missing or holds no records (the message says what to run).
    """
    from fsarbench.report.figure_set import ours_methods

    run_dir = Path(run_dir)
    left_out: list[str] = []
    records = _records(run_dir, left_out)
    entries = verified_entries(run_dir, group_entries(records, left_out=left_out), left_out)
    tables, absent = collect_tables(
        run_dir, entries, alpha=alpha, test=test, published=published, left_out=left_out
    )
    pairs, notes = choose_pairs(entries, ours_methods(published))
    boards, board_notes = collect_leaderboard(
        run_dir, entries, alpha=alpha, test=test, n_boot=n_boot
    )
    verdicts, more = collect_verdicts(
        run_dir, entries, pairs, alpha=alpha, test=test, n_boot=n_boot
    )
    if not figures:
        figs = []
    elif figure_files is not None:
        figs = figure_views(figure_files)
    else:
        figs = embed_figures(
            run_dir,
            entries,
            alpha=alpha,
            test=test,
            published=published,
            n_boot=n_boot,
            left_out=left_out,
        )
    return ReportData(
        runs=run_dir.resolve(),
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        version=code_version(),
        alpha=alpha,
        test=test,
        records=len(records),
        citation=load_citation(published),
        tables=tables,
        absent_tables=absent,
        boards=boards,
        board_notes=[f"Left out: {reason}." for reason in left_out] + board_notes,
        verdicts=verdicts,
        verdict_notes=notes + more,
        figures=figs,
        health=data_health(records),
        synthetic=any(e.synthetic for e in entries),
        synthetic_datasets=tuple(sorted({e.setting.dataset for e in entries if e.synthetic})),
    )
