"""Editor artefacts in a list's bytes: what makes a re-saved copy differ from the published one.

A list opened and saved in some editors gains a UTF-8 byte-order mark, Windows (CRLF) line
ends, spaces at line ends or loses its final newline. Its md5 then differs from the published
one; these helpers let the modified-list error say so instead of only printing two hashes.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from pathlib import Path

__all__ = ["editor_artefacts", "normalised", "modified_cause"]

_TRAILING_BLANKS = re.compile(rb"[ \t]+$", re.MULTILINE)


def editor_artefacts(data: bytes) -> list[str]:
    """Names of the artefacts found in ``data`` (empty when there are none)."""
    found = []
    if data.startswith(codecs.BOM_UTF8):
        found.append("a UTF-8 byte-order mark (BOM)")
    if b"\r\n" in data:
        found.append("Windows (CRLF) line ends")
    if b"\r" in data.replace(b"\r\n", b""):
        found.append("classic Mac (CR) line ends")
    if _TRAILING_BLANKS.search(_lf(data)):
        found.append("spaces or tabs at line ends")
    if data and not data.endswith((b"\n", b"\r")):
        found.append("no newline at the end")
    return found


def _lf(data: bytes) -> bytes:
    """``data`` with CRLF and lone CR line ends as LF."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def normalised(data: bytes) -> bytes:
    """``data`` without the artefacts: no BOM, LF line ends (from CRLF or CR), no trailing
    blanks, a final newline."""
    text = _lf(data.removeprefix(codecs.BOM_UTF8))
    text = _TRAILING_BLANKS.sub(b"", text)
    return text if not text or text.endswith(b"\n") else text + b"\n"


def modified_cause(path: Path, expected_md5: str) -> str:
    """A sentence naming the editor artefacts of a modified list, or "" when it has none.

    Says whether they are the whole difference (the content is the published list's) or the
    file also differs in its lines.
    """
    data = Path(path).read_bytes()
    found = editor_artefacts(data)
    if not found:
        return ""
    what = ", ".join(found)
    if hashlib.md5(normalised(data)).hexdigest() == expected_md5:
        return f"Its lines are the published ones; only its bytes differ: {what}."
    return f"It has {what} (the published list has none of these), and its lines differ too."
