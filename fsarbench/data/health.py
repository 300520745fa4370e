"""Health of a dataset on disk: per split and class, which videos are found, missing,
unreadable or too short, and whether the episode settings can still be served."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fsarbench.data.datasets import VideoRecord
from fsarbench.data.decode import VideoDecodeError, read_clip

__all__ = ["ClassHealth", "check_split", "protocol_problems", "health_json", "health_csv"]


@dataclass
class ClassHealth:
    """One class of one split."""

    split: str
    class_name: str
    listed: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    too_short: dict[str, int] = field(default_factory=dict)

    @property
    def found(self) -> int:
        return self.listed - len(self.missing)

    @property
    def usable(self) -> int:
        return self.found - len(self.unreadable) - len(self.too_short)


class _NoFrames(Exception):
    """The container counts no frames (nothing to decode)."""


def _first_frame(n: int) -> list[int]:
    if n <= 0:
        raise _NoFrames
    return [0]


def _probe(record: VideoRecord) -> tuple[str, int | str]:
    """(video id, frame count) of a readable video, (video id, cause) of another. The count
    comes from the container's header, so the first frame is decoded too (in the same open,
    through the loader's own reader): a truncated file can keep its header and decode
    nothing."""
    counts: list[int] = []
    try:
        read_clip(record.path, lambda n: counts.append(n) or _first_frame(n))
        return record.video_id, counts[-1]
    except _NoFrames:
        return record.video_id, 0
    except VideoDecodeError as err:
        return record.video_id, err.cause


def check_split(
    records: Sequence[VideoRecord],
    split: str,
    *,
    frames: int = 8,
    probe: bool = True,
    jobs: int = 2,
) -> list[ClassHealth]:
    """Per-class health of ``records``; ``probe`` opens every found file to count frames."""
    classes: dict[str, ClassHealth] = {}
    present = []
    for r in records:
        h = classes.setdefault(r.class_name, ClassHealth(split, r.class_name))
        h.listed += 1
        if r.path.exists():
            present.append(r)
        else:
            h.missing.append(r.video_id)
    if probe:
        by_id = {r.video_id: r.class_name for r in present}
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            for vid, result in pool.map(_probe, present):
                h = classes[by_id[vid]]
                if isinstance(result, str):
                    h.unreadable[vid] = result
                elif result < frames:
                    h.too_short[vid] = result
    return [classes[c] for c in sorted(classes)]


def protocol_problems(
    health: Sequence[ClassHealth], *, way: int, shot: int, queries: int, policy: str = "error"
) -> list[str]:
    """Why the split cannot serve ``way``-way ``shot``-shot episodes (empty if it can).

    Under ``policy="error"`` every class needs ``shot + queries`` usable videos; under
    ``"drop"`` short classes are left out and only ``way`` good classes are needed.
    """
    need = shot + queries
    short = [h for h in health if h.usable < need]
    good = len(health) - len(short)
    split = health[0].split if health else "?"
    problems = []
    if policy == "error":
        problems += [
            f"{split}/{h.class_name}: {h.usable} usable videos, {shot}-shot with "
            f"{queries} queries needs {need}"
            for h in short
        ]
    if good < way:
        problems.append(
            f"{split}: only {good} classes have {need} usable videos; {way}-way episodes need {way}"
        )
    return problems


def health_json(
    health: Sequence[ClassHealth], problems: Sequence[str], settings: dict[str, Any]
) -> dict[str, Any]:
    """The full report: settings, per-class counts and video lists, problems."""
    return {
        "settings": settings,
        "ok": not problems,
        "problems": list(problems),
        "classes": [
            {
                "split": h.split,
                "class": h.class_name,
                "listed": h.listed,
                "found": h.found,
                "usable": h.usable,
                "missing": h.missing,
                "unreadable": h.unreadable,
                "too_short": h.too_short,
            }
            for h in health
        ],
    }


def health_csv(health: Sequence[ClassHealth]) -> str:
    """One row per (split, class, video) that is missing, unreadable or too short."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["split", "class", "video_id", "status", "detail"])
    for h in health:
        w.writerows([h.split, h.class_name, v, "missing", ""] for v in h.missing)
        w.writerows([h.split, h.class_name, v, "unreadable", c] for v, c in h.unreadable.items())
        w.writerows([h.split, h.class_name, v, "too_short", n] for v, n in h.too_short.items())
    return buf.getvalue()
