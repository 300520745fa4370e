"""The official test pool of a record: the videos its episodes are drawn from.

A published dataset's pool is its test split list (read from the user's ``--splits-dir`` and
checked against the md5 the record carries); ``synth``'s is the generated dataset whose test
split hashes to the record's md5 (searched under ``$FSAR_SYNTH`` / the user cache). Videos the
record lists as left out (``skipped_videos``) are removed, as ``run`` removes them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fsarbench.bundles.errors import BundleDataMissingError, BundleVerificationError
from fsarbench.report.records import left_out_test_videos, test_list_md5
from fsarbench.results import ResultRecord

__all__ = ["TestPool", "POOL_SOURCES", "official_pool", "recorded_test_md5", "skipped_test_videos"]


@dataclass(frozen=True)
class TestPool:
    """A test split as listed: ``video_ids [N]`` and ``video_classes [N]`` (class names), the
    split's sorted ``class_names``, its ``variant`` and ``md5`` (as records store it)."""

    video_ids: list[str]
    video_classes: list[str]
    class_names: list[str]
    variant: str
    md5: str

    def kept(self, skipped: set[str], cell: str) -> np.ndarray:
        """``[N - len(skipped)]`` class ids of the videos left after ``skipped``, in list
        order (the ``video_classes`` of the record's manifest)."""
        unknown = sorted(skipped - set(self.video_ids))
        if unknown:
            raise BundleVerificationError(
                f"{cell}: field skipped_videos names test videos that are not in the "
                f"official {self.variant} test list: {unknown[:5]}"
            )
        index = {name: i for i, name in enumerate(self.class_names)}
        return np.array(
            [index[c] for v, c in zip(self.video_ids, self.video_classes) if v not in skipped],
            dtype=np.int64,
        )


def recorded_test_md5(record: ResultRecord) -> str:
    """The test split md5 a record was made on (features, else provenance)."""
    md5 = test_list_md5(record)
    if md5:
        return md5
    raise BundleVerificationError(
        f"{record.cell}: field features.split_md5.test is missing, so its test list "
        "cannot be checked; only records written by 'python -m fsarbench run' can be bundled"
    )


def skipped_test_videos(record: ResultRecord) -> set[str]:
    """Ids of the test videos a record left out (:func:`left_out_test_videos`, as a set)."""
    return set(left_out_test_videos(record))


def _mismatch(record: ResultRecord, found: str, where: str) -> BundleVerificationError:
    expected = recorded_test_md5(record)
    return BundleVerificationError(
        f"{record.cell}: field features.split_md5.test differs: the record was made on a test "
        f"list with md5 {expected}, {where} has md5 {found}"
    )


def published_pool(record: ResultRecord, splits_dir: Path | None) -> TestPool:
    """The test list of a published dataset, from ``splits_dir`` (else ``$FSAR_SPLITS``)."""
    from fsarbench.data.datasets import SplitListDataset, get_dataset
    from fsarbench_splits.registry import SplitModifiedError, SplitsNotFoundError

    try:
        ds = get_dataset(record.dataset, splits_dir=splits_dir)
    except KeyError:  # an eval of a features file with the user's own manifest ('custom')
        raise BundleVerificationError(
            f"{record.cell}: dataset {record.dataset!r} is no registered dataset, so its "
            "official episodes cannot be regenerated; bundles verify on published datasets "
            "and synth"
        ) from None
    if not isinstance(ds, SplitListDataset):
        raise BundleVerificationError(
            f"{record.cell}: dataset {record.dataset!r} has no published split list, so "
            "its official episodes cannot be regenerated; bundles verify on published datasets "
            "and synth"
        )
    try:
        split = ds.split("test")
    except (SplitsNotFoundError, SplitModifiedError) as err:
        raise BundleDataMissingError(
            f"cannot verify {record.cell} here: its episodes are drawn from the "
            f"{ds.variant} test list, and this machine has no unmodified copy of it: {err}"
        ) from None
    if split.md5 != recorded_test_md5(record):
        raise _mismatch(record, split.md5, f"the published list {split.path}")
    return TestPool(
        [e.video_id for e in split.entries],
        [e.class_name for e in split.entries],
        ds.class_names("test"),
        ds.variant,
        split.md5,
    )


_SYNTH_VARIANT = re.compile(r"^synth-v(?P<version>\d+)-seed(?P<seed>\d+)$")


def synth_pool(record: ResultRecord, splits_dir: Path | None) -> TestPool:
    """The test split of the generated ``synth`` whose test md5 is the record's."""
    from fsarbench.data.synth import SYNTH_VERSION, SynthConfig, SynthDataset, default_synth_cache

    del splits_dir  # synth has no split lists
    m = _SYNTH_VARIANT.match(record.split_variant)
    if not m or int(m["version"]) != SYNTH_VERSION:
        raise BundleVerificationError(
            f"{record.cell}: field split_variant is {record.split_variant!r}; this "
            f"fsarbench generates synth-v{SYNTH_VERSION}-seed<N>"
        )
    seed, wanted, base = int(m["seed"]), recorded_test_md5(record), default_synth_cache()
    found = []
    for meta_path in sorted(base.glob(f"{record.split_variant}-*/synth.json")):
        meta = json.loads(meta_path.read_text())
        ds = SynthDataset(root=base, seed=seed, config=SynthConfig(**meta["config"]))
        md5 = ds.split_md5s()["test"]
        if md5 == wanted:
            videos = ds.videos("test")
            return TestPool(
                [v.video_id for v in videos],
                [v.class_name for v in videos],
                ds.class_names("test"),
                ds.variant,
                md5,
            )
        found.append(md5)
    raise BundleDataMissingError(
        f"cannot verify {record.cell} here: no generated synth under {base} has the test md5 "
        f"{wanted} the record was made on (found: {found or 'none'}). Generate the same synth "
        f"(seed {seed}, same SynthConfig; 'python -m fsarbench run' on synth makes the "
        "default one) or point FSAR_SYNTH at the folder holding it."
    )


PoolSource = Callable[[ResultRecord, "Path | None"], TestPool]
#: dataset name -> where its official test pool comes from (published lists otherwise).
POOL_SOURCES: dict[str, PoolSource] = {"synth": synth_pool}


def official_pool(record: ResultRecord, splits_dir: Path | None) -> TestPool:
    """The official test pool of ``record``'s dataset, checked against its split md5."""
    pool = POOL_SOURCES.get(record.dataset, published_pool)(record, splits_dir)
    if pool.variant != record.split_variant:
        raise BundleVerificationError(
            f"{record.cell}: field split_variant is {record.split_variant!r}, the "
            f"official {record.dataset} split is {pool.variant!r}"
        )
    return pool
