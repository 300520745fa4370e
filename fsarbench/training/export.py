"""From a finetune checkpoint to the one evaluation path: the backbone's weights as a plain,
content-named state-dict file (so feature extraction loads them like any weights file and the
feature-cache key names them exactly), and the head as a method on cached features."""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fsarbench.io import atomic_write_bytes
from fsarbench.methods import FewShotMethod

__all__ = ["BACKBONE_PREFIX", "HEAD_PREFIX", "is_finetune_state", "export_backbone", "load_head"]

log = logging.getLogger(__name__)

BACKBONE_PREFIX = "backbone.trunk."
HEAD_PREFIX = "inner."


def is_finetune_state(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is a :class:`~fsarbench.training.video_method.VideoMethod`'s."""
    return any(k.startswith(BACKBONE_PREFIX) for k in state)


def _digest(tensors: Mapping[str, Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def export_backbone(state: Mapping[str, Tensor], folder: str | Path) -> Path:
    """Write the backbone part of a finetune ``state`` to ``folder/backbone-<digest>.pt``
    (the digest covers every tensor) and return its path.

    An existing file is kept only when it loads and holds exactly those tensors (its content
    digest is the one in its name); a truncated, unreadable or other file there is rewritten
    (through a temporary file and ``os.replace``), with a warning naming the cause. It was
    kept before, so every later extraction failed on it, or read other weights.
    """
    trunk = {
        k[len(BACKBONE_PREFIX) :]: v.detach().cpu()
        for k, v in state.items()
        if k.startswith(BACKBONE_PREFIX)
    }
    if not trunk:
        raise ValueError("not a finetune checkpoint: it holds no 'backbone.trunk.*' weights")
    digest = _digest(trunk)
    path = Path(folder) / f"backbone-{digest}.pt"
    damage = _damage(path, digest)
    if damage is None:
        return path
    if path.exists():
        log.warning("exported backbone %s is damaged (%s); writing it again", path, damage)
    buf = io.BytesIO()
    torch.save(trunk, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _damage(path: Path, digest: str) -> str | None:
    """``None`` when ``path`` holds exactly the backbone tensors of content digest ``digest``;
    else what is wrong with it (absent, unreadable, not a state dict, other tensors)."""
    if not path.is_file():
        return "absent"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle, EOF and OS errors of a truncated or foreign file
        detail = str(err).splitlines()[0] if str(err) else "no detail"
        return f"unreadable: {type(err).__name__}: {detail}"
    if not isinstance(saved, Mapping) or not all(isinstance(v, Tensor) for v in saved.values()):
        return f"holds a {type(saved).__name__}, not a state dict of tensors"
    found = _digest(saved)
    return None if found == digest else f"its tensors have digest {found}, not {digest}"


def load_head(
    method: str,
    state: Mapping[str, Tensor],
    *,
    feature_dim: int,
    seq_len: int,
    num_train_classes: int | None,
    hparams: Mapping[str, Any],
    dataset: str | None,
) -> FewShotMethod:
    """Registered head ``method`` with the ``inner.*`` weights of a finetune ``state``."""
    from fsarbench.registry import create_method, stored_hparams

    head = create_method(
        method,
        feature_dim=feature_dim,
        seq_len=seq_len,
        num_train_classes=num_train_classes,
        dataset=dataset,
        **stored_hparams(method, hparams),
    )
    inner = {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    head.load_state_dict(inner)
    return head.eval()
