"""Data health of a results folder: the videos each dataset's records left out, and why.

Records list what the run could not use in ``skipped_videos``: ``"split/video: cause"`` on the
finetune track (``cause`` is ``missing`` for a file not on disk, else the decoder's error) and
``"split/video"`` on the frozen track (the video's feature extraction failed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fsarbench.results import ResultRecord

__all__ = ["DatasetHealth", "data_health", "FROZEN_CAUSE"]

#: Cause given to frozen-track entries, which carry none.
FROZEN_CAUSE = "feature extraction failed (unreadable or too short)"


@dataclass
class DatasetHealth:
    """One dataset (split variant) over every record of it."""

    dataset: str
    split_variant: str
    records: int = 0
    missing: set[str] = field(default_factory=set)
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unreadable

    def by_split(self) -> dict[str, int]:
        """Videos left out per split (``train``, ``val``, ``test``)."""
        counts: dict[str, int] = {}
        for video in [*self.missing, *self.unreadable]:
            split = video.split("/", 1)[0]
            counts[split] = counts.get(split, 0) + 1
        return dict(sorted(counts.items()))


def _parse(item: str) -> tuple[str, str]:
    video, sep, cause = item.partition(": ")
    return video.strip(), cause.strip() if sep else FROZEN_CAUSE


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
            else:
                h.unreadable.setdefault(video, cause)
    return [out[k] for k in sorted(out)]
