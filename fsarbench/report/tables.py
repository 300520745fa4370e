"""Lay out one of the seed paper's tables from published numbers and result records.

Rows are the paper's methods (or ablation variants); columns are dataset × setting. A row's
published numbers form a row labelled ``published``; entries of our runs that fill the row (by
method name or ``tags["variant_label"]``, see :mod:`fsarbench.report.published`) form a row
labelled ``run`` right after it. Best and second per column are marked separately among
published and among run cells, comparing the values as printed. A stale entry's cell carries
:data:`~fsarbench.report.records.STALE_MARK` (unless its row's label does), and a current entry
wins a cell over a stale one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fsarbench.data.protocols import DEFAULT_PROTOCOL
from fsarbench.provenance import not_installed_advice
from fsarbench.report.episode_protocol import (
    EpisodeProtocol,
    cell_marker,
    mixes_protocols,
    protocol_of,
    reference_protocol,
)
from fsarbench.report.published import (
    Column,
    Row,
    TableSpec,
    known_methods,
    load_dataset_aliases,
)
from fsarbench.report.recipe_changes import recipe_changes, recipe_changes_text
from fsarbench.report.records import STALE_MARK, Entry, entry_text, left_out_entry
from fsarbench.results import stale_reasons
from fsarbench.stats.rounding import fixed, rounded

__all__ = ["Cell", "TableRow", "Table", "build_table", "seed_notes", "SOURCES"]

SOURCES = ("published", "runs", "both")
RUN_DECIMALS = 2
#: The frame protocol of the seed paper's tables (``run``'s default): a run cell of another
#: (``run --protocol trx``) loses a cell to it, is ranked apart from it and is marked.
TABLE_PROTOCOL = DEFAULT_PROTOCOL


@dataclass
class Cell:
    """One number: ``value`` as printed (``None`` = "-"), its text, and its marks."""

    value: float | None
    text: str
    mark: str = ""  # "", "best" or "second"
    significant: bool = False
    entry: Entry | None = None


@dataclass
class TableRow:
    labels: list[str]
    source: str  # "published", "run", or "run (<generated dataset>)", e.g. "run (synth)"
    cells: list[Cell]
    ours: bool = False
    citation: str = ""  # reference key of this row's numbers, where rows cite different sources


@dataclass
class Table:
    spec: TableSpec
    rows: list[TableRow]
    notes: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # "[n] source" lines, in order


def _published_row(spec: TableSpec, row: Row) -> TableRow:
    d = spec.decimals
    cells = [Cell(v, "-" if v is None else fixed(v, d)) for v in row.values]
    return TableRow(list(row.labels), "published", cells, row.ours)


def _entry_text(e: Entry) -> str:
    return entry_text(e, RUN_DECIMALS)


def _cell_text(e: Entry, label_marked: bool) -> str:
    """A run cell's text, plus :data:`STALE_MARK` for a stale entry in a row whose label does
    not already say so (a paper row such as ``OTAM [4]`` names the row, not the system)."""
    text = _entry_text(e)
    return f"{text} {STALE_MARK}" if e.stale and not label_marked else text


def _run_row(labels: list[str], entries: list[Entry | None], ours: bool) -> TableRow:
    marked = any(STALE_MARK in label for label in labels)
    cells = [
        Cell(None, "-")
        if e is None
        else Cell(rounded(e.accuracy, RUN_DECIMALS), _cell_text(e, marked), entry=e)
        for e in entries
    ]
    generated = sorted({e.setting.dataset for e in entries if e is not None and e.synthetic})
    if not generated:
        return TableRow(labels, "run", cells, ours)
    if all(e is None or e.synthetic for e in entries):
        return TableRow(labels, f"run ({', '.join(generated)})", cells, ours)
    # real and stand-in cells in one row: the row's label named it all synthetic, and a
    # synthetic number sat unmarked under a real dataset's header beside real ones
    for cell in cells:
        if cell.entry is not None and cell.entry.synthetic:
            cell.text += f" [{cell.entry.setting.dataset}]"
    return TableRow(labels, f"run ({', '.join(generated)} where marked)", cells, ours)


def _norm(text: str) -> str:
    return "".join(str(text).lower().split())


def _column_of(
    entry: Entry, columns: list[Column], aliases: dict[str, list[str]], stand_in: str | None
) -> list[int]:
    """Indices of the columns ``entry`` fills. A generic stand-in (``synth`` without a
    ``stands_in_for`` tag) fills the columns of the table's first dataset only, so one
    synthetic number is not repeated under every real dataset."""
    ds = _norm(entry.setting.dataset)
    first = columns[0].dataset if columns else None
    stands_for = _norm(entry.tags.get("stands_in_for", ""))
    out = []
    for j, col in enumerate(columns):
        if (entry.setting.way, entry.setting.shot) != (col.way, col.shot):
            continue
        names = aliases.get(col.dataset, [col.dataset.lower()])
        if (
            ds in names
            or stands_for in names
            or (
                stand_in is not None
                and ds == _norm(stand_in)
                and not stands_for
                and col.dataset == first
            )
        ):
            out.append(j)
    return out


def _row_key(entry: Entry, spec: TableSpec, known: set[str]) -> str | None:
    """Paper row name ``entry`` fills, ``"+<system>"`` for a new row, or ``None`` (not here).

    Rows match by method name; ablation records tagged ``variant_label`` (and ``table`` = this
    table) match a row's ``variant``. Tables with ``open_rows`` give any other plain method
    (not mapped by any published table, not a hyper-parameter override) a row of its own.
    """
    variant = entry.tags.get("variant_label")
    if variant is not None and _table_tag(entry) == str(spec.table):
        for row in spec.rows:
            if _norm(variant) in {_norm(v) for v in row.variants}:
                return row.name
        return f"+{variant}"
    for row in spec.rows:
        if entry.system in row.methods or (variant is None and entry.method in row.methods):
            return row.name
    if spec.open_rows and not entry.is_variant and entry.method not in known:
        return f"+{entry.system}"
    return None


def _table_tag(entry: Entry) -> str:
    tag = str(entry.tags.get("table", "")).lower()
    return tag.removeprefix("table").strip()


def _precedence(e: Entry, track: str | None = None) -> tuple[bool, ...]:
    """Sort key of the entries competing for one cell, the first wins: current over stale,
    the table's own track (``track``, its published protocol's) over another, the seed
    paper's frame protocol over another (``hyrsm`` won over ``seed`` by name order), the
    default recipe over a changed one (a model shared across shots, or trained 10-way, took
    a per-shot model's cell by hash order), real data over a stand-in, more test episodes,
    then the lower episode seed."""
    other_track = track is not None and e.setting.track != track
    other_protocol = e.setting.protocol != TABLE_PROTOCOL
    changed = bool(recipe_changes(e.records[0]))
    return (
        e.stale,
        other_track,
        other_protocol,
        changed,
        e.synthetic,
        -e.setting.episodes,
        e.setting.seed,
    )


#: Why the first of two entries wins a cell, by the first field of :func:`_precedence` that
#: differs.
_WINS = (
    "a current record wins over a stale one",
    "the table's own track wins",
    f"the seed paper's frame protocol ({TABLE_PROTOCOL}) wins",
    "the default recipe (one model per shot, at the recipe's way) wins",
    "real data wins over a stand-in",
    "more test episodes win",
    "the lower episode seed wins",
)


def _why_shown(shown: Entry, left: Entry, track: str | None) -> str:
    """Why ``shown`` took the cell ``left`` also fills (in the words of :data:`_WINS`)."""
    for why, a, b in zip(_WINS, _precedence(shown, track), _precedence(left, track)):
        if a != b:
            return why
    return "equal precedence: the first in setting and name order wins"


def _place_entries(
    spec: TableSpec, entries: list[Entry], aliases, stand_in, known, passed_over: list[str]
):
    """``{row key: [Entry | None per column]}``; who wins a cell is :func:`_precedence`'s.
    Entries that lose a cell to another are named in ``passed_over`` (for a note under the
    table), with the reason."""
    placed: dict[str, list[Entry | None]] = {}
    track = spec.track
    for e in sorted(entries, key=lambda e: _precedence(e, track)):
        key = _row_key(e, spec, known)
        if key is None:
            continue
        for j in _column_of(e, spec.columns, aliases, stand_in):
            slots = placed.setdefault(key, [None] * len(spec.columns))
            if slots[j] is None:
                slots[j] = e
            else:
                col = spec.columns[j]
                passed_over.append(
                    f"{e.system} ({e.setting.label}) in row {key.lstrip('+')}, column "
                    f"{col.dataset} {col.way}-way {col.shot}-shot: the cell shows "
                    f"{slots[j].system} ({slots[j].setting.label}): "
                    f"{_why_shown(slots[j], e, track)}"
                )
    return placed


def _mark_best(
    rows: list[TableRow],
    source_prefix: str,
    track: str | None = None,
    reference: EpisodeProtocol | None = None,
) -> None:
    """Mark best and second (distinct printed values) per column among rows of one source.
    Run cells compete only on the same test episodes (:func:`_comparable`, preferring the
    table's ``reference`` protocol); a column with one such cell has nothing to be best
    against and is not marked."""
    chosen = [r for r in rows if r.source.startswith(source_prefix)]
    if not chosen:
        return
    for j in range(len(chosen[0].cells)):
        shown = [r.cells[j] for r in chosen if r.cells[j].value is not None]
        cells = _comparable(shown, track, reference)
        if len(cells) < 2:
            continue
        values = sorted({c.value for c in cells}, reverse=True)
        for c in cells:
            if c.value == values[0]:
                c.mark = "best"
            elif len(values) > 1 and c.value == values[1]:
                c.mark = "second"


def _comparable(
    cells: list[Cell], track: str | None = None, reference: EpisodeProtocol | None = None
) -> list[Cell]:
    """The cells of a column that can be ranked together: published cells as they are; run
    cells of the table's own ``track`` when the column has any, of the seed paper's frame
    protocol when it has any, on real data when it has any (a synthetic stand-in is not
    ranked against them), and of those the ones on the track, protocol and test episodes
    most of them share: those on the table's ``reference`` episode protocol first (the one
    the other cells' markers are relative to: a column's majority on another protocol was
    bold under an "[N episodes]" marker while the reference cells went unranked), then the
    most cells, then the fewest videos left out."""
    runs = [c for c in cells if c.entry is not None]
    if not runs:
        return cells
    runs = [c for c in runs if c.entry.setting.track == track] or runs  # the table's own
    runs = [c for c in runs if c.entry.setting.protocol == TABLE_PROTOCOL] or runs
    real = [c for c in runs if not c.entry.synthetic] or runs
    counts = Counter(_pool(c.entry) for c in real)
    protocols = {_pool(c.entry): protocol_of(c.entry.records[0]) for c in real}
    # ties: the pool with the fewest test videos left out (a run that lost one does not set
    # the reference for one that did not), then the first in row order
    common = max(
        counts,
        key=lambda k: (protocols[k] == reference, counts[k], -len(k[2].left_out)),
    )
    return [c for c in real if _pool(c.entry) == common]


def _pool(e: Entry) -> tuple:
    """What two run cells must share to be ranked or tested against each other: track,
    frame protocol and test episodes."""
    return (e.setting.track, e.setting.protocol, e.episodes_key)


def _best_baseline(cells: list[Cell], ours: Entry) -> Entry | None:
    """The best baseline run of a column on the track, protocol and test episodes of
    ``ours``, if any."""
    same = [c.entry for c in cells if _pool(c.entry) == _pool(ours)]
    return max(same, key=lambda e: e.accuracy) if same else None


def build_table(
    spec: TableSpec,
    entries: list[Entry],
    *,
    source: str = "both",
    stand_in: str | None = "synth",
    aliases: dict[str, list[str]] | None = None,
    known: set[str] | None = None,
    left_out: Sequence[str] = (),
) -> Table:
    """The table as rows of cells; ``source`` is ``published``, ``runs`` or ``both``.

    ``aliases`` (paper dataset key -> record dataset names) and ``known`` (methods mapped by
    any published table) default to the published folder's. Outside results (added from
    verified bundles) are not reproductions: tables leave them out, the leaderboard ranks them.
    ``left_out``: why records of the folder were left out (:class:`LeftOut` reasons name
    their entry); those this table would have shown, and those without an entry, are named
    in its notes (not with ``source="published"``).
    """
    entries = [e for e in entries if not e.outside]
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    aliases = load_dataset_aliases() if aliases is None else aliases
    known = known_methods() if known is None else known
    placed, passed_over = {}, []
    if source != "published":
        placed = _place_entries(spec, entries, aliases, stand_in, known | spec.methods, passed_over)
    rows: list[TableRow] = []
    for row in spec.rows:
        if source != "runs":
            rows.append(_published_row(spec, row))
        if row.name in placed:
            rows.append(_run_row(list(row.labels), placed.pop(row.name), row.ours))
    for key, slots in sorted(placed.items()):
        labels = [key[1:]] + ["-"] * (len(spec.label_columns) - 1)  # as the paper's Ours rows
        rows.append(_run_row(labels, slots, False))
    shown = [rec for r in rows for c in r.cells if c.entry is not None for rec in c.entry.records]
    reference = reference_protocol(shown) if mixes_protocols(shown) else None
    _mark_best(rows, "published")
    _mark_best(rows, "run", spec.track, reference)
    notes = _notes(rows) + _stale_notes(rows) + _track_notes(spec, entries, source)
    notes += [f"not shown: {what}." for what in passed_over]
    _mark_other_episodes(rows, shown)
    notes += _mark_other_test_videos(rows, spec.track, reference)
    _mark_other_tracks(rows, spec.track)
    notes += test_pool_notes(shown) + seed_notes(shown)
    intervals = interval_note([c.entry for r in rows for c in r.cells if c.entry is not None])
    notes += [intervals] if intervals else []
    changed = recipe_changes_text(shown)
    notes += [changed] if changed else []
    if source != "published":
        here = known | spec.methods
        notes += left_out_notes(
            [r for r in left_out if _would_show(r, spec, aliases, stand_in, here)]
        )
    return Table(spec, rows, notes)


def _would_show(reason: str, spec: TableSpec, aliases, stand_in, known: set[str]) -> bool:
    """Whether the entry a left-out ``reason`` names has a row and a column in ``spec``'s
    table (a reason naming no entry, such as an unreadable file, may belong to any)."""
    entry = left_out_entry(reason)
    if entry is None:
        return True
    if entry.outside:
        return False
    return (
        _row_key(entry, spec, known) is not None
        and len(_column_of(entry, spec.columns, aliases, stand_in)) > 0
    )


def left_out_notes(left_out: list[str]) -> list[str]:
    """Notes under a table naming the records of the folder that were left out (unreadable,
    or not given by their per-query rows): a ``-`` in a run row may stand for one of them."""
    return [f"left out of this table (a '-' may stand for it): {reason}." for reason in left_out]


#: Test episodes per setting of the published protocol (PROTOCOL.md).
PROTOCOL_EPISODES = 10_000


def test_pool_notes(shown: list, *, episodes: bool = True) -> list[str]:
    """Per dataset of the shown run records, what their numbers are over where that is less
    than the published protocol's: fewer test episodes than its 10,000 (with ``episodes``),
    and listed test videos the runs left out (a renamed class folder, damaged files). Both
    were printed beside the published numbers without a word."""
    from fsarbench.report.records import left_out_test_videos

    notes = []
    for dataset in sorted({r.dataset for r in shown}):
        records = [r for r in shown if r.dataset == dataset]
        parts = []
        fewer = sorted({r.episodes for r in records if r.episodes < PROTOCOL_EPISODES})
        if fewer and episodes:
            counts = ", ".join(f"{n:,}" for n in fewer)
            parts.append(
                f"cells over {counts} test episodes (the published protocol: {PROTOCOL_EPISODES:,})"
            )
        lost = sorted({v for r in records for v in left_out_test_videos(r)})
        if lost:
            shown_ids = ", ".join(lost[:3]) + (" ..." if len(lost) > 3 else "")
            parts.append(
                f"{len(lost)} listed test video(s) left out as missing, unreadable or too "
                f"short ({shown_ids}; each record's skipped_videos and the report name them)"
            )
        if parts:
            notes.append(f"run cells on {dataset}: {'; '.join(parts)}.")
    return notes


def seed_notes(records: list) -> list[str]:
    """The episode seed(s) of the test episodes and the training seed(s) of the models of
    ``records``, where they are not the defaults (0): a table made with other seeds read
    exactly like one made with the defaults."""
    episode = sorted({r.seed for r in records})
    train = sorted({r.train_seed for r in records if r.train_seed is not None})
    notes = []
    if episode and episode != [0]:
        notes.append(f"test episodes drawn with episode seed {', '.join(map(str, episode))}.")
    if train and train != [0]:
        notes.append(f"models trained with training seed {', '.join(map(str, train))}.")
    return notes


def _mark_other_episodes(rows: list[TableRow], shown: list) -> None:
    """Append to each run cell evaluated on other test episodes than most shown run cells
    what its episodes were (``" [2000 episodes]"``), so that a reader never compares the
    two as one protocol; the change notes name the same cells."""
    if not mixes_protocols(shown):
        return
    reference = reference_protocol(shown)
    for row in rows:
        for cell in row.cells:
            if cell.entry is not None:
                cell.text += cell_marker(cell.entry.records, reference)


#: Appended to a run cell whose test videos are not those of the cells it is ranked with.
OTHER_VIDEOS_MARK = " [other test videos]"
#: Appended to a run cell on the same videos and protocol but other episodes drawn from them
#: (another manifest: drawn for another dataset name, or by other code).
OTHER_DRAW_MARK = " [other episodes drawn]"


def _mark_other_test_videos(
    rows: list[TableRow], track: str | None, reference: EpisodeProtocol | None = None
) -> list[str]:
    """Append :data:`OTHER_VIDEOS_MARK` to each run cell evaluated over other test videos
    (another test list, or other videos left out) than the cells its column ranks
    (:func:`_comparable`), and :data:`OTHER_DRAW_MARK` to one on other episodes of the same
    videos and protocol: either left it out of bold and ``*`` without a word (a better
    baseline on a pool that lost one video sat unmarked beside a bold, starred 'ours');
    return the notes that say what the marks mean and name each such cell's difference.
    Cells on another episode protocol carry that protocol's marker instead."""
    marked: dict[str, list[str]] = {OTHER_VIDEOS_MARK: [], OTHER_DRAW_MARK: []}
    for j in range(len(rows[0].cells) if rows else 0):
        cells = [r.cells[j] for r in rows if r.cells[j].entry is not None]
        ranked = _comparable(cells, track, reference)
        if len(ranked) < 1 or len(ranked) == len(cells):
            continue
        first = ranked[0].entry
        common = first.episodes_key
        for c in cells:
            key = c.entry.episodes_key
            said_apart = (
                c.entry.setting.track,
                c.entry.setting.protocol,
                c.entry.synthetic,
                protocol_of(c.entry.records[0]),
            ) != (
                first.setting.track,
                first.setting.protocol,
                first.synthetic,
                protocol_of(first.records[0]),
            )
            if key == common or said_apart:  # other tracks, stand-ins, protocols: marked
                continue
            same_videos = (key.test_list_md5, key.left_out) == (
                common.test_list_md5,
                common.left_out,
            )
            mark = OTHER_DRAW_MARK if same_videos else OTHER_VIDEOS_MARK
            c.text += mark
            marked[mark].append(
                f"{c.entry.system} ({c.entry.setting.label}): {key.differences(common)}"
            )
    meaning = {
        OTHER_VIDEOS_MARK: "evaluated over other test videos than the run cells its column "
        "ranks (another test list, or other videos left out)",
        OTHER_DRAW_MARK: "evaluated on other episodes drawn from the same test videos, with "
        "the same episode count and seed, than the run cells its column ranks (a manifest "
        "drawn under another dataset name, or by other code)",
    }
    return [
        f"{mark.strip()}: {meaning[mark]}, so not ranked against them (bold, *): "
        + "; ".join(found)
        + "."
        for mark, found in marked.items()
        if found
    ]


