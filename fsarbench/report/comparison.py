"""Comparison tables: published results of many papers, one row each, with per-row protocol
labels and citations (``published/<name>.yaml`` with ``kind: comparison``, e.g. ``sota.yaml``).

Unlike the seed paper's tables (one paper, one protocol), every row here states its own
backbone, frames, track and whether class-name text is used, and cites the source its numbers
were read from. The spec is turned into a :class:`~fsarbench.report.published.TableSpec` and
laid out by :func:`~fsarbench.report.tables.build_table`, so our run rows sit beside the
published ones exactly as in Tables 1-6; run rows are then relabelled with *their* backbone,
frames and track, read from the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from fsarbench.config import ConfigError, build_config, load_yaml
from fsarbench.report.published import (
    Column,
    Row,
    TableSpec,
    load_dataset_aliases,
    published_dir,
)
from fsarbench.report.records import STALE_MARK, Entry
from fsarbench.report.tables import Table, TableRow, build_table

__all__ = [
    "ComparisonError",
    "ComparisonRow",
    "ComparisonSpec",
    "DatasetColumn",
    "Reference",
    "LABEL_COLUMNS",
    "available_comparisons",
    "build_comparison",
    "load_comparison",
    "parse_comparison",
    "to_table_spec",
]

#: Label columns of every comparison table (values of a row's protocol, then its reference).
LABEL_COLUMNS = ["Method", "Venue", "Backbone", "Frames", "Track", "Text", "Ref"]
NOT_STATED = "n/s"  # the source does not say
NOT_RECORDED = "n/r"  # our records do not say
SECONDARY_MARK = "†"  # after the Ref of a row read in a secondary source
KIND = "comparison"

Track = Literal["frozen", "finetune", "adapter", "n/s"]
TextUse = Literal["yes", "no", "n/s"]
SourceKind = Literal["paper", "quoted-by-paper", "official-readme", "secondary"]


class ComparisonError(ConfigError):
    """A comparison table file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Reference:
    """Where a row's numbers come from: the paper, and the exact source read (``read_from``).

    ``kind``: ``paper`` (the paper itself), ``quoted-by-paper`` (another paper's table quoting
    it), ``official-readme`` (the authors' repository), ``secondary`` (anything else).
    """

    title: str
    authors: str
    venue: str
    year: int
    read_from: str
    kind: SourceKind
    arxiv: str = ""
    table: str = ""
    page: str = ""
    note: str = ""

    def __str__(self) -> str:
        arxiv = f", arXiv:{self.arxiv}" if self.arxiv else ""
        where = "; ".join(x for x in (self.table, f"page {self.page}" if self.page else "") if x)
        where = f" ({where})" if where else ""
        note = f" Note: {self.note.strip()}" if self.note else ""
        return (
            f"{self.authors}. {self.title}. {self.venue}{arxiv}{where}. "
            f"Read from: {self.read_from} [{self.kind}].{note}"
        )


@dataclass(frozen=True)
class DatasetColumn:
    """A dataset group of columns: ``key`` as in ``datasets.yaml``, ``label`` as printed."""

    key: str
    label: str


@dataclass(frozen=True)
class ComparisonRow:
    """One published result: the method, its protocol labels, its reference key and its
    numbers ``values[dataset key][shot]`` in percent; ``methods`` are our method names whose
    records sit beside it."""

    method: str
    venue: str
    backbone: str
    frames: int | None
    track: Track
    text: TextUse
    ref: str
    values: dict[str, dict[int, float]]
    methods: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ComparisonSpec:
    """A whole comparison table file."""

    kind: Literal["comparison"]
    caption: str
    decimals: int
    way: int
    shots: list[int]
    datasets: list[DatasetColumn]
    references: dict[str, Reference]
    rows: list[ComparisonRow]
    name: str = ""


def available_comparisons(folder: str | Path | None = None) -> list[str]:
    """Names of the comparison tables (``*.yaml`` with ``kind: comparison``) in the folder."""
    out = []
    for path in sorted(published_dir(folder).glob("*.yaml")):
        try:
            head = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ComparisonError(f"{path} is not valid YAML ({err}); fix the file") from None
        if isinstance(head, dict) and head.get("kind") == KIND:
            out.append(path.stem)
    return out


