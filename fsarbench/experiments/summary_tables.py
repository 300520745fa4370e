"""Per-dataset Markdown tables of a run: methods x (way, shot), ``acc ± CI``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from fsarbench.io import atomic_write_text
from fsarbench.results import ResultRecord

__all__ = ["summary_tables", "write_summary_tables"]


def summary_tables(records: list[ResultRecord]) -> dict[str, str]:
    """One Markdown table per (dataset, track): rows methods, columns ``W-way K-shot``."""
    by_ds: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    for r in records:
        by_ds[(r.dataset, r.track)].append(r)
    out = {}
    for (ds, track), recs in sorted(by_ds.items()):
        cols = sorted({(r.way, r.shot) for r in recs})
        rows: dict[str, dict] = defaultdict(dict)
        for r in recs:
            rows[r.method][(r.way, r.shot)] = f"{r.accuracy:.2f} ± {r.ci95:.2f}"
        table = [[m, *(rows[m].get(c, "") for c in cols)] for m in sorted(rows)]
        headers = ["method", *(f"{w}-way {s}-shot" for w, s in cols)]
        episodes = sorted({r.episodes for r in recs})
        note = (
            f"\n\n{ds}, {track} track; accuracy (%) ± 95% CI half-width over "
            f"{'/'.join(map(str, episodes))} test episodes (1.96·std/√n)."
        )
        out[f"{ds}__{track}"] = tabulate(table, headers, tablefmt="github") + note
    return out


def write_summary_tables(out_dir: str | Path, records: list[ResultRecord]) -> dict[str, Path]:
    paths = {}
    for name, text in summary_tables(records).items():
        path = Path(out_dir) / "tables" / f"{name}.md"
        atomic_write_text(path, text + "\n")
        paths[name] = path
    return paths