def _mark_other_tracks(rows: list[TableRow], track: str | None) -> None:
    """Where run cells of several tracks are shown, append ``" [frozen track]"`` to each cell
    not of the table's own track (or, without one, of the most common): a frozen-feature
    number is never read as the finetuned one beside it. The same for frame protocols
    (``" [trx protocol]"``, against :data:`TABLE_PROTOCOL`), and ``" [trained 1-shot]"`` on
    a cell whose model was trained at another shot (shared across shots)."""
    cells = [c for r in rows for c in r.cells if c.entry is not None]
    for field_of, suffix, own in (
        (lambda e: e.setting.track, "track", track),
        (lambda e: e.setting.protocol, "protocol", TABLE_PROTOCOL),
    ):
        kinds = Counter(field_of(c.entry) for c in cells)
        if len(kinds) < 2:
            continue
        main = own if own in kinds else kinds.most_common(1)[0][0]
        for c in cells:
            if field_of(c.entry) != main:
                c.text += f" [{field_of(c.entry)} {suffix}]"
    for c in cells:
        c.text += c.entry.records[0].trained_mark(c.entry.setting.shot)


def _stale_notes(rows: list[TableRow]) -> list[str]:
    """What :data:`STALE_MARK` means, with the reasons of the stale cells shown; none when
    every run cell is current."""
    note = stale_note([c.entry for r in rows for c in r.cells if c.entry is not None])
    return [f"{note} Where a cell has both, the current record is shown."] if note else []


