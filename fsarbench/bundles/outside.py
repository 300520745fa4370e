"""Outside results: verified bundles stored in a runs folder beside its own records.

``add_bundle`` verifies a bundle, then writes its records (tagged ``outside``) and their
per-query rows under ``<runs>/external/<method>/records/`` — where every report reads records
— and keeps the bundle file there. Paired statistics then compare outside and own records
only where their episodes are identical: a bundle whose manifest differs from this folder's
in a shared setting is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path

from fsarbench.bundles.errors import BundleError
from fsarbench.bundles.format import method_slug, read_bundle
from fsarbench.bundles.verify import VerifiedBundle, verify_bundle
from fsarbench.io import atomic_write_bytes
from fsarbench.report.records import episodes_key, setting_of
from fsarbench.results import OUTSIDE_TAG, ResultRecord, load_records, save_result

log = logging.getLogger(__name__)

__all__ = ["EXTERNAL_DIR", "OUTSIDE_TAG", "add_bundle", "is_outside"]

#: Sub-folder of a runs folder holding outside results, one folder per method.
EXTERNAL_DIR = "external"


def is_outside(record: ResultRecord) -> bool:
    return bool(record.tags.get(OUTSIDE_TAG))


def _check_fits(runs: Path, verified: VerifiedBundle) -> None:
    """No own method of that name; every other record of a shared setting (own or another
    outside result) on the same episodes."""
    method = verified.bundle.method
    records = load_records(runs) if runs.exists() else []
    if any(r.method == method and not is_outside(r) for r in records):
        raise BundleError(
            f"{runs} already has its own records of {method!r}; an outside result of the same "
            "name would be pooled with them. Ask its authors to bundle it under another name."
        )
    keys = {setting_of(r): (r.method, episodes_key(r)) for r in records if r.method != method}
    for v in verified.records:
        setting = setting_of(v.record)
        mine = episodes_key(v.record)
        other, theirs = keys.get(setting, ("", mine))
        if theirs != mine:
            raise BundleError(
                f"{method} in {setting.label}: the bundle's episodes differ from those of "
                f"{other} in this folder ({mine.differences(theirs)}), so paired statistics "
                "cannot compare them. They were drawn from another test list or with other "
                "videos left out; re-run on the official list with the videos this folder "
                "reads."
            )


def add_bundle(
    runs: str | Path, bundle_path: str | Path, *, splits_dir: str | Path | None = None
) -> Path:
    """Verify ``bundle_path`` and store it as outside results of ``runs``; returns the
    method's folder (``<runs>/external/<method>``, replaced when the method was added before).

    Raises:
        BundleFormatError, BundleVerificationError: the bundle does not verify.
        BundleError: it would clash with this folder's own records or episodes.
    """
    runs, bundle_path = Path(runs), Path(bundle_path)
    verified = verify_bundle(read_bundle(bundle_path), splits_dir=splits_dir)
    _check_fits(runs, verified)
    for note in verified.notes:
        log.warning("%s: %s", bundle_path.name, note)
    final = runs / EXTERNAL_DIR / method_slug(verified.bundle.method)
    if final.resolve().parent != (runs / EXTERNAL_DIR).resolve():  # read_bundle refuses these
        raise BundleError(f"{verified.bundle.method!r} names no folder of its own under {runs}")
    _check_slug_free(final, verified.bundle.method)
    mark = {
        "bundle": bundle_path.name,
        "bundle_sha256": verified.bundle.sha256,
        "added": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    work = final.with_name(f".{final.name}.adding")
    shutil.rmtree(work, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        for v in verified.records:
            # a bundle names its method only: a "system" tag would file it under another
            tags = {k: t for k, t in v.record.tags.items() if k != "system"}
            tags[OUTSIDE_TAG] = mark
            save_result(tmp, dataclasses.replace(v.record, tags=tags), v.result)
        shutil.copytree(Path(tmp) / "records", work / _PENDING)
    atomic_write_bytes(work / bundle_path.name, bundle_path.read_bytes())
    _swap_in(work, final)
    return final


def _check_slug_free(folder: Path, method: str) -> None:
    """``folder`` holds no other method's outside results: two names with one file-system
    name ('lab head', 'lab-head') would replace each other's records."""
    others = sorted({r.method for r in load_records(folder)} - {method}) if folder.exists() else []
    if others:
        raise BundleError(
            f"{folder} already holds the outside results of {others[0]!r}, whose folder name "
            f"is that of {method!r}; adding this bundle would replace them. Ask its authors to "
            "bundle it under a name that differs in letters or digits"
        )


_PENDING = "records.pending"  # not read as records until the last rename


def _swap_in(work: Path, final: Path) -> None:
    """Replace ``final`` by ``work`` so that no moment shows both methods' records (nor
    half of one): each step is a rename; a crash leaves the outside records unread."""
    if final.exists():
        if (final / "records").exists():
            (final / "records").replace(final / _PENDING)
        shutil.rmtree(final)
    work.replace(final)
    (final / _PENDING).replace(final / "records")
