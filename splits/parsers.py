"""Parsers for the two published split-list formats.

- ``trx``: one video per line, ``<class name>/<video id>`` (no extension).
- ``hyrsm``: ``<split><k>//<subdir>/<class_dir>/<file>.<ext>`` (Kinetics/UCF/HMDB) or
  ``<split><k>/<numeric id>`` (SSv2, class anonymised as ``<split><k>``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
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


def class_key(name: str) -> str:
    """What tells classes apart across splits: ``Kick Ball``, ``kick ball`` and
    ``kick_ball`` are one class (a layout reads them from one folder: ``class_dirs``)."""
    return name.casefold().replace(" ", "_")


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


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 list; a leading byte-order mark is dropped and CRLF ends split like
    LF (the md5 check, not the parser, reports a re-saved file)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise SplitFormatError(
            f"{path}: not a UTF-8 text split list (byte {err.start}: {err.reason}); is it "
            "the right file, or saved in another encoding?"
        ) from None
    return text.splitlines()


def _blank_edged(texts: Iterable[str]) -> bool:
    """Whether any of ``texts`` (a line's parts between '/', or an entry's names) starts or
    ends with a blank."""
    return any(text != text.strip() for text in texts)


def _blanks_message(path: Path, number: int, line: str) -> str:
    return (
        f"{path}:{number}: {line!r} has blanks at the start or end of a name (line ends, "
        "around a '/', before an extension); published lists have none, and a video id or "
        "class name kept with them is never found. Remove them (e.g. sed -i "
        "'s/[[:space:]]*$//' FILE for line ends) or restore the list with "
        "'python -m fsarbench splits import DIR' or 'splits fetch'"
    )


def _line_entry(path: Path, number: int, line: str, fmt: str) -> SplitEntry:
    """The entry of non-empty line ``number``; a SplitFormatError naming the line if it does
    not fit ``fmt`` or has a blank-edged name."""
    parse, expected = FORMATS[fmt]
    if _blank_edged(line.split("/")):
        raise SplitFormatError(_blanks_message(path, number, line))
    entry = parse(line)
    if entry is None:
        raise SplitFormatError(
            f"{path}:{number}: {line!r} is not a {fmt!r} split line (expected {expected})"
        )
    if _blank_edged((entry.class_name, entry.video_id)):
        raise SplitFormatError(_blanks_message(path, number, line))
    return entry


def parse_split_file(path: str | Path, fmt: str) -> list[SplitEntry]:
    """Every entry of a split list, in file order.

    A UTF-8 byte-order mark and CRLF line ends are read as if absent. A line with blanks at
    the start or end of a name (line ends, around a '/', before an extension) is refused
    rather than kept inside a video id or class name (or silently stripped).

    Raises:
        FileNotFoundError: the list does not exist.
        SplitFormatError: a non-empty line does not fit ``fmt`` or has such blanks (names
            file, line and format).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown split format {fmt!r}; formats are {', '.join(FORMATS)}")
    path = Path(path)
    entries = [
        _line_entry(path, number, line, fmt)
        for number, line in enumerate(_read_lines(path), start=1)
        if line.strip()
    ]
    if not entries:
        raise SplitFormatError(f"{path}: empty split list")
    return entries
