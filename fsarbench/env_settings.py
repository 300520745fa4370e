"""Numeric settings read from environment variables, checked by name.

A variable such as ``FSAR_LOCK_TIMEOUT`` is read where it is used, which can be hours into a
run (the first contended lock); a bad value then ended the run with Python's "could not
convert string to float: 'abc'". The readers go through :func:`env_number` and
:func:`env_switch`, whose errors name the variable and what it takes, and
:func:`check_environment` reads them all when a command starts, so a typo stops the command
before any work.
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
    allow_inf: bool = False,
    what: str,
) -> float | int | None:
    """``$name`` as ``kind`` (``default`` when unset or empty), refused by name unless it is
    finite (or ``inf`` with ``allow_inf``) and ``>= minimum`` / ``> above``; ``what`` says
    what the value means."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    bad = value is None or math.isnan(value) or (math.isinf(value) and not allow_inf)
    bad = bad or (minimum is not None and value < minimum)
    bad = bad or (above is not None and value <= above)
    if bad:
        rule = f" >= {minimum:g}" if minimum is not None else f" > {above:g}" if above else ""
        number = "a whole number" if kind is int else "a number"
        raise EnvSettingError(f"{name}={raw!r} is not {number}{rule} ({what}): fix or unset it")
    return value


#: Spellings of a switch's two states.
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_switch(name: str, default: bool, *, what: str) -> bool:
    """``$name`` as on (``1``, ``true``, ``yes``, ``on``) or off (``0``, ``false``, ``no``,
    ``off``), any case; anything else is refused by name (``FSAR_PROGRESS=false`` meant on)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() not in (*_ON, *_OFF):
        raise EnvSettingError(
            f"{name}={raw!r} must be 1, true, yes or on (on) or 0, false, no or off (off) ({what})"
        )
    return raw.lower() in _ON


def folder_setting_of(path: str | os.PathLike) -> str:
    """``" (under FSAR_CACHE=/x: ...)"`` when ``path`` lies in a folder an environment
    variable of :data:`WRITTEN_FOLDERS` chose, so that a failed write names the setting;
    ``""`` otherwise."""
    target = Path(os.path.abspath(Path(path).expanduser()))
    for name, what in WRITTEN_FOLDERS.items():
        raw = os.environ.get(name, "")
        if raw and target.is_relative_to(Path(os.path.abspath(Path(raw).expanduser()))):
            return f" (under {name}={raw!r}: point it at a writable folder for {what})"
    return ""


#: torchrun's variables, read as whole numbers (their agreement is checked where a command
#: starts its processes: a stray RANK=1 does not stop 'list').
TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def check_environment() -> None:
    """Read every numeric fsarbench and torchrun variable once, so that a bad value stops a
    command at its start with its name (each is read again where it is used). Folders are
    not checked here: a command that never writes one must not stop for it (a write that
    fails under ``FSAR_CACHE``/``FSAR_SYNTH`` names the variable: :func:`folder_setting_of`)."""
    from fsarbench.data.synth import generation_workers
    from fsarbench.distributed.env import group_timeout
    from fsarbench.locks import lock_timeout
    from fsarbench.progress import progress_every, progress_on

    progress_on()
    progress_every()
    lock_timeout()
    group_timeout()
    generation_workers()
    for name in TORCHRUN_VARIABLES:
        env_number(name, None, kind=int, what="set by torchrun")  # ranges: where it starts