def stale_note(entries: list[Entry]) -> str:
    """What :data:`STALE_MARK` means, with the reasons of the stale ``entries``; ``""``
    when all are current (the leaderboard and report showed the mark unexplained)."""
    stale = [e for e in entries if e.stale]
    if not stale:
        return ""
    why = sorted({w for e in stale for rec in e.records for w in stale_reasons(rec)})
    missing = not_installed_advice(why)
    return (
        f"{STALE_MARK}: made by other code than the installed one, or kept with run "
        f"--reuse-stale ({', '.join(why)}); not a result of the current code: re-run these "
        "cells to refresh them." + (f" {missing}." if missing else "")
    )


def interval_note(entries: list[Entry]) -> str:
    """Which systems' ± is another interval than the others' (``eval --interval t`` beside
    ``run``'s 1.96·std/√n): one column mixed both without a word; ``""`` when all agree."""
    spreads = {e.system: {r.spread for r in e.records} for e in entries}
    kinds = {s for found in spreads.values() for s in found}
    if len(kinds) < 2:
        return ""
    by_kind = {k: sorted(n for n, found in spreads.items() if k in found) for k in sorted(kinds)}
    parts = [f"{', '.join(names)}: {kind}" for kind, names in by_kind.items()]
    return "± is not one interval throughout (" + "; ".join(parts) + ")."


