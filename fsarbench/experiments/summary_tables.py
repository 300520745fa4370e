"""Per-dataset Markdown tables of a run: methods x (way, shot), ``acc ± CI``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from fsarbench.io import atomic_write_text
from fsarbench.report.markdown import md_cell_text
from fsarbench.report.recipe_changes import recipe_changes_text
from fsarbench.report.records import (
    Entry,
    LeftOut,
    Setting,
    entry_text,
    given_copies,
    group_entries,
    records_given_by_rows,
)
from fsarbench.report.tables import interval_note, seed_notes, test_pool_notes
from fsarbench.results import OUTSIDE_TAG, ResultRecord

__all__ = ["summary_tables", "write_summary_tables"]


def summary_tables(
    records: list[ResultRecord],
    refused: list[tuple[ResultRecord, str]] = (),
    dropped: list[LeftOut] = (),
) -> dict[str, str]:
    """One Markdown table per (dataset, track, protocol): rows systems, columns ``W-way
    K-shot`` (plus the episode seed, queries or episode count where a table has several).

    Records of one system and setting that differ only in their training seed are one cell
    (their mean, ``±`` pooling seed and episode variance, and the seeds' std), as in the
    paper tables and the leaderboard; outside results (bundles) are left out: the tables show
    this folder's runs. The note says what ``±`` is and which models the numbers come from;
    ``refused``: records left out with the reason (:func:`records_given_by_rows`), named in
    their table's note; ``dropped``: copies of cells another copy stands for
    (:func:`~fsarbench.report.records.given_copies`), named there too.
    """
    own = [r for r in records if not r.tags.get(OUTSIDE_TAG)]
    by_ds: dict[tuple[str, str, str], list[ResultRecord]] = defaultdict(list)
    refused_in: dict[tuple[str, str, str], list[ResultRecord]] = defaultdict(list)
    left_out_in: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for r in own:
        by_ds[(r.dataset, r.track, r.protocol)].append(r)
    for r, reason in refused:
        by_ds.setdefault((r.dataset, r.track, r.protocol), [])
        refused_in[(r.dataset, r.track, r.protocol)].append(r)
        left_out_in[(r.dataset, r.track, r.protocol)].append(reason)
    for note in dropped:
        r = note.entry.records[0]
        left_out_in[(r.dataset, r.track, r.protocol)].append(note)
    out = {}
    for (ds, track, protocol), recs in sorted(by_ds.items()):
        left_out: list[str] = list(left_out_in[(ds, track, protocol)])
        name = f"{ds}__{track}" + ("" if protocol == "seed" else f"__{protocol}")
        entries = _whole_entries(recs, refused_in[(ds, track, protocol)], left_out)
        if not entries:  # every record of it was refused: say so, not an empty table
            out[name] = f"{ds}, {track} track, {protocol} protocol: no record can be shown." + (
                "".join(f"\nLeft out: {reason}." for reason in left_out)
            )
            continue
        label = _column_labeller([e.setting for e in entries])
        cols = sorted({e.setting for e in entries}, key=_column_order)
        rows: dict[str, dict[Setting, str]] = defaultdict(dict)
        for e in entries:
            rows[e.system][e.setting] = entry_text(e) + _trained_mark(e)
        table = [[md_cell_text(m), *(rows[m].get(c, "") for c in cols)] for m in sorted(rows)]
        headers = ["method", *(label(c) for c in cols)]
        shown = [r for e in entries for r in e.records]
        note = f"\n\n{ds}, {track} track, {protocol} protocol; " + _spread_note(shown, entries)
        note += _models_note(shown)
        changed = recipe_changes_text(shown)
        note += f"\n{changed}" if changed else ""
        note += "".join(f"\n{pool}" for pool in test_pool_notes(shown, episodes=False))
        note += "".join(f"\n{seeds}" for seeds in seed_notes(shown))
        intervals = interval_note(entries)  # which cells' ± is which, when they differ
        note += f"\n{intervals}" if intervals else ""
        note += "".join(f"\nLeft out: {reason}." for reason in left_out)
        out[name] = tabulate(table, headers, tablefmt="github") + note
    return out


def _whole_entries(
    kept: list[ResultRecord], refused: list[ResultRecord], left_out: list[str]
) -> list[Entry]:
    """The entries of ``kept`` records, less each entry one of whose training seeds was
    ``refused`` (named in ``left_out``): pooled over the seeds left, it was printed beside
    paper tables and a leaderboard that left the whole entry out."""
    kept_cells = {r.cell for r in kept}  # a refused copy of a kept record is not a lost seed
    refused = [r for r in refused if r.cell not in kept_cells]
    refused_ids = {id(r) for r in refused}
    entries = group_entries([*kept, *refused], left_out=left_out)
    whole = []
    for e in entries:
        lost = [r for r in e.records if id(r) in refused_ids]
        if not lost:
            whole.append(e)
        elif len(lost) < len(e.records):
            seeds = ", ".join(str(r.train_seed) for r in lost)
            left_out.append(
                f"{e.system} in {e.setting.label}: the record of training seed {seeds} is "
                "left out (above), so the entry is too (its seeds are not pooled without it)"
            )
    return whole


def _column_order(s: Setting) -> tuple:
    return (s.way, s.shot, s.seed, s.queries, s.episodes)


def _column_labeller(settings: list[Setting]):
    """``Setting -> header``: way and shot, plus whatever else varies across the table."""
    seeds = len({s.seed for s in settings}) > 1
    queries = len({s.queries for s in settings}) > 1
    episodes = len({s.episodes for s in settings}) > 1

    def label(s: Setting) -> str:
        text = f"{s.way}-way {s.shot}-shot"
        text += f", episode seed {s.seed}" if seeds else ""
        text += f", {s.queries} queries" if queries else ""
        return text + (f", {s.episodes} episodes" if episodes else "")

    return label


def _spread_note(records: list[ResultRecord], entries: list[Entry]) -> str:
    """What the ``±`` of the table is, from the records' own ``spread``."""
    episodes = "/".join(map(str, sorted({r.episodes for r in records})))
    spreads = sorted({r.spread for r in records if r.spread})
    what = "; ".join(spreads) if spreads else "95% CI half-width"
    note = f"accuracy (%) ± {what}, over {episodes} test episodes"
    if any(e.seeds is not None for e in entries):
        note += (
            "; a cell with several training seeds gives their mean accuracy, ± the 95% "
            "half-width pooled over seeds and episodes (Student t: t(0.975, S-1) on the "
            "variance of the S seed means, t(0.975, E-1) on the mean episode variance, added "
            "in quadrature), and the std over seeds (ddof=1)"
        )
    return note + "; "


def _trained_mark(entry: Entry) -> str:
    """:meth:`ResultRecord.trained_mark` of a cell whose records all agree on it (a model shared
    across shots, or trained on another shot's episodes), as the paper tables mark it: beside
    the per-shot model's row of the same method, the rows were told apart by their ``@config``
    labels alone."""
    marks = {r.trained_mark(entry.setting.shot) for r in entry.records}
    return marks.pop() if len(marks) == 1 else ""


def _models_note(records: list[ResultRecord]) -> str:
    return _shared_models_note(records) + _episodes_note(records)


def _shared_models_note(records: list[ResultRecord]) -> str:
    trained = {(r.train_way, r.train_shot) for r in records}
    if None in {s for _, s in trained}:
        return "models as recorded."
    if all(r.train_shot == r.shot for r in records):
        ways = sorted({w for w, _ in trained})
        return (
            f"one model per shot, trained {'/'.join(map(str, ways))}-way (N-way columns reuse it)."
        )
    return (
        "models shared across shots: "
        + ", ".join(f"trained {w}-way {s}-shot" for w, s in sorted(trained))
        + "."
    )


def _episodes_note(records: list[ResultRecord]) -> str:
    """Models trained on episodes of another shot than their own (a recipe's ``train_shot``,
    e.g. CLIP-FSAR's 5-shot model on 1-shot tasks)."""
    other = sorted(
        {
            (r.method, r.train_shot, r.episode_shot)
            for r in records
            if r.episode_shot != r.train_shot
        }
    )
    if not other:
        return ""
    return (
        " "
        + "; ".join(
            f"{m}'s {s}-shot model trained on {e}-shot episodes (the recipe's train_shot)"
            for m, s, e in other
        )
        + "."
    )


def write_summary_tables(out_dir: str | Path, records: list[ResultRecord]) -> dict[str, Path]:
    """Write :func:`summary_tables` under ``out_dir/tables``; records their per-query rows do
    not give are left out and named in their table's note."""
    records, dropped = given_copies(out_dir, records)
    records, refused = records_given_by_rows(out_dir, records)
    paths = {}
    for name, text in summary_tables(records, refused, dropped).items():
        path = Path(out_dir) / "tables" / f"{name}.md"
        atomic_write_text(path, text + "\n")
        paths[name] = path
    return paths