def load_comparison(name: str, folder: str | Path | None = None) -> ComparisonSpec:
    """The comparison table ``name`` (``published/<name>.yaml``), validated."""
    path = published_dir(folder) / f"{name}.yaml"
    if not path.exists():
        names = ", ".join(available_comparisons(folder)) or "none"
        raise ComparisonError(
            f"no comparison table {name!r}: {path} does not exist (available: {names}; "
            "paper tables are numbers 1-6)"
        )
    aliases = load_dataset_aliases(folder)
    return parse_comparison(path.read_text(encoding="utf-8"), name, known_datasets=list(aliases))


def parse_comparison(text: str, name: str, *, known_datasets: list[str]) -> ComparisonSpec:
    """Parse and validate the YAML ``text`` of comparison table ``name``.

    Raises:
        ComparisonError: bad YAML, unknown or missing keys, values of the wrong type, a
            dataset or shot the table does not have, a number outside [0, 100], a row whose
            reference is not listed, or a repeated row.
    """
    where = f"{name}.yaml"
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        raise ComparisonError(f"{where} is not valid YAML ({err}); fix the file") from err
    if not isinstance(data, dict):
        raise ComparisonError(f"{where}: expected a mapping of keys at the top, got {data!r}")
    try:
        spec = build_config(ComparisonSpec, {**data, "name": name}, where=where)
    except ConfigError as err:
        raise ComparisonError(str(err)) from err
    _validate(spec, where, known_datasets)
    return spec


def _validate(spec: ComparisonSpec, where: str, known_datasets: list[str]) -> None:
    keys = [d.key for d in spec.datasets]
    for key in keys:
        if key not in known_datasets:
            raise ComparisonError(
                f"{where}: dataset {key!r} is not in datasets.yaml ({', '.join(known_datasets)})"
            )
    seen: set[tuple[str, str]] = set()
    for i, row in enumerate(spec.rows):
        at = f"{where} rows[{i}] ({row.method})"
        if row.ref not in spec.references:
            raise ComparisonError(
                f"{at}: ref {row.ref!r} is not under references "
                f"({', '.join(sorted(spec.references))}); add it there with where it was read"
            )
        if not row.backbone.strip():
            raise ComparisonError(f"{at}: backbone is empty; write it, or '{NOT_STATED}'")
        if row.frames is not None and row.frames < 1:
            raise ComparisonError(f"{at}: frames = {row.frames}; write a count >= 1 or null")
        if (row.method, row.backbone) in seen:
            raise ComparisonError(f"{at}: a second row for {row.method} with {row.backbone}")
        seen.add((row.method, row.backbone))
        _validate_values(row, at, keys, spec.shots)


def _validate_values(row: ComparisonRow, at: str, keys: list[str], shots: list[int]) -> None:
    if not any(row.values.values()):
        raise ComparisonError(f"{at}: no values; a row needs at least one published number")
    for key, by_shot in row.values.items():
        if key not in keys:
            raise ComparisonError(f"{at}: dataset {key!r} is not a column ({', '.join(keys)})")
        for shot, value in by_shot.items():
            if shot not in shots:
                raise ComparisonError(f"{at}: {key} shot {shot} is not a column (shots {shots})")
            if not 0.0 <= value <= 100.0:
                raise ComparisonError(
                    f"{at}: {key} {shot}-shot = {value} is not an accuracy in [0, 100]"
                )


def _ref_numbers(spec: ComparisonSpec) -> dict[str, int]:
    """Reference key -> its number, in order of first use by a row."""
    order: dict[str, int] = {}
    for row in spec.rows:
        order.setdefault(row.ref, len(order) + 1)
    return order


def _secondary(spec: ComparisonSpec, row: ComparisonRow) -> bool:
    return spec.references[row.ref].kind == "secondary"


def to_table_spec(spec: ComparisonSpec) -> TableSpec:
    """The comparison as a :class:`TableSpec` (label columns :data:`LABEL_COLUMNS`)."""
    columns = [
        Column(d.label, f"{shot}-shot", d.key, spec.way, shot)
        for d in spec.datasets
        for shot in spec.shots
    ]
    numbers = _ref_numbers(spec)
    rows = [
        Row(
            labels=[
                r.method,
                r.venue,
                r.backbone,
                NOT_STATED if r.frames is None else str(r.frames),
                r.track,
                r.text,
                f"[{numbers[r.ref]}]" + (SECONDARY_MARK if _secondary(spec, r) else ""),
            ],
            values=[r.values.get(c.dataset, {}).get(c.shot) for c in columns],
            methods=list(r.methods),
        )
        for r in spec.rows
    ]
    return TableSpec(
        table=spec.name,
        protocol=None,
        caption=spec.caption,
        decimals=spec.decimals,
        label_columns=list(LABEL_COLUMNS),
        columns=columns,
        rows=rows,
        open_rows=True,
    )


