"""The saliency classifier Φ_cls and actionness (Sec. 3.2, eq. 1-2).

Eq. 1-2 fix the architecture (temporal convolutions with ReLU and Dropout between them giving
``A ∈ R^{T×C}``; actionness ``sigmoid(Σ_c A)``) but not how Φ_cls is trained ("supervised
training on Φ_cls using the class labels"). The formula is CoLA's (CVPR'21) and, before it,
weakly-supervised temporal action localisation's (W-TALC, BaS-Net, UM): there the frame-level
class scores are pooled to a video-level score by the mean of the **top-k** frames of every
class (multiple-instance learning). The pooling, the loss and whether ``A`` is rectified before
the channel sum are options here (``SGTMConfig.saliency_pool``, ``saliency_loss``,
``saliency_rectify``); see docs/methods.md, "How Φ_cls learns actionness".
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SaliencyClassifier", "POOLS", "LOSSES", "RECTIFY", "topk_frames", "saliency_loss"]

Pool = Literal["mean", "topk"]
Loss = Literal["ce", "bce"]
Rectify = Literal["none", "relu", "softplus"]
Init = Literal["default", "zero_sum", "off"]
Padding = Literal["zeros", "replicate"]
INITS: tuple[str, ...] = ("default", "zero_sum", "off")
#: Bias of every class channel under ``init="off"``: softplus(-4) ≈ 0.018, so a class starts
#: with almost no evidence anywhere and stage 1 turns on only what its labels support.
OFF_BIAS = -4.0

POOLS: tuple[str, ...] = ("mean", "topk")
LOSSES: tuple[str, ...] = ("ce", "bce")
RECTIFY: tuple[str, ...] = ("none", "relu", "softplus")


def topk_frames(seq_len: int, ratio: float) -> int:
    """Frames the top-k pooling averages: ``max(1, ceil(ratio · T))`` (at most T)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"saliency_topk_ratio must lie in (0, 1], got {ratio}")
    return min(seq_len, max(1, math.ceil(ratio * seq_len - 1e-9)))


def center_classes(last: nn.Conv1d) -> None:
    """Subtract the class mean from the last layer's weights ``[C, H, K]`` and bias ``[C]``
    in place, so that ``Σ_c A`` is exactly 0 for every input at initialisation."""
    with torch.no_grad():
        last.weight -= last.weight.mean(0, keepdim=True)
        if last.bias is not None:
            last.bias -= last.bias.mean()


class SaliencyClassifier(nn.Module):
    """Φ_cls: temporal 1-D convolutions with ReLU and Dropout between them (eq. 1).

    ``[N, T, D]`` frame features -> class scores ``A`` ``[N, T, C]``, C = meta-train classes.
    Convolutions use "same" padding so every frame gets a score.

    Args:
        pool: how ``A`` becomes a video score for stage 1: "mean" over time, or "topk", the
            mean of each class's ``topk_frames(T, topk_ratio)`` highest frames (MIL).
        topk_ratio: share of frames the top-k pooling keeps.
        rectify: "softplus" sums ``softplus(A)`` over classes in eq. 2 (positive evidence,
            never a dead unit), "relu" sums ``max(A, 0)``, "none" sums ``A`` as eq. 2 writes it.
        init: "off" centres the last layer over classes and sets its bias to ``OFF_BIAS`` (every
            class starts with almost no evidence); "zero_sum" only centres it (``Σ_c A`` = 0 at
            initialisation); "default" is PyTorch's.
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        *,
        layers: int = 2,
        hidden: int = 512,
        kernel: int = 3,
        dropout: float = 0.5,
        pool: Pool = "topk",
        topk_ratio: float = 0.125,
        rectify: Rectify = "relu",
        init: Init = "zero_sum",
        padding: Padding = "replicate",
    ) -> None:
        super().__init__()
        if layers < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(
                f"Φ_cls needs layers >= 1 and an odd kernel, got layers={layers}, kernel={kernel}"
            )
        if pool not in POOLS or rectify not in RECTIFY:
            raise ValueError(f"pool must be one of {POOLS} and rectify one of {RECTIFY}")
        topk_frames(1, topk_ratio)  # validates the ratio
        self.pool, self.topk_ratio, self.rectify = pool, topk_ratio, rectify
        widths = [feature_dim] + [hidden] * (layers - 1) + [num_classes]
        mods: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            if i > 0:
                mods += [nn.ReLU(), nn.Dropout(dropout)]
            mods.append(nn.Conv1d(w_in, w_out, kernel, padding=kernel // 2, padding_mode=padding))
        self.net = nn.Sequential(*mods)
        if init in ("zero_sum", "off"):
            center_classes(self.net[-1])
        if init == "off":
            nn.init.constant_(self.net[-1].bias, OFF_BIAS)
        elif init not in INITS:
            raise ValueError(f"unknown saliency_init {init!r}; known: {INITS}")

    def forward(self, features: Tensor) -> Tensor:
        """``[N, T, D]`` -> class scores ``A`` ``[N, T, C]`` (``>= 0`` with ``rectify="relu"``)."""
        scores = self.net(features.transpose(1, 2)).transpose(1, 2)
        if self.rectify == "relu":
            return scores.clamp_min(0)
        if self.rectify == "softplus":
            return F.softplus(scores)
        return scores

    def video_logits(self, features: Tensor) -> Tensor:
        """``[N, T, D]`` -> ``[N, C]``: ``A`` pooled over time (``pool``) for stage 1."""
        scores = self(features)
        if self.pool == "mean":
            return scores.mean(1)
        k = topk_frames(scores.shape[1], self.topk_ratio)
        return scores.topk(k, dim=1).values.mean(1)

    def actionness_logits(self, features: Tensor) -> Tensor:
        """``[N, T, D]`` -> ``Σ_c A`` ``[N, T]`` (of ``max(A, 0)`` with ``rectify="relu"``):
        eq. 2 before the sigmoid, which masks rank by (no saturation ties)."""
        return self(features).sum(-1)

    def actionness(self, features: Tensor) -> Tensor:
        """``[N, T, D]`` -> ``sigmoid(Σ_c A)`` ``[N, T]`` in (0, 1) (eq. 2)."""
        return torch.sigmoid(self.actionness_logits(features))


def saliency_loss(logits: Tensor, classes: Tensor, loss: Loss) -> Tensor:
    """Stage-1 loss of video scores ``logits [N, C]`` against class ids ``classes [N]``.

    "ce": softmax cross-entropy. Its gradient ``softmax - onehot`` sums to zero over classes,
    so with mean pooling the class-sum direction of Φ_cls's last layer gets no gradient and
    ``Σ_c A`` stays a projection of its random initial weights (decayed by weight decay).
    "bce": one binary cross-entropy per class (one-vs-rest; BaS-Net, UM), averaged over
    classes and videos.
    """
    if loss == "ce":
        return F.cross_entropy(logits, classes)
    if loss == "bce":
        target = F.one_hot(classes, logits.shape[-1]).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, target)
    raise ValueError(f"unknown saliency_loss {loss!r}; known: {LOSSES}")
