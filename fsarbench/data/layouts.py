"""How a listed video resolves to a file (or JPEG folder) under a data root.

Each layout is a small named function ``(root, entry) -> candidate paths`` in preference
order; the resolved path is the first candidate that exists (else the first, for reports).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from pathlib import Path

from fsarbench_splits.parsers import SplitEntry

__all__ = ["LAYOUTS", "VIDEO_SUFFIXES", "class_dirs", "detect_layout", "resolve", "template_layout"]

Layout = Callable[[Path, SplitEntry], list[Path]]
_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm")
#: Lower case first; upper case (``.MP4`` from cameras and some archives) was reported missing.
VIDEO_SUFFIXES = (*_SUFFIXES, *(s.upper() for s in _SUFFIXES))


def class_dirs(name: str) -> list[str]:
    """Folder spellings of a class name seen in the wild (``blasting sand``/``blasting_sand``)."""
    out = [name, name.replace(" ", "_"), name.replace("_", " ")]
    return list(dict.fromkeys(out))


def listed(root: Path, e: SplitEntry) -> list[Path]:
    """The path the list itself gives (HyRSM lines: ``train_256/<class_dir>/<file>``)."""
    return [root / e.rel_path] if e.rel_path else []


def kinetics_train256(root: Path, e: SplitEntry) -> list[Path]:
    """Kinetics-400 as extracted: ``train_256/<class_dir>/<id>.mp4`` (or ``val_256``; any
    common video extension after ``.mp4``: downloads by yt-dlp are often ``.webm``/``.mkv``,
    and were reported missing)."""
    return [
        root / sub / d / f"{e.video_id}{ext}"
        for sub in ("train_256", "val_256")
        for d in class_dirs(e.class_name)
        for ext in VIDEO_SUFFIXES
    ]


def class_folders(root: Path, e: SplitEntry) -> list[Path]:
    """``<root>/<class>/<id>.<ext>`` with any common video extension."""
    return [
        root / d / f"{e.video_id}{ext}" for d in class_dirs(e.class_name) for ext in VIDEO_SUFFIXES
    ]


def ucf101(root: Path, e: SplitEntry) -> list[Path]:
    """UCF101 as published: ``UCF-101/<Class>/<id>.avi``."""
    return [root / "UCF-101" / e.class_name / f"{e.video_id}.avi"]


def hmdb51(root: Path, e: SplitEntry) -> list[Path]:
    """HMDB51 as published: ``<class>/<id>.avi``."""
    return [root / e.class_name / f"{e.video_id}.avi"]


def ssv2(root: Path, e: SplitEntry) -> list[Path]:
    """Something-Something v2: ``<id>.webm`` in one folder."""
    return [root / f"{e.video_id}.webm"]


def jpeg_folders(root: Path, e: SplitEntry) -> list[Path]:
    """Pre-extracted frames (TRX layout): ``<root>/<class>/<id>/*.jpg``."""
    return [root / d / e.video_id for d in class_dirs(e.class_name)]


LAYOUTS: dict[str, Layout] = {
    "listed": listed,
    "kinetics-train256": kinetics_train256,
    "class-folders": class_folders,
    "ucf101": ucf101,
    "hmdb51": hmdb51,
    "ssv2": ssv2,
    "jpeg": jpeg_folders,
}


class LayoutError(ValueError):
    """A layout template that cannot name each video's own file."""


def template_layout(template: str) -> Layout:
    """A layout from a template relative to the root, e.g. ``"videos/{class_dir}/{video_id}.mp4"``.

    Fields: ``class_name``, ``class_dir`` (spaces as underscores), ``video_id``, ``rel_path``.
    """
    try:
        template.format(class_name="c", class_dir="c", video_id="v", rel_path="r")
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except (KeyError, IndexError) as err:
        raise LayoutError(
            f"bad layout template {template!r}: unknown field {err}; fields are class_name, "
            "class_dir, video_id, rel_path"
        ) from None
    except (AttributeError, ValueError) as err:  # {video_id.x}, {video_id:d}, a lone "{"
        raise LayoutError(
            f"bad layout template {template!r} ({err}); write plain fields such as "
            "'{class_dir}/{video_id}.avi' (fields: class_name, class_dir, video_id, rel_path)"
        ) from None
    if not fields & {"video_id", "rel_path"}:
        raise LayoutError(
            f"layout template {template!r} names neither {{video_id}} nor {{rel_path}}: every "
            "video of a class would be one file. Name the video, e.g. "
            "'{class_dir}/{video_id}.avi'"
        )

    def from_template(root: Path, e: SplitEntry) -> list[Path]:
        return [
            root
            / template.format(
                class_name=e.class_name,
                class_dir=e.class_name.replace(" ", "_"),
                video_id=e.video_id,
                rel_path=e.rel_path or "",
            )
        ]

    return from_template


def resolve(root: Path, entry: SplitEntry, layout: Layout) -> tuple[Path, bool]:
    """``(path, exists)``: the first existing candidate, else the first candidate."""
    candidates = layout(root, entry)
    for p in candidates:
        if p.exists():
            return p, True
    return (candidates[0] if candidates else root / entry.video_id), False


def detect_layout(
    root: Path, entries: Sequence[SplitEntry], names: Sequence[str], probe: int = 40
) -> str:
    """The layout among ``names`` under which most of ``probe`` spread-out entries exist."""
    if not entries:
        return names[0]
    step = max(1, len(entries) // probe)
    sample = entries[::step][:probe]
    hits = {n: sum(resolve(root, e, LAYOUTS[n])[1] for e in sample) for n in names}
    best = max(names, key=lambda n: hits[n])
    return best if hits[best] else names[0]
