"""The seed paper's published tables, read from ``fsarbench/published/*.yaml`` (package data).

Each ``tableN.yaml`` gives the caption, the label columns (``Method, Reference`` ...), the value
columns (group, label and the setting each holds: dataset key, way, shot) and the rows (labels,
published values, and which of our method names or ablation variants fill the row).
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fsarbench.config import ConfigError, build_config, load_yaml

__all__ = [
    "Column",
    "Row",
    "TableSpec",
    "PublishedProtocol",
    "Citation",
    "published_dir",
    "load_table",
    "load_citation",
    "load_dataset_aliases",
    "available_tables",
    "known_methods",
]

#: Environment variable naming another folder of published tables.
ENV_VAR = "FSARBENCH_PUBLISHED"


@dataclass(frozen=True)
class Column:
    """A value column: header ``group`` / ``label``; holds ``dataset`` way-``way`` shot-``shot``."""

    group: str
    label: str
    dataset: str
    way: int
    shot: int


@dataclass(frozen=True)
class Row:
    """A paper row: label cells, published values (``None`` = "-"), and what fills it from runs.

    Attributes:
        methods: method names whose (untagged) records fill this row.
        variant: ``tags["variant_label"]`` value(s) of this table's ablation records.
        ours: the paper's own method (used to mark significance against baselines).
    """

    labels: list[str]
    values: list[float | None]
    methods: list[str] = field(default_factory=list)
    variant: str | list[str] | None = None
    ours: bool = False

    @property
    def name(self) -> str:
        return self.labels[0]

    @property
    def variants(self) -> list[str]:
        if self.variant is None:
            return []
        return [self.variant] if isinstance(self.variant, str) else list(self.variant)


@dataclass(frozen=True)
class PaperMarks:
    """The paper's bold and underlined cells as ``[row name, column index]`` pairs."""

    bold: list[list[Any]] = field(default_factory=list)
    underline: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PublishedProtocol:
    """How the published numbers of a table were made (shown beside them, so frozen-track or
    synthetic runs are never read as reproductions of them)."""

    backbone: str
    frames: int
    track: str
    source: str
    #: the rows other than the paper's own are quoted from earlier work (Tables 1, 2, 6):
    #: each was made under its own publication's setup, not necessarily this one
    quoted_rows: bool = False

    @property
    def label(self) -> str:
        label = f"{self.backbone}, {self.frames} frames, {self.track} track; {self.source}"
        if self.quoted_rows:
            label += (
                " (the paper's own rows; the other rows are the paper's quotes of earlier "
                "work, each made under its own publication's setup)"
            )
        return label


@dataclass(frozen=True)
class TableSpec:
    """One published table: the seed paper's ``tableN.yaml`` (``table`` = N, one ``protocol``
    for every row) or a comparison table (``table`` = its name, ``protocol`` = ``None``: each
    row states its own, see :mod:`fsarbench.report.comparison`)."""

    table: int | str
    protocol: PublishedProtocol | None
    caption: str
    decimals: int
    label_columns: list[str]
    columns: list[Column]
    rows: list[Row]
    paper_marks: PaperMarks = field(default_factory=PaperMarks)
    open_rows: bool = False

    @property
    def track(self) -> str | None:
        """The track of the published numbers (``None`` for a comparison table)."""
        return self.protocol.track if self.protocol is not None else None

    @property
    def methods(self) -> set[str]:
        """Every method name some row of this table maps."""
        return {m for row in self.rows for m in row.methods}

    def __post_init__(self) -> None:
        n = len(self.columns)
        for row in self.rows:
            if len(row.values) != n or len(row.labels) != len(self.label_columns):
                raise ValueError(
                    f"table {self.table}, row {row.labels}: {len(row.values)} values for {n} "
                    f"columns, {len(row.labels)} labels for {len(self.label_columns)}"
                )


@dataclass(frozen=True)
class Citation:
    key: str
    title: str
    authors: str
    venue: str
    year: int
    source_file: str
    note: str = ""

    def __str__(self) -> str:
        return f"{self.authors}. {self.title}. {self.venue}, {self.year}."


def published_dir(override: str | Path | None = None) -> Path:
    """Folder of the published tables: ``override``, ``$FSARBENCH_PUBLISHED``, or the
    ``published`` folder shipped inside the package (so a wheel has it too)."""
    if override is not None:
        return Path(override)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return Path(__file__).resolve().parents[1] / "published"


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; pass --published DIR or set {ENV_VAR} to the folder holding "
            "the published tables (fsarbench/published in the package)"
        )
    # tables, figures and the report read the same few files ~90 times per run; keyed on
    # the text itself (an edit within one mtime tick keeps the size and time)
    try:
        return copy.deepcopy(_parsed_yaml(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML ({err}); fix the file") from None


@functools.lru_cache(maxsize=64)
def _parsed_yaml(text: str) -> dict:
    """``text`` parsed as YAML (a key written twice is an error), once per distinct text."""
    return load_yaml(text)


def available_tables(folder: str | Path | None = None) -> list[int]:
    """Table numbers with a ``tableN.yaml`` in the published folder."""
    names = sorted(published_dir(folder).glob("table*.yaml"))
    return sorted(int(p.stem[5:]) for p in names if p.stem[5:].isdigit())


def load_table(number: int, folder: str | Path | None = None) -> TableSpec:
    """The published table ``number``."""
    path = published_dir(folder) / f"table{number}.yaml"
    if not path.exists() and path.parent.is_dir():
        have = sorted(
            (p.stem.removeprefix("table") for p in path.parent.glob("table*.yaml")),
            key=lambda n: (len(n), n),  # 2 before 10
        )
        raise FileNotFoundError(
            f"there is no published Table {number} in {path.parent}: tables {', '.join(have)} "
            "(the seed paper's); comparison tables by name, e.g. 'table sota'"
        )
    data = _read_yaml(path)
    where = f"table{number}.yaml"
    data["columns"] = [build_config(Column, c, where=where) for c in data["columns"]]
    data["rows"] = [build_config(Row, r, where=where) for r in data["rows"]]
    data["paper_marks"] = build_config(PaperMarks, data.get("paper_marks") or {}, where=where)
    if isinstance(data.get("protocol"), dict):
        data["protocol"] = build_config(PublishedProtocol, data["protocol"], where=where)
    return build_config(TableSpec, data, where=where)


def known_methods(folder: str | Path | None = None) -> set[str]:
    """Method names mapped by any published table (these never get rows of their own)."""
    return set().union(*(load_table(n, folder).methods for n in available_tables(folder)))


def figure_methods(figure: str, folder: str | Path | None = None) -> list[str]:
    """Our methods the paper's ``figure`` (e.g. ``"figure2"``) compares, from figures.yaml."""
    return list(
        _read_yaml(published_dir(folder) / "figures.yaml").get(figure, {}).get("methods", [])
    )


def load_citation(folder: str | Path | None = None) -> Citation:
    return build_config(Citation, _read_yaml(published_dir(folder) / "citation.yaml"))


def load_dataset_aliases(folder: str | Path | None = None) -> dict[str, list[str]]:
    """Paper dataset key -> record dataset names that stand for it (lower case)."""
    data = _read_yaml(published_dir(folder) / "datasets.yaml")
    return {k: sorted({k.lower(), *(v.lower() for v in names)}) for k, names in data.items()}
