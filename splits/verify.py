"""Checks of a splits directory: md5, counts, class leakage and duplicate videos."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fsarbench.io import md5_file
from fsarbench_splits.artefacts import modified_cause
from fsarbench_splits.catalog import SPLITS, VARIANTS, SplitSource
from fsarbench_splits.parsers import SplitFormatError, class_key, parse_split_file

__all__ = ["FileCheck", "SourceCheck", "VerifyReport", "check_source", "verify_splits"]


@dataclass
class FileCheck:
    """One list file: whether it was found and how it compares with the registry."""

    variant: str
    repo: str
    split: str
    rel_path: str
    found: bool
    md5: str | None = None
    expected_md5: str = ""
    videos: int = 0
    classes: int = 0
    per_class: tuple[int, int] = (0, 0)
    duplicates: list[str] = field(default_factory=list)
    counts_ok: bool = False
    parse_error: str | None = None
    cause: str = ""  # editor artefacts of a modified list (BOM, CRLF, ...), as a sentence

    @property
    def md5_ok(self) -> bool:
        return self.md5 == self.expected_md5


@dataclass
class SourceCheck:
    """The three lists of one source: per-file checks plus cross-split checks."""

    variant: str
    repo: str
    files: list[FileCheck]
    leaked_classes: dict[str, list[str]] = field(default_factory=dict)
    cross_split_videos: dict[str, list[str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(f.found and f.parse_error is None for f in self.files)


@dataclass
class VerifyReport:
    """Every source found under a splits directory and what is wrong with it."""

    splits_dir: Path
    sources: list[SourceCheck]
    allow_modified: bool = False

    @property
    def files(self) -> list[FileCheck]:
        return [f for s in self.sources for f in s.files]

    @property
    def modified(self) -> dict[str, str]:
        """rel_path -> actual md5 of every found list whose bytes differ from the published."""
        return {f.rel_path: f.md5 for f in self.files if f.found and not f.md5_ok and f.md5}

    def errors(self) -> list[str]:
        """Human-readable problems; modified lists count only without ``allow_modified``."""
        out = []
        for f in self.files:
            if not f.found:  # a partly present source: its leakage check misses this list
                out.append(
                    f"{self.splits_dir / f.rel_path} is missing, while other {f.variant} lists "
                    "are present (their train/test leakage check needs every split); restore "
                    "it with 'splits fetch' or 'splits import DIR'"
                )
                continue
            if f.parse_error:
                out.append(f.parse_error)
            elif f.found and not f.md5_ok and not self.allow_modified:
                out.append(
                    f"{self.splits_dir / f.rel_path} is modified: md5 {f.md5}, published "
                    f"{f.expected_md5}. {f.cause + ' ' if f.cause else ''}Restore it with "
                    "'splits fetch' or 'splits import DIR', or pass --allow-modified to accept "
                    "it (its md5 is then recorded)"
                )
            if f.found and f.parse_error is None and not f.counts_ok:
                out.append(
                    f"{f.rel_path}: counts {f.videos} videos / {f.classes} classes "
                    "differ from the registry"
                )
            if f.duplicates:
                out.append(f"{f.rel_path}: duplicate videos {f.duplicates[:5]}")
        for s in self.sources:
            for cls, splits in s.leaked_classes.items():
                out.append(f"{s.variant} ({s.repo}): class {cls!r} appears in {splits}")
            for vid, splits in s.cross_split_videos.items():
                out.append(f"{s.variant} ({s.repo}): video {vid!r} appears in {splits}")
        return out

    @property
    def ok(self) -> bool:
        return not self.errors()

    def rows(self) -> list[dict[str, object]]:
        """One table row per list file found."""
        rows = []
        for s in self.sources:
            for f in s.files:
                if not f.found:
                    continue
                rows.append(
                    {
                        "file": f.rel_path,
                        "variant": f.variant,
                        "md5": "ok" if f.md5_ok else f"MODIFIED {f.md5}",
                        "videos": f.videos,
                        "classes": f.classes,
                        "per class": f"{f.per_class[0]}-{f.per_class[1]}",
                        "counts": "ok" if f.counts_ok else "WRONG",
                        "duplicates": len(f.duplicates),
                        # the classes and videos this list shares with another split (the
                        # variant's total repeated on every row marked untouched lists too)
                        "leakage": sum(
                            f.split in splits
                            for shared in (s.leaked_classes, s.cross_split_videos)
                            for splits in shared.values()
                        ),
                    }
                )
        return rows


def _check_file(variant: str, source: SplitSource, split: str, root: Path):
    spec = source.file(split)
    rel = source.rel_path(split)
    check = FileCheck(
        variant, source.repo, split, rel, (root / rel).is_file(), expected_md5=spec.md5
    )
    if not check.found:
        return check, []
    check.md5 = md5_file(root / rel)
    if not check.md5_ok:
        check.cause = modified_cause(root / rel, spec.md5)
    try:
        entries = parse_split_file(root / rel, source.format)
    except SplitFormatError as err:
        check.parse_error = str(err)
        return check, []
    per_class = Counter(e.class_name for e in entries)
    check.videos, check.classes = len(entries), len(per_class)
    check.per_class = (min(per_class.values()), max(per_class.values()))
    check.duplicates = sorted(v for v, n in Counter(e.video_id for e in entries).items() if n > 1)
    check.counts_ok = (check.videos, check.classes, *check.per_class) == (
        spec.videos,
        spec.classes,
        spec.min_per_class,
        spec.max_per_class,
    )
    return check, entries


def _shared(by_split: dict[str, set[str]], key=lambda item: item) -> dict[str, list[str]]:
    """Items present in more than one split (compared by ``key``) -> the splits holding
    them; an item spelled apart in two splits is named by its spellings
    (``"Fencing / fencing"``)."""
    seen: dict[str, list[str]] = {}
    names: dict[str, set[str]] = {}
    for split, items in by_split.items():
        for item in items:
            k = key(item)
            names.setdefault(k, set()).add(item)
            if split not in seen.get(k, []):
                seen.setdefault(k, []).append(split)
    return {" / ".join(sorted(names[k])): v for k, v in sorted(seen.items()) if len(v) > 1}


def check_source(variant: str, source: SplitSource, root: Path) -> SourceCheck:
    """Check the three lists of ``source`` under ``root`` (missing files are reported)."""
    files, parsed = [], {}
    for split in SPLITS:
        check, entries = _check_file(variant, source, split, root)
        files.append(check)
        parsed[split] = entries
    result = SourceCheck(variant, source.repo, files)
    result.leaked_classes = _shared(
        {s: {e.class_name for e in es} for s, es in parsed.items()}, class_key
    )
    result.cross_split_videos = _shared({s: {e.video_id for e in es} for s, es in parsed.items()})
    return result


def verify_splits(
    splits_dir: str | Path | None = None,
    *,
    variants: list[str] | None = None,
    allow_modified: bool = False,
) -> VerifyReport:
    """Check every list found under ``splits_dir`` (default: :func:`default_splits_dir`).

    Sources with no file present are left out of the report; partly present ones are kept
    (their missing files show ``found=False``).
    """
    from fsarbench_splits.load import default_splits_dir

    root = Path(splits_dir) if splits_dir is not None else default_splits_dir()
    sources = []
    for name in variants or list(VARIANTS):
        for source in VARIANTS[name].sources:
            check = check_source(name, source, root)
            if any(f.found for f in check.files):
                sources.append(check)
    return VerifyReport(root, sources, allow_modified)
