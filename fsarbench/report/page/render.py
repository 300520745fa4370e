"""Render :class:`~fsarbench.report.page.collect.ReportData` as one HTML file (Jinja2,
autoescaped; the stylesheet and the column sorter are inlined, nothing is fetched)."""

from __future__ import annotations

from pathlib import Path

import jinja2

from fsarbench.io import atomic_write_text
from fsarbench.report.page.collect import ReportData, collect_report

__all__ = ["environment", "render_report", "write_report", "build_report", "REPORT_NAME"]

REPORT_NAME = "index.html"


def _sort_key(value: float) -> str:
    """A ``data-sort`` attribute value: numbers as they are, NaN as empty (sorted last)."""
    return "" if value != value else repr(float(value))


def environment() -> jinja2.Environment:
    """The template environment: package templates, autoescape on, undefined names fail."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fsarbench.report.page", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["sortkey"] = _sort_key
    return env


def render_report(data: ReportData) -> str:
    """The page as a string."""
    return environment().get_template("report.html.j2").render(r=data)


def write_report(data: ReportData, out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` atomically, readable by all (it is meant to be served);
    return its absolute path."""
    path = (Path(out_dir) / REPORT_NAME).resolve()
    atomic_write_text(path, render_report(data))
    path.chmod(0o644)
    return path


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, **kwargs) -> Path:
    """Collect and write the report of ``run_dir`` (default ``out_dir``: ``run_dir/report``);
    ``kwargs`` go to :func:`~fsarbench.report.page.collect.collect_report`."""
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "report"
    return write_report(collect_report(run_dir, **kwargs), out)
