"""Options several commands share, defined once so their names and meanings agree."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

__all__ = [
    "at_least",
    "episode_count",
    "episodes_help",
    "parse_hparams",
    "add_protocol_argument",
    "add_splits_dir_argument",
    "apply_splits_dir",
    "parse_overrides",
    "seed_value",
    "device_name",
    "torchrun_threads_note",
    "folder_path",
    "writable_folder",
    "unwritable_reason",
    "file_path",
]


def at_least(low: int):
    """An argparse ``type``: an integer ``>= low`` (e.g. ``--ways`` from 2, ``--episodes``
    from 1), refused with the flag's name before any work starts."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def folder_path(text: str) -> Path:
    """An argparse ``type`` for an output folder: refused before any work when a file is
    there (``--out results.csv`` ran a whole evaluation, then stopped with a traceback and
    lost its result)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder: name a folder")
    return path


folder_path.__name__ = "folder"


def unwritable_reason(path: Path) -> str:
    """Why the folder ``path`` cannot be written or created here (``""`` when it can): a
    read-only mount ran a whole evaluation, then lost it at the first write."""
    there = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if os.access(there, os.W_OK | os.X_OK):
        return ""
    what = "is" if there == path else f"cannot be created: {there} is"
    return f"{path} {what} not writable here (a read-only mount?): name a folder you can write"


def writable_folder(text: str) -> Path:
    """An argparse ``type`` for an output folder that is written: :func:`folder_path`, and
    refused before any work when it cannot be written or created."""
    path = folder_path(text)
    reason = unwritable_reason(path)
    if reason:
        raise argparse.ArgumentTypeError(reason)
    return path


writable_folder.__name__ = "folder"


def file_path(text: str) -> Path:
    """An argparse ``type`` for an output file: refused when a folder is there."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file: name a file")
    return path


file_path.__name__ = "file"


#: Why ``--bad-videos error`` is refused on the frozen track (it was accepted and ignored).
FROZEN_BAD_VIDEOS = (
    "--bad-videos error applies to --track finetune: the frozen track leaves a missing or "
    "unreadable video out of its features and names it in each record's skipped_videos "
    "(and the run's log); leave the flag out, or use --track finetune"
)


#: Largest seed every generator takes (torch's manual_seed, numpy's SeedSequence, Philox keys).
MAX_SEED = 2**63 - 1


def seed_value(text: str) -> int:
    """An argparse ``type`` for seeds: an integer in ``0..MAX_SEED``, refused before any work
    starts (a larger training seed stopped a run after its earlier seeds had trained)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in 0..2**63-1, got {value}")
    return value


seed_value.__name__ = "seed"


def device_name(text: str) -> str:
    """An argparse ``type`` for ``--device``: a device name torch knows; ``cuda`` or
    ``cuda:N`` only of a GPU torch sees here, refused before any work (``cdua`` printed
    torch's list of 20 device types; ``cuda`` without a GPU, torch's driver message from
    deep inside a run)."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}: use cpu, cuda or cuda:N"
        ) from None
    if device.type == "cpu":
        if device.index not in (None, 0):
            raise argparse.ArgumentTypeError(f"{text!r}: the CPU is one device (use cpu)")
        return text
    if device.type != "cuda":  # mps, xpu, ...: torch's to judge, as before
        return text
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} asked for, but torch sees no CUDA GPU here")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text!r}: torch sees {torch.cuda.device_count()} GPU(s) here (cuda:0 to "
            f"cuda:{torch.cuda.device_count() - 1})"
        )
    return text


device_name.__name__ = "device"


def episode_count(text: str) -> int:
    """An argparse ``type`` for ``--episodes``: an integer in ``1..MAX_EPISODES``
    (:func:`fsarbench.episodes.check_episode_count`), refused before any work starts (a
    billion episodes filled memory while the manifest was drawn)."""
    from fsarbench.episodes import EpisodeCountError, check_episode_count

    try:
        return check_episode_count(at_least(1)(text), "the count")
    except EpisodeCountError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


episode_count.__name__ = "integer"


def episodes_help(what: str) -> str:
    """``--episodes`` help: ``what`` the count is, and its bounds."""
    from fsarbench.episodes import MAX_EPISODES

    return f"{what} (1 to {MAX_EPISODES:,}; the protocol's 10,000 by default)"


