"""The code version recorded with every result: package version plus git commit when known."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__all__ = ["__version__", "code_version"]

__version__ = "0.1.0"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``"0.1.0+g<commit>[.dirty]"`` inside a git checkout, else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"
