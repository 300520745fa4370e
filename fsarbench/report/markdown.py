"""Text put into a cell of a Markdown table."""

from __future__ import annotations

__all__ = ["md_cell_text"]


def md_cell_text(text: str) -> str:
    """``text`` with ``|`` escaped: a system named ``protonet[metric=cos|l2]`` split its row
    into one more column, and every later cell was read under the wrong header."""
    return str(text).replace("|", "\\|")
