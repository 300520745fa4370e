"""Getting the published lists into a splits directory: download or copy from a folder."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from fsarbench.io import atomic_write_bytes, md5_file
from fsarbench_splits.catalog import SPLITS, VARIANTS, SplitSource

__all__ = ["SplitFetchError", "fetch_splits", "import_splits", "all_sources"]


class SplitFetchError(RuntimeError):
    """A download that failed (offline, HTTP error, or bytes with the wrong md5)."""


def all_sources(variants: list[str] | None = None) -> list[SplitSource]:
    """Distinct sources of the named variants (all by default)."""
    out: list[SplitSource] = []
    for name in variants or list(VARIANTS):
        out.extend(s for s in VARIANTS[name].sources if s not in out)
    return out


def _download(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise SplitFetchError(
            f"cannot download {url}: {reason}. Without internet, copy the lists from a "
            "machine that has them and run 'python -m fsarbench splits import DIR'."
        ) from None


def fetch_splits(
    dest: str | Path, variants: list[str] | None = None, *, timeout: float = 10.0
) -> list[Path]:
    """Download every list of ``variants`` into ``dest``; files already correct are kept.

    Raises SplitFetchError at the first failed download (the first try fails fast offline).
    """
    dest = Path(dest)
    written = []
    for source in all_sources(variants):
        for split in SPLITS:
            path = dest / source.rel_path(split)
            expected = source.file(split).md5
            if path.is_file() and md5_file(path) == expected:
                continue
            data = _download(source.url(split), timeout)
            actual = hashlib.md5(data).hexdigest()
            if actual != expected:
                raise SplitFetchError(
                    f"{source.url(split)} has md5 {actual}, published {expected}; not saved"
                )
            atomic_write_bytes(path, data)
            written.append(path)
    return written


def _candidates(src: Path, source: SplitSource, split: str) -> list[Path]:
    """Files under ``src`` that may be this list: same layout, or ``<folder>/<name>`` anywhere
    (e.g. a clone of the source repository)."""
    direct = src / source.rel_path(split)
    if direct.is_file():
        return [direct]
    name = source.file(split).name
    return sorted(p for p in src.rglob(name) if p.parent.name == source.folder and p.is_file())


def import_splits(
    src: str | Path, dest: str | Path, skipped: dict[str, str] | None = None
) -> dict[str, str]:
    """Copy every recognisable list from ``src`` into ``dest``.

    Prefers the candidate with the published md5, and never replaces a published list in
    ``dest`` with a modified one (those go into ``skipped``: rel_path -> md5). Returns
    rel_path -> md5 of what was copied.
    """
    skipped = {} if skipped is None else skipped
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise FileNotFoundError(f"{src} is not a folder")
    copied = {}
    for source in all_sources():
        for split in SPLITS:
            found = _candidates(src, source, split)
            if not found:
                continue
            md5s = {p: md5_file(p) for p in found}
            published = source.file(split).md5
            good = [p for p, m in md5s.items() if m == published]
            chosen = (good or found)[0]
            target = dest / source.rel_path(split)
            if not good and target.is_file() and md5_file(target) == published:
                # a modified copy never replaces the published list already in place
                skipped[source.rel_path(split)] = md5s[chosen]
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(chosen, target)
            copied[source.rel_path(split)] = md5s[chosen]
    return copied
