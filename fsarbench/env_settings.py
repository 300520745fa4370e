"""Numeric settings read from environment variables, checked by name.

A variable such as ``FSAR_LOCK_TIMEOUT`` is read where it is used, which can be hours into a
run (the first contended lock); a bad value then ended the run with Python's "could not
convert string to float: 'abc'". Every reader goes through :func:`env_number`, whose error
names the variable and what it takes, and :func:`check_environment` reads them all when a
command starts, so a typo stops the command before any work.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

__all__ = ["EnvSettingError", "env_number", "env_switch", "check_environment"]


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