def parse_hparams(text: str) -> dict[str, Any]:
    """``--hparams`` JSON as a mapping of hyper-parameter names to values."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--hparams is not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--hparams takes a JSON object such as '{{\"lam\": 0.5}}', got {text!r}")
    return value


def add_protocol_argument(p: argparse.ArgumentParser | Any) -> None:
    """``--protocol NAME``: frame sampling, transforms, flip and normalisation."""
    from fsarbench.data.protocols import DEFAULT_PROTOCOL, list_protocols

    p.add_argument(
        "--protocol",
        choices=list_protocols(),
        default=DEFAULT_PROTOCOL,
        help="frame sampling, transforms, flip and normalisation of a reference "
        f"(default {DEFAULT_PROTOCOL}: the seed paper's; see 'python -m fsarbench protocols')",
    )


def add_splits_dir_argument(p: argparse.ArgumentParser | Any) -> None:
    """``--splits-dir DIR``: where the published split lists are (else ``$FSAR_SPLITS``)."""
    p.add_argument(
        "--splits-dir",
        default=None,
        metavar="DIR",
        help="folder of the published split lists (default $FSAR_SPLITS)",
    )


def apply_splits_dir(args: argparse.Namespace) -> None:
    """Make ``--splits-dir`` the splits folder of everything this process opens."""
    if getattr(args, "splits_dir", None):
        os.environ["FSAR_SPLITS"] = str(args.splits_dir)


#: What YAML 1.1 (PyYAML) reads as a base-60 number: ``1:30`` is 90.
_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?")

#: What YAML 1.1 reads as an integer in another base: ``010`` is 8, ``0x10`` 16, ``0b11`` 3.
_OTHER_BASE = re.compile(r"[-+]?(0[0-7_]+|0x[0-9a-fA-F_]+|0b[01_]+)")


class UsageError(ValueError):
    """A command line that cannot be acted on as written (the message says what to type)."""


def parse_overrides(items: list[str], flag: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values read as YAML). A key given
    twice is refused (``steps=50 steps=60`` took the last one without a word)."""
    from fsarbench.config import load_yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} takes KEY=VALUE, got {item!r}")
        if key in out:
            raise UsageError(f"{flag} sets {key!r} twice; give it once")
        base = _yaml_base(value.strip())
        if base:  # YAML 1.1: steps=1:30 trained 90 steps, steps=010 trained 8
            raise UsageError(
                f"{flag} {item}: YAML reads {value!r} as {base} number "
                f"({load_yaml(value)}); write the number itself, or quote it for text"
            )
        out[key] = load_yaml(value)
    return out


def _yaml_base(value: str) -> str:
    """The base YAML 1.1 reads ``value`` in when it is not plain decimal (``""`` if it is)."""
    if _SEXAGESIMAL.fullmatch(value):
        return "a base-60"
    match = _OTHER_BASE.fullmatch(value)
    if not match:
        return ""
    return {"x": "a hexadecimal", "b": "a binary"}.get(match.group(1)[1:2], "an octal")


def torchrun_threads_note(threads: int) -> str:
    """What a torchrun ``run`` or ``train`` on the CPU says of its intra-op threads: torchrun sets
    ``OMP_NUM_THREADS=1`` unless it is set, and training's float sums depend on the thread
    count, so its numbers can differ from a plain run's in the last digits."""
    return (
        f"torchrun: {threads} intra-op thread(s) per process (records keep it as "
        "compute.threads); training's floating-point sums depend on the count, so a cell can "
        "differ from a plain run's with another count in its last digits: set "
        "OMP_NUM_THREADS to that run's count for its numbers bit for bit"
    )


def crop_alone_note(options: dict[str, Any]) -> str:
    """A note when ``--option crop=N`` is given without ``resize``: the finetune presets
    keep their resize (256 on the real datasets), so ``crop=112`` trains on 112-px crops of
    256-px frames (a fifth of the frame), not on a lower resolution as the frozen track's
    ``--resolution 112`` does (it resizes to 128); ``""`` otherwise."""
    if not options.get("crop") or options.get("resize"):
        return ""
    crop = options["crop"]
    return (
        f"note: --option crop={crop} without resize keeps the transforms' resize (256 on "
        f"the real datasets): {crop}-px crops of the resized frame, not a lower resolution; "
        f"for that give resize as well, e.g. --option resize={round(crop * 8 / 7)} crop={crop}"
    )
