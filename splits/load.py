"""Locating and loading a variant's lists from a splits directory, md5-checked."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from fsarbench.io import md5_file
from fsarbench_splits.artefacts import modified_cause
from fsarbench_splits.catalog import VARIANTS, SplitSource, SplitVariant
from fsarbench_splits.parsers import SplitEntry, parse_split_file

__all__ = [
    "LoadedSplit",
    "SplitModifiedError",
    "SplitsNotFoundError",
    "default_splits_dir",
    "get_variant",
    "find_source",
    "load_split",
]


class SplitModifiedError(ValueError):
    """A list whose md5 differs from the published one (names the file and both hashes)."""


class SplitsNotFoundError(FileNotFoundError):
    """No copy of a variant's lists under the splits directory (says how to get them)."""


def default_splits_dir() -> Path:
    """``$FSAR_SPLITS`` if set, else ``<user cache>/fsarbench/splits``."""
    env = os.environ.get("FSAR_SPLITS")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("fsarbench")) / "splits"


def get_variant(name: str) -> SplitVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown split variant {name!r}; variants: {', '.join(VARIANTS)}") from None


def _present(source: SplitSource, root: Path) -> list[str]:
    """The splits of ``source`` whose list file exists under ``root``."""
    return [f.split for f in source.files if (root / source.rel_path(f.split)).is_file()]


def find_source(variant: SplitVariant, root: Path, split: str) -> SplitSource:
    """The copy of ``variant`` in use under ``root`` if it holds ``split``'s list.

    The copy in use is the first source with any of its lists present: a dataset's lists
    are never mixed across copies (their class names, video lists and class order differ,
    so a mixed set would draw other episodes under the same variant name).
    """
    for source in variant.sources:
        present = _present(source, root)
        if split in present:
            return source
        if present:
            raise SplitsNotFoundError(_partial_copy_message(variant, root, source, split, present))
    wanted = " or ".join(str(root / s.rel_path(split)) for s in variant.sources)
    raise SplitsNotFoundError(
        f"split list for {variant.name}/{split} not found: looked for {wanted}. Run "
        "'python -m fsarbench splits fetch' (internet) or 'splits import DIR', or pass "
        "--splits-dir / set FSAR_SPLITS."
    )


def _partial_copy_message(
    variant: SplitVariant, root: Path, source: SplitSource, split: str, present: list[str]
) -> str:
    """Why a copy holding some of a variant's lists but not ``split``'s is not completed."""
    later = variant.sources[variant.sources.index(source) + 1 :]
    others = [s for s in later if split in _present(s, root)]
    other = f" ({others[0].repo}'s copy has it, but" if others else " (and"
    return (
        f"split list for {variant.name}/{split} not found: {root / source.rel_path(split)} is "
        f"missing while {source.repo}'s copy holds {'/'.join(present)}{other} a dataset's lists "
        "are read from one copy, never mixed: the copies differ in class names, video lists "
        "and order). Restore the missing file with 'python -m fsarbench splits fetch' "
        "(internet) or 'splits import DIR', or remove the partial copy "
        f"{root / source.local_dir}."
    )


@dataclass(frozen=True)
class LoadedSplit:
    """The parsed entries of one list plus what to record about it."""

    variant: str
    split: str
    path: Path
    md5: str
    modified: bool
    entries: list[SplitEntry]

    def provenance(self) -> dict[str, object]:
        """JSON-friendly facts for a result record (file, md5, whether modified)."""
        return {
            "variant": self.variant,
            "split": self.split,
            "file": str(self.path),
            "md5": self.md5,
            "modified": self.modified,
        }


def _modified_message(path: Path, actual: str, expected: str) -> str:
    """Why a list is refused and the ways on: restore it, or accept it through the API."""
    cause = modified_cause(path, expected)
    return (
        f"{path} is modified: md5 {actual}, published {expected}. {cause + ' ' if cause else ''}"
        "Restore the published list with 'python -m fsarbench splits fetch' (internet) or "
        "'splits import DIR'. To use it as it is, load it with allow_modified=True "
        "(get_dataset / load_split; its md5 is then recorded with results); 'splits verify' "
        "and 'data check' take --allow-modified, while run, extract, train and eval read only "
        "the published lists."
    )


def load_split(
    variant: str,
    split: str,
    splits_dir: str | Path | None = None,
    *,
    allow_modified: bool = False,
) -> LoadedSplit:
    """Parse ``variant``'s ``split`` list, checking its md5 against the registry.

    Raises:
        SplitsNotFoundError: no copy under the splits directory.
        SplitModifiedError: md5 differs and ``allow_modified`` is False.
    """
    var = get_variant(variant)
    root = Path(splits_dir) if splits_dir is not None else default_splits_dir()
    source = find_source(var, root, split)
    path = root / source.rel_path(split)
    actual, expected = md5_file(path), source.file(split).md5
    if actual != expected and not allow_modified:
        raise SplitModifiedError(_modified_message(path, actual, expected))
    entries = parse_split_file(path, source.format)
    return LoadedSplit(variant, split, path, actual, actual != expected, entries)
