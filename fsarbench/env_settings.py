"""Numeric settings read from environment variables, checked by name.

A variable such as ``FSAR_LOCK_TIMEOUT`` is read where it is used, which can be hours into a
run (the first contended lock); a bad value then ended the run with Python's "could not
convert string to float: 'abc'". Every reader goes through :func:`env_number`, whose error
names the variable and what it takes, and :func:`check_environment` reads them all (and the
folders of :data:`WRITTEN_FOLDERS`) when a command starts, so a typo stops the command before
any work.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "EnvSettingError",
    "env_number",
    "env_switch",
    "env_folder",
    "folder_setting_of",
    "check_environment",
]

#: Folders fsarbench writes into, set by environment variable -> what each holds.
WRITTEN_FOLDERS = {
    "FSAR_CACHE": "the feature cache",
    "FSAR_SYNTH": "the generated synth benchmark",
}


class EnvSettingError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def env_number(
    name: str,
    default: float | int | None,
    *,
    kind: Callable[[str], float | int] = float,
    minimum: float | None = None,
    above: float | None = None,
    what: str,
) -> float | int | None:
    """``$name`` as ``kind`` (``default`` when unset or empty), refused by name unless it is
    finite and ``>= minimum`` / ``> above``; ``what`` says what the value means."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    bad = value is None or not math.isfinite(value)
    bad = bad or (minimum is not None and value < minimum)
    bad = bad or (above is not None and value <= above)
    if bad:
        rule = f" >= {minimum:g}" if minimum is not None else f" > {above:g}" if above else ""
        number = "a whole number" if kind is int else "a number"
        raise EnvSettingError(f"{name}={raw!r} is not {number}{rule} ({what}): fix or unset it")
    return value


def env_switch(name: str, default: bool, *, what: str) -> bool:
    """``$name`` as on (``1``) or off (``0``); anything else is refused by name."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw not in ("0", "1"):
        raise EnvSettingError(f"{name}={raw!r} must be 1 (on) or 0 (off) ({what})")
    return raw == "1"


def env_folder(name: str, what: str) -> Path | None:
    """``$name`` as a folder that exists or can be created (``None`` when unset). An existing
    read-only folder is fine (a shared cache is read, not written); a file, or a missing
    folder under one that cannot be written, is refused by name: it failed later as a bare
    "[Errno 2] No such file or directory"."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise EnvSettingError(f"{name}={raw!r} is a file, not a folder for {what}")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise EnvSettingError(
            f"{name}={raw!r} does not exist and cannot be created ({parent} is not a "
            f"writable folder): point it at a folder for {what}, or unset it"
        )
    return path


def folder_setting_of(path: str | os.PathLike) -> str:
    """``" (under FSAR_CACHE=/x: ...)"`` when ``path`` lies in a folder an environment
    variable of :data:`WRITTEN_FOLDERS` chose, so that a failed write names the setting;
    ``""`` otherwise."""
    target = Path(os.path.abspath(Path(path).expanduser()))
    for name, what in WRITTEN_FOLDERS.items():
        raw = os.environ.get(name, "").strip()
        if raw and target.is_relative_to(Path(os.path.abspath(Path(raw).expanduser()))):
            return f" (under {name}={raw!r}: point it at a writable folder for {what})"
    return ""


def check_environment() -> None:
    """Read every numeric fsarbench and torchrun variable once, so that a bad value stops a
    command at its start with its name (each is read again where it is used)."""
    from fsarbench.data.synth import generation_workers
    from fsarbench.distributed.env import dist_env, local_world_size
    from fsarbench.locks import lock_timeout
    from fsarbench.progress import progress_every, progress_on

    progress_on()
    progress_every()
    lock_timeout()
    generation_workers()
    dist_env()
    local_world_size()
    for name, what in WRITTEN_FOLDERS.items():
        env_folder(name, what)
