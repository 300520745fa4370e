"""Parsers for the two published split-list formats.

- ``trx``: one video per line, ``<class name>/<video id>`` (no extension).
- ``hyrsm``: ``<split><k>//<subdir>/<class_dir>/<file>.<ext>`` (Kinetics/UCF/HMDB) or
  ``<split><k>/<numeric id>`` (SSv2, class anonymised as ``<split><k>``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["SplitEntry", "SplitFormatError", "parse_split_file", "parse_line", "FORMATS"]


class SplitFormatError(ValueError):
    """A split list line that does not fit the expected format (path, line number, text)."""


@dataclass(frozen=True)
class SplitEntry:
    """One listed video: its id, class name and (hyrsm format) path relative to a data root."""

    video_id: str
    class_name: str
    rel_path: str | None = None


def _parse_trx(line: str) -> SplitEntry | None:
    parts = line.split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        return None
    return SplitEntry(parts[1], parts[0])


_HYRSM = re.compile(
    r"^(?P<tag>(?:train|val|test)\d+)/"
    r"(?:/(?P<rel>[^/]+/(?P<cls>[^/]+)/(?P<file>[^/]+\.[A-Za-z0-9]+))|(?P<id>[^/.]+))$"
)


def _parse_hyrsm(line: str) -> SplitEntry | None:
    m = _HYRSM.match(line)
    if m is None:
        return None
    if m["id"] is not None:
        return SplitEntry(m["id"], m["tag"])
    return SplitEntry(PurePosixPath(m["file"]).stem, m["cls"], m["rel"])


FORMATS: dict[str, tuple[Callable[[str], SplitEntry | None], str]] = {
    "trx": (_parse_trx, "<class name>/<video id>"),
    "hyrsm": (_parse_hyrsm, "<split><k>//<subdir>/<class_dir>/<file>.<ext> or <split><k>/<id>"),
}


def parse_line(line: str, fmt: str) -> SplitEntry | None:
    """One line in format ``fmt``; None when it does not fit."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown split format {fmt!r}; formats are {', '.join(FORMATS)}")
    return FORMATS[fmt][0](line)


def parse_split_file(path: str | Path, fmt: str) -> list[SplitEntry]:
    """Every entry of a split list, in file order.

    Raises:
        FileNotFoundError: the list does not exist.
        SplitFormatError: a non-empty line does not fit ``fmt`` (names file, line and format).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown split format {fmt!r}; formats are {', '.join(FORMATS)}")
    parse, expected = FORMATS[fmt]
    path = Path(path)
    entries = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SplitFormatError(
            f"{path}: not a UTF-8 text split list (byte {err.start}: {err.reason}); is it "
            "the right file, or saved in another encoding?"
        ) from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        entry = parse(line)
        if entry is None:
            raise SplitFormatError(
                f"{path}:{number}: {line!r} is not a {fmt!r} split line (expected {expected})"
            )
        entries.append(entry)
    if not entries:
        raise SplitFormatError(f"{path}: empty split list")
    return entries