def _track_notes(spec: TableSpec, entries: list[Entry], source: str) -> list[str]:
    """Which protocol the published numbers follow, and where run cells follow another (a
    table without one ``protocol`` labels each row instead)."""
    tracks = sorted({e.setting.track for e in entries})
    notes = []
    if spec.protocol is not None and source != "runs":
        notes.append(f"published protocol: {spec.protocol.label}.")
    other = [t for t in tracks if spec.protocol is not None and t != spec.protocol.track]
    if source == "both" and other:
        notes.append(
            f"run cells of the {', '.join(other)} track sit beside published {spec.protocol.track}"
            "-track numbers: a different protocol, not a reproduction of them."
        )
    elif source == "runs" and other:
        notes.append(
            f"run cells of the {', '.join(other)} track: the paper's numbers are "
            f"{spec.protocol.track}-track ones, a different protocol."
        )
    if source != "published" and tracks:
        notes.append(f"run cells: {', '.join(tracks)} track.")
    protocols = sorted({e.setting.protocol for e in entries})
    if source != "published" and protocols not in ([], [TABLE_PROTOCOL]):
        notes.append(
            f"run cells' frame protocols: {', '.join(protocols)}; a cell of another than the "
            f"seed paper's ({TABLE_PROTOCOL}) is marked [<name> protocol] where the table "
            "mixes them, and run cells are ranked only against cells of one protocol."
        )
    return notes