def _run_label(entries: list[Entry], label_of) -> str:
    """One protocol label of a run row, ``label_of(record)`` joined when cells differ;
    :data:`NOT_RECORDED` when no record says."""
    found = sorted({x for e in entries for r in e.records if (x := label_of(r)) is not None})
    return " / ".join(found) if found else NOT_RECORDED


def _made_with(record) -> dict:
    """The frame encoder's settings: the frozen track's ``features``, else the finetune
    track's recipe ``options`` (backbone, weights, frames, tiny)."""
    options = (record.recipe or {}).get("options") if isinstance(record.recipe, dict) else None
    return record.features if record.features.get("backbone") else options or {}


def _backbone_label(record) -> str | None:
    """The backbone and, where they are not its published pre-training, its weights: a
    random, tiny or checkpoint-file tower printed as plain ``clip-vit-b16`` under the
    published CLIP ViT-B/16 row."""
    made = _made_with(record)
    if not made.get("backbone"):
        return None
    weights = str(made.get("weights", "pretrained"))
    extras = [] if weights in ("pretrained", "imagenet") else [f"weights {Path(weights).name}"]
    if made.get("tiny"):
        extras.append("tiny")
    return f"{made['backbone']} ({', '.join(extras)})" if extras else str(made["backbone"])


def _frames_label(record) -> str | None:
    made = _made_with(record)
    frames = made.get("num_frames", made.get("frames"))
    return None if frames is None else str(frames)


def _text_label(record) -> str | None:
    """A head's text tower where it has one (``clip-fsar``'s hyper-parameters)."""
    tower = (record.hparams or {}).get("text_tower")
    if tower is None:
        return None
    return f"{tower} ({(record.hparams or {}).get('text_weights', '?')})"


def _relabel_run_row(row: TableRow) -> None:
    """Give a run row our system's name and protocol: backbone, frames and track from the
    records (a run of a mapped method keeps its place right after the published row)."""
    entries = [c.entry for c in row.cells if c.entry is not None]
    if not entries:
        return
    tracks = " / ".join(sorted({e.setting.track for e in entries}))
    systems = sorted({e.system for e in entries})
    if all(e.stale for e in entries):  # the new label carries the mark: not every cell too
        for cell in row.cells:
            cell.text = cell.text.replace(f" {STALE_MARK}", "")
    row.labels = [
        " / ".join(systems),
        "this run",
        _run_label(entries, _backbone_label),
        _run_label(entries, _frames_label),
        tracks,
        _run_label(entries, _text_label),
        "",
    ]


def build_comparison(
    spec: ComparisonSpec,
    entries: list[Entry],
    *,
    source: str = "both",
    stand_in: str | None = "synth",
    aliases: dict[str, list[str]] | None = None,
    left_out: Sequence[str] = (),
) -> Table:
    """The comparison table with run rows from ``entries``: a run of a method some row maps
    sits right after that row, any other (non-variant) system gets a row of its own.
    ``left_out`` as in :func:`~fsarbench.report.tables.build_table`."""
    tspec = to_table_spec(spec)
    table = build_table(
        tspec,
        entries,
        source=source,
        stand_in=stand_in,
        aliases=aliases,
        known=tspec.methods,
        left_out=left_out,
    )
    published = iter(spec.rows)  # published rows keep the spec's order
    for row in table.rows:
        if row.source == "published":
            row.citation = next(published).ref
        else:
            _relabel_run_row(row)
    numbers = _ref_numbers(spec)
    if source != "runs":
        table.notes = [
            "published: numbers as reported in each row's source (Ref); the references say "
            f"what was read and where. {SECONDARY_MARK}: read in a secondary source, neither "
            "the paper nor the authors' repository.",
            *(n for n in table.notes if not n.startswith("published")),
        ]
        table.references = [f"[{n}] {spec.references[key]}" for key, n in numbers.items()]
    return table
