"""Public face of the split registry: variants, parsers, verification and loading.

Other modules import from here::

    from fsarbench_splits.registry import VARIANTS, parse_split_file, verify_splits
"""

from __future__ import annotations

from fsarbench_splits.catalog import REPOS, SPLITS, VARIANTS, SplitFile, SplitSource, SplitVariant
from fsarbench_splits.load import (
    LoadedSplit,
    SplitModifiedError,
    SplitsNotFoundError,
    default_splits_dir,
    find_source,
    get_variant,
    load_split,
)
from fsarbench_splits.parsers import SplitEntry, SplitFormatError, parse_split_file
from fsarbench_splits.verify import FileCheck, SourceCheck, VerifyReport, verify_splits

__all__ = [
    "REPOS",
    "SPLITS",
    "VARIANTS",
    "SplitFile",
    "SplitSource",
    "SplitVariant",
    "LoadedSplit",
    "SplitModifiedError",
    "SplitsNotFoundError",
    "default_splits_dir",
    "find_source",
    "get_variant",
    "load_split",
    "SplitEntry",
    "SplitFormatError",
    "parse_split_file",
    "FileCheck",
    "SourceCheck",
    "VerifyReport",
    "verify_splits",
]
