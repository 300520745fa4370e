"""Health of a dataset on disk: per split and class, which videos are found, missing,
unreadable or too short, and whether the episode settings can still be served."""

from __future__ import annotations

import csv
import functools
import io
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fsarbench.data.datasets import VideoRecord
from fsarbench.data.decode import VideoDecodeError, read_clip, read_frames
from fsarbench.data.probe_cache import ProbeCache

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


def _first_and_last(n: int) -> list[int]:
    if n <= 0:
        raise _NoFrames
    return sorted({0, n - 1})


#: Frames decoded at once by a full check (bounds its memory on long videos).
FULL_CHECK_CHUNK = 64


def _probe(record: VideoRecord, full: bool = False) -> tuple[str, int | str]:
    """(video id, frame count) of a readable video, (video id, cause) of another. The count
    comes from the container's header, so the first and last frames are decoded too (in the
    same open, through the loader's own reader): a truncated file can keep its header and
    decode nothing, or only its first part (a faststart mp4 cut short). ``full``: decode
    every frame (a file damaged in its middle decodes at both ends)."""
    counts: list[int] = []
    try:
        read_clip(record.path, lambda n: counts.append(n) or _first_and_last(n))
        if full:
            _decode_every_frame(record, counts[-1])
        return record.video_id, counts[-1]
    except _NoFrames:
        return record.video_id, 0
    except VideoDecodeError as err:
        return record.video_id, err.cause


def _decode_every_frame(record: VideoRecord, n: int) -> None:
    """Decode frames ``0..n-1`` in chunks; raises VideoDecodeError naming the first bad one."""
    for lo in range(0, n, FULL_CHECK_CHUNK):
        chunk = range(lo, min(n, lo + FULL_CHECK_CHUNK))
        try:
            read_frames(record.path, chunk)
        except VideoDecodeError as err:
            raise VideoDecodeError(
                record.path, f"frames {chunk.start}-{chunk.stop - 1} of {n}: {err.cause}"
            ) from None


def check_split(
    records: Sequence[VideoRecord],
    split: str,
    *,
    frames: int = 8,
    probe: bool = True,
    jobs: int = 2,
    probes: ProbeCache | None = None,
    full: bool = False,
) -> list[ClassHealth]:
    """Per-class health of ``records``; ``probe`` opens every found file to count frames
    and decode its first and last frames, ``full`` decodes all of its frames (slow; no
    ``probes`` then). ``probes``: results of earlier probes to reuse (for files unchanged
    since) and to extend."""
    if full and probes is not None:
        raise ValueError("a full check decodes every file: it neither reads nor fills probes")
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
        for r, result in zip(present, _probe_all(present, jobs, probes, full)):
            h = classes[r.class_name]
            if isinstance(result, str):
                h.unreadable[r.video_id] = result
            elif result < frames:
                h.too_short[r.video_id] = result
    return [classes[c] for c in sorted(classes)]


#: Seconds between saves of the probe cache while probing. A large split takes hours to
#: probe, and a probe stopped (torchrun ending a job, a scheduler's kill) saved nothing
#: before, so its re-run probed everything again.
PROBE_SAVE_EVERY_S = 30.0


def _probe_all(
    records: Sequence[VideoRecord],
    jobs: int,
    probes: ProbeCache | None,
    full: bool = False,
    save_every_s: float = PROBE_SAVE_EVERY_S,
) -> list[int | str]:
    """The probe result of every record, in order: reused from ``probes`` where the file
    is unchanged, else probed (over ``jobs`` threads; ``full``: every frame) and stored
    there. ``probes`` is saved every ``save_every_s`` seconds and when probing ends, by
    an error or an interrupt too: a re-run reuses every probe that finished."""
    probes = probes or ProbeCache(None)
    results = [probes.lookup(r.path) for r in records]
    todo = [i for i, res in enumerate(results) if res is None]
    probe = functools.partial(_probe, full=True) if full else _probe
    pool = ThreadPoolExecutor(max(1, jobs))
    saved = time.monotonic()
    try:
        for i, (_, result) in zip(todo, pool.map(probe, [records[i] for i in todo])):
            results[i] = result
            probes.store(records[i].path, result)
            if time.monotonic() - saved >= save_every_s:
                probes.save()
                saved = time.monotonic()
    finally:
        pool.shutdown(cancel_futures=True)  # an interrupt waits for the running probes only
        probes.save()
    return results


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
