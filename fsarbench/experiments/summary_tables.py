"""Per-dataset Markdown tables of a run: methods x (way, shot), ``acc ± CI``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from fsarbench.io import atomic_write_text
from fsarbench.results import ResultRecord

__all__ = ["summary_tables", "write_summary_tables"]


def summary_tables(records: list[ResultRecord]) -> dict[str, str]:
    """One Markdown table per (dataset, track, protocol): rows methods, columns ``W-way
    K-shot``; the note says which models the numbers come from."""
    by_ds: dict[tuple[str, str, str], list[ResultRecord]] = defaultdict(list)
    for r in records:
        by_ds[(r.dataset, r.track, r.protocol)].append(r)
    out = {}
    for (ds, track, protocol), recs in sorted(by_ds.items()):
        cols = sorted({(r.way, r.shot) for r in recs})
        rows: dict[str, dict] = defaultdict(dict)
        for r in recs:
            rows[r.method][(r.way, r.shot)] = f"{r.accuracy:.2f} ± {r.ci95:.2f}"
        table = [[m, *(rows[m].get(c, "") for c in cols)] for m in sorted(rows)]
        headers = ["method", *(f"{w}-way {s}-shot" for w, s in cols)]
        episodes = sorted({r.episodes for r in recs})
        note = (
            f"\n\n{ds}, {track} track, {protocol} protocol; accuracy (%) ± 95% CI half-width "
            f"over {'/'.join(map(str, episodes))} test episodes (1.96·std/√n); "
            + _models_note(recs)
        )
        name = f"{ds}__{track}" + ("" if protocol == "seed" else f"__{protocol}")
        out[name] = tabulate(table, headers, tablefmt="github") + note
    return out


def _models_note(records: list[ResultRecord]) -> str:
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


def write_summary_tables(out_dir: str | Path, records: list[ResultRecord]) -> dict[str, Path]:
    paths = {}
    for name, text in summary_tables(records).items():
        path = Path(out_dir) / "tables" / f"{name}.md"
        atomic_write_text(path, text + "\n")
        paths[name] = path
    return paths
