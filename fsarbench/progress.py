"""Progress bars (tqdm) that stay quiet when output is not a terminal or when asked."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(*, disable: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; ``FSAR_PROGRESS=0`` turns every bar off (CI logs)."""
    if os.environ.get("FSAR_PROGRESS", "1") == "0":
        disable = True
    return tqdm(file=sys.stderr, disable=disable, dynamic_ncols=True, mininterval=0.5, **kwargs)
