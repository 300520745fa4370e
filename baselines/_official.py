"""Loading state dicts saved by a reference implementation into a head whose sub-modules carry
the reference's names (TRX and HyRSM keep those names so that official checkpoints load)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

__all__ = ["load_official_state_dict", "OfficialCheckpointError"]

_WRAPPERS = ("model_state_dict", "model_state", "state_dict")
_HEAD = "head."


class OfficialCheckpointError(ValueError):
    """An official checkpoint that does not fit the head; the message lists every problem."""


def _unwrap(sd: Mapping[str, object]) -> Mapping[str, object]:
    """Training scripts save ``{"model_state_dict": sd, ...}`` (TRX) or ``{"model_state": sd}``
    (HyRSM); accept those as well as a bare state dict."""
    for key in _WRAPPERS:
        inner = sd.get(key)
        if isinstance(inner, Mapping):
            return inner
    return sd


def _strip(key: str) -> str:
    while key.startswith("module."):  # DataParallel / DistributedDataParallel
        key = key[len("module.") :]
    return key


def load_official_state_dict(
    module: nn.Module,
    sd: Mapping[str, object],
    *,
    ignore: Iterable[str] = (),
    what: str = "checkpoint",
) -> list[str]:
    """Copy the tensors of an official state dict into ``module`` (strict, shapes checked).

    Args:
        module: a head whose parameter and buffer names equal the reference's.
        sd: the official state dict (``module.`` prefixes allowed, and a ``head.`` prefix on
            every key, as HyRSM's model wrapper saves its head; optionally wrapped).
        ignore: regular expressions of keys to skip (backbone weights, index tensors).
        what: the checkpoint's name in error messages.

    Returns:
        The ignored keys, sorted.

    Raises:
        OfficialCheckpointError: listing missing, unexpected and mis-shaped keys.
    """
    patterns = [re.compile(p) for p in ignore]
    expected = module.state_dict()
    found: dict[str, Tensor] = {}
    ignored: list[str] = []
    entries = _unwrap(sd)
    # HyRSM's (and CLIP-FSAR's) training script saves its BaseVideoModel, whose head is the
    # ``head`` sub-module: every key reads ``head.pe.pe``, ``head.backbone.0.weight``...
    wrapped = bool(entries) and all(_strip(k).startswith(_HEAD) for k in entries)
    for raw_key, value in entries.items():
        key = _strip(raw_key)
        key = key[len(_HEAD) :] if wrapped else key
        if any(p.match(key) for p in patterns):
            ignored.append(raw_key)
            continue
        if not isinstance(value, Tensor):
            raise OfficialCheckpointError(f"{what}: entry {raw_key!r} is not a tensor")
        found[key] = value
    problems = [
        f"missing key {k!r} {tuple(v.shape)}" for k, v in expected.items() if k not in found
    ]
    problems += [f"unexpected key {k!r}" for k in found if k not in expected]
    problems += [
        f"key {k!r} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
        for k, v in found.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if problems:
        raise OfficialCheckpointError(
            f"{what} does not fit {type(module).__name__}: " + "; ".join(problems)
        )
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(found[key].to(dtype=target.dtype, device=target.device))
    return sorted(ignored)
