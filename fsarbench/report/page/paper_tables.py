"""The seed paper's Tables 1-6 beside our runs, as rows of cells a template can lay out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from fsarbench.experiments.grids import grid_stand_in
from fsarbench.report.page.provenance import Provenance, entry_provenance
from fsarbench.report.published import (
    available_tables,
    known_methods,
    load_dataset_aliases,
    load_table,
)
from fsarbench.report.records import Entry
from fsarbench.report.tables import Cell, Table, build_table, mark_significant

__all__ = ["CellView", "RowView", "TableView", "AbsentTable", "collect_tables"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellView:
    text: str
    mark: str  # "", "best" or "second"
    significant: bool
    provenance: Provenance | None


@dataclass(frozen=True)
class RowView:
    labels: list[str]
    source: str
    cells: list[CellView]

    @property
    def is_run(self) -> bool:
        return self.source.startswith("run")


@dataclass(frozen=True)
class TableView:
    """One table: header groups ``(group, span)``, column labels, rows and notes."""

    number: int
    caption: str
    label_columns: list[str]
    groups: list[tuple[str, int]]
    columns: list[str]
    rows: list[RowView]
    notes: list[str]


@dataclass(frozen=True)
class AbsentTable:
    """A published table no record fills, and the command that makes its records."""

    number: int
    caption: str
    command: str


def _cell(cell: Cell) -> CellView:
    prov = entry_provenance(cell.entry) if cell.entry is not None else None
    return CellView(cell.text, cell.mark, cell.significant, prov)


def _view(number: int, table: Table) -> TableView:
    spec = table.spec
    groups = [(g, len(list(cols))) for g, cols in groupby(spec.columns, key=lambda c: c.group)]
    rows = [RowView(list(r.labels), r.source, [_cell(c) for c in r.cells]) for r in table.rows]
    return TableView(
        number,
        spec.caption,
        list(spec.label_columns),
        groups,
        [c.label for c in spec.columns],
        rows,
        list(table.notes),
    )


def _mark(table: Table, run_dir: Path, alpha: float, test: str) -> None:
    """Star significant cells; a comparison that cannot be made only costs the stars."""
    try:
        mark_significant(table, run_dir, alpha=alpha, test=test)
    except (ValueError, FileNotFoundError) as err:
        table.notes.append(f"significance stars left out: {err}")


def collect_tables(
    run_dir: str | Path,
    entries: list[Entry],
    *,
    alpha: float = 0.05,
    test: str = "ttest",
    published: str | Path | None = None,
    left_out: list[str] = (),
) -> tuple[list[TableView], list[AbsentTable]]:
    """Tables with at least one run cell (published rows beside them), and those without;
    ``left_out``: the folder's records left out, named under each table shown that would have
    shown them (:func:`~fsarbench.report.tables.build_table`)."""
    aliases, known = load_dataset_aliases(published), known_methods(published)
    shown, absent = [], []
    for number in available_tables(published):
        spec = load_table(number, published)
        table = build_table(
            spec,
            entries,
            source="both",
            stand_in=grid_stand_in(f"table{number}"),
            aliases=aliases,
            known=known,
            left_out=left_out,
        )
        if not any(c.entry is not None for r in table.rows for c in r.cells):
            command = f"python -m fsarbench run --table {number}"
            absent.append(AbsentTable(number, spec.caption, command))
            continue
        _mark(table, Path(run_dir), alpha, test)
        shown.append(_view(number, table))
    return shown, absent
