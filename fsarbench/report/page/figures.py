"""The figures of a results folder, rendered afresh and embedded as ``data:`` URIs so the page
is one file that works offline and on any static host."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fsarbench.report.records import Entry
from fsarbench.stats.paired import DEFAULT_BOOTSTRAP

__all__ = ["FigureView", "embed_figures", "figure_views", "data_uri"]


@dataclass(frozen=True)
class FigureView:
    name: str
    title: str
    uri: str


def data_uri(path: Path, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...`` of the file at ``path``."""
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _title(stem: str) -> str:
    return stem.replace("_", " ")


def embed_figures(
    run_dir: str | Path,
    entries: list[Entry],
    *,
    alpha: float = 0.05,
    test: str = "ttest",
    published: str | Path | None = None,
    n_boot: int = DEFAULT_BOOTSTRAP,
    left_out: Sequence[str] = (),
) -> list[FigureView]:
    """Every figure ``python -m fsarbench figures`` would draw from ``entries``, as PNG URIs
    (``left_out`` as in :func:`~fsarbench.report.figure_set.render_all`)."""
    from fsarbench.report.figure_set import render_all

    with tempfile.TemporaryDirectory(prefix="fsarbench-report-") as tmp:
        paths = render_all(
            run_dir,
            entries,
            tmp,
            alpha=alpha,
            test=test,
            published=published,
            n_boot=n_boot,
            left_out=left_out,
        )
        return figure_views(paths)


def figure_views(paths: list[Path]) -> list[FigureView]:
    """The PNGs among ``paths``, in order, as embedded views."""
    return [FigureView(p.stem, _title(p.stem), data_uri(p)) for p in paths if p.suffix == ".png"]