def _notes(rows: list[TableRow]) -> list[str]:
    notes = []
    if any(r.source == "published" for r in rows):
        notes.append("published: numbers as printed in the seed paper (see citation).")
    if any(r.source.startswith("run") for r in rows):
        notes.append(
            "run: accuracy ± 95% CI half-width over test episodes; where several "
            "training seeds exist, the mean over seeds, ± the 95% half-width pooled over "
            "seeds and episodes (Student t on each term: S-1 and E-1 degrees of freedom), "
            "and their std separately (seeds ± s, n; ddof=1)."
        )
        notes.append(
            "Bold/underline mark best/second per column, separately among published "
            "and among run cells; run cells are ranked only against runs on the same test "
            "episodes (a synthetic stand-in is not ranked against real runs)."
        )
    generated = sorted({r.source for r in rows if r.source.startswith("run (")})
    if generated:
        notes.append(
            f"{', '.join(generated)}: synthetic features standing in for the paper's datasets, "
            "shown once, under the first dataset's columns; not comparable with published numbers."
        )
    return notes


def mark_significant(
    table: Table, run_dir: str | Path, *, alpha: float = 0.05, test: str = "ttest"
) -> int:
    """Flag run cells of the paper's own rows that are significantly better (paired, Holm over
    every cell tested) than the best baseline run in their column; returns the flag count."""
    from fsarbench.report.compare import TESTS, compare_entries
    from fsarbench.stats.multiple import holm

    runs = [r for r in table.rows if r.source.startswith("run")]
    tests, untested = [], 0
    for j in range(len(table.spec.columns)):
        base = [r.cells[j] for r in runs if not r.ours and r.cells[j].entry is not None]
        for r in runs:
            e = r.cells[j].entry
            if not r.ours or e is None:
                continue
            best = _best_baseline(base, e) if base else None
            if best is None:
                untested += 1
            else:
                tests.append((r.cells[j], compare_entries(run_dir, e, best)))
    # a comparison without a p-value (McNemar across training seeds, one episode) is left
    # out of Holm's family; it was counted in "Holm over N cells" and its cell read as tested
    no_p = [t for t in tests if math.isnan(t[1].p_value(TESTS[test]))]
    tests = [t for t in tests if not math.isnan(t[1].p_value(TESTS[test]))]
    adjusted = holm([c.p_value(TESTS[test]) for _, c in tests]) if tests else []
    for (cell, comp), p in zip(tests, adjusted):
        cell.significant = bool(p <= alpha and comp.diff > 0)
    if tests:
        # in the ablation tables (3-5) the other rows are variants of ours, not baselines
        other = "other row" if table.spec.table in (3, 4, 5) else "other method"
        table.notes.append(
            f"*: significantly better than the best {other} run of the column on the same "
            f"test episodes (paired {test}, Holm over {len(tests)} cells, α = {alpha})."
        )
    if untested:
        table.notes.append(
            f"{untested} run cell(s) of ours not tested: no baseline run of their column was "
            "evaluated on the same test episodes (or none was run): no * means untested there."
        )
    if no_p:
        table.notes.append(
            f"{len(no_p)} run cell(s) of ours not tested: the paired {test} gives no p-value "
            "against the column's best baseline (e.g. McNemar between other training seeds, "
            "or a single episode): no * means untested there."
        )
    return sum(c.significant for c, _ in tests)
