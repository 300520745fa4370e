"""Data health of a results folder: the videos each dataset's records left out, and why.

Records list what the run could not use in ``skipped_videos``: ``"split/video: cause"`` on the
finetune track (``cause`` is ``missing`` for a file not on disk, else the decoder's error) and
``"split/video"`` on the frozen track (the video's feature extraction left it out: missing,
unreadable or too short, the record does not say which).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fsarbench.results import ResultRecord

__all__ = ["DatasetHealth", "data_health", "FROZEN_CAUSE"]

#: Cause given to frozen-track entries, which carry none: such a video may be missing too
#: (counting it as unreadable printed "Missing 0" for a folder with a missing file).
FROZEN_CAUSE = "left out by the feature extraction: missing, unreadable or too short"


@dataclass
class DatasetHealth:
    """One dataset (split variant) over every record of it."""

    dataset: str
    split_variant: str
    records: int = 0
    missing: set[str] = field(default_factory=set)
    unreadable: dict[str, str] = field(default_factory=dict)
    #: Left out with no cause recorded (frozen-track records): missing, unreadable or short.
    unrecorded: set[str] = field(default_factory=set)

    #: What a video of ``unrecorded`` may have been, shown beside it.
    unrecorded_cause = FROZEN_CAUSE

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unreadable and not self.unrecorded

    def by_split(self) -> dict[str, int]:
        """Videos left out per split (``train``, ``val``, ``test``)."""
        counts: dict[str, int] = {}
        for video in [*self.missing, *self.unreadable, *self.unrecorded]:
            split = video.split("/", 1)[0]
            counts[split] = counts.get(split, 0) + 1
        return dict(sorted(counts.items()))


def _parse(item: str) -> tuple[str, str | None]:
    """``(split/video, cause)``; ``None`` where the record names no cause."""
    video, sep, cause = item.partition(": ")
    return video.strip(), cause.strip() if sep else None


def data_health(records: list[ResultRecord]) -> list[DatasetHealth]:
    """Per (dataset, split variant): the union of the videos its records left out."""
    out: dict[tuple[str, str], DatasetHealth] = {}
    for r in records:
        h = out.setdefault((r.dataset, r.split_variant), DatasetHealth(r.dataset, r.split_variant))
        h.records += 1
        for item in r.skipped_videos:
            video, cause = _parse(item)
            if cause == "missing":
                h.missing.add(video)
            elif cause is None:
                h.unrecorded.add(video)
            else:
                h.unreadable.setdefault(video, cause)
    for h in out.values():  # a cause another record gives is the cause
        h.unrecorded -= h.missing | set(h.unreadable)
    return [out[k] for k in sorted(out)]
