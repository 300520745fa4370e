"""The HTML report: one self-contained page of a results folder (``python -m fsarbench report``).

Collecting the page's data (:mod:`.collect` and the section modules) is kept apart from
rendering it (:mod:`.render`, Jinja2 templates under ``templates/``), so each section can be
tested on its numbers and the page on its markup.
"""

from fsarbench.report.page.collect import NoRecordsError, ReportData, collect_report
from fsarbench.report.page.render import build_report, render_report, write_report

__all__ = [
    "NoRecordsError",
    "ReportData",
    "collect_report",
    "render_report",
    "write_report",
    "build_report",
]
