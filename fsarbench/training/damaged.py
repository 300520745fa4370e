"""Videos the probe read but training or validation could not (damaged past the frames the
probe decodes).

Training stops at the first such video: episode ``i`` is a function of the videos in the
split, so the model must be trained again without it, from its first step. Finding the
damaged videos one per run would train it again once per video; :func:`find_damaged`
decodes every frame of the splits' videos once, and :func:`record_damaged` stores them all
in the probe cache, so the next run leaves every one of them out.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from fsarbench.data.decode import VideoDecodeError

__all__ = [
    "damaged_message",
    "extraction_failures",
    "find_damaged",
    "met",
    "record_damaged",
    "split_of",
]

log = logging.getLogger(__name__)


def split_of(splits: Mapping[str, object], path: str | Path) -> str:
    """The name of the split in ``splits`` (name -> ClipSplit) holding ``path``, else ``"?"``."""
    path = Path(path)
    for name, split in splits.items():
        if any(Path(r.path) == path for r in split.records):
            return name
    return "?"


def met(error: VideoDecodeError) -> dict[Path, str]:
    """``{path: cause}`` of the video ``error`` names (empty when a worker's message named
    no path: ``Path("")`` would be the current folder)."""
    return {Path(error.path): error.cause} if error.path else {}


def extraction_failures(dataset, failed: Mapping[str, str]) -> dict[Path, str]:
    """``{path: cause}`` of the test videos of ``dataset`` in ``failed`` (video id -> the
    error the test extraction recorded), to store with :func:`record_damaged`."""
    return {
        Path(r.path): f"unreadable in the test extraction: {failed[r.video_id]}"
        for r in dataset.videos("test")
        if r.video_id in failed
    }


def find_damaged(
    splits: Mapping[str, object],
    first: VideoDecodeError,
    *,
    min_frames: int,
    jobs: int | None = None,
) -> dict[Path, str]:
    """``{path: cause}`` of every video of ``splits`` (name -> ClipSplit) that cannot be
    decoded in full or decodes fewer than ``min_frames`` frames; ``first`` (the error that
    stopped training) is always among them. Decodes every frame of every video, over
    ``jobs`` threads (default: the CPU count)."""
    from fsarbench.data.health import check_split

    found = met(first)
    total = sum(len(s.records) for s in splits.values())
    log.warning(
        "%s could not be read (%s): decoding every frame of the %d %s videos once, to find "
        "any other damaged file now rather than one per run",
        first.path,
        first.cause,
        total,
        " and ".join(splits),
    )
    jobs = jobs or max(2, os.cpu_count() or 2)
    for name, split in splits.items():
        paths = {r.video_id: Path(r.path) for r in split.records}
        for h in check_split(split.records, name, frames=min_frames, jobs=jobs, full=True):
            for video in h.missing:
                found[paths[video]] = "missing"
            for video, cause in h.unreadable.items():
                found[paths[video]] = cause
            for video, n in h.too_short.items():
                found[paths[video]] = f"too short in full: {n} frames, clips need {min_frames}"
    return found


def record_damaged(
    variant: str, damaged: Mapping[Path, str], cache_root: str | Path | None
) -> None:
    """Store ``damaged`` (path -> cause) as unreadable in ``variant``'s probe cache under
    ``cache_root`` (default: the user cache), so every later probe leaves them out. A
    missing file needs no entry: the probe finds it missing."""
    from fsarbench.data.probe_cache import ProbeCache, probe_cache_path
    from fsarbench.features.cache import default_cache_root

    probes = ProbeCache(probe_cache_path(cache_root or default_cache_root(), variant))
    for path, cause in damaged.items():
        if path.exists():
            probes.store(path, cause)
    probes.save()


def damaged_message(
    dataset: str, where: str, first: VideoDecodeError, damaged: Mapping[Path, str], rerun: str
) -> str:
    """What to tell the user once ``damaged`` is recorded; ``where`` is the split that
    stopped (``train``/``val``), ``rerun`` what re-running does in the caller's terms."""
    stage = {"train": "training", "val": "validation"}.get(where, "training")
    others = {p: c for p, c in damaged.items() if Path(p) != Path(first.path)}
    listed = "; ".join(f"{p}: {c}" for p, c in list(others.items())[:5])
    more = f" and {len(others) - 5} more" if len(others) > 5 else ""
    found = (
        f"It and {len(others)} other damaged video(s) of its splits (decoded in full) are now "
        f"recorded as unreadable: {listed}{more}."
        if others
        else "It is now recorded as unreadable."
    )
    return (
        f"{dataset}: {stage} could not read {first.path} ({first.cause}), which the probe "
        f"could. {found} {rerun}"
    )
