"""From a finetune checkpoint to the one evaluation path: the backbone's weights as a plain,
content-named state-dict file (so feature extraction loads them like any weights file and the
feature-cache key names them exactly), and the head as a method on cached features."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fsarbench.io import atomic_write_bytes
from fsarbench.methods import FewShotMethod

__all__ = ["BACKBONE_PREFIX", "HEAD_PREFIX", "is_finetune_state", "export_backbone", "load_head"]

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
    (once; the digest covers every tensor) and return its path."""
    trunk = {
        k[len(BACKBONE_PREFIX) :]: v.detach().cpu()
        for k, v in state.items()
        if k.startswith(BACKBONE_PREFIX)
    }
    if not trunk:
        raise ValueError("not a finetune checkpoint: it holds no 'backbone.trunk.*' weights")
    path = Path(folder) / f"backbone-{_digest(trunk)}.pt"
    if not path.exists():
        buf = io.BytesIO()
        torch.save(trunk, buf)
        atomic_write_bytes(path, buf.getvalue())
    return path


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
    from fsarbench.registry import create_method

    head = create_method(
        method,
        feature_dim=feature_dim,
        seq_len=seq_len,
        num_train_classes=num_train_classes,
        dataset=dataset,
        **dict(hparams),
    )
    inner = {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    head.load_state_dict(inner)
    return head.eval()
