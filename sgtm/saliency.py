"""The saliency classifier Φ_cls and actionness (Sec. 3.2, eq. 1-2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SaliencyClassifier"]


class SaliencyClassifier(nn.Module):
    """Φ_cls: temporal 1-D convolutions with ReLU and Dropout between them (eq. 1).

    ``[N, T, D]`` frame features -> class scores ``A`` ``[N, T, C]``, C = meta-train classes.
    Convolutions use "same" padding so every frame gets a score.
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
    ) -> None:
        super().__init__()
        if layers < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(
                f"Φ_cls needs layers >= 1 and an odd kernel, got layers={layers}, kernel={kernel}"
            )
        widths = [feature_dim] + [hidden] * (layers - 1) + [num_classes]
        mods: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            if i > 0:
                mods += [nn.ReLU(), nn.Dropout(dropout)]
            mods.append(nn.Conv1d(w_in, w_out, kernel, padding=kernel // 2))
        self.net = nn.Sequential(*mods)

    def forward(self, features: Tensor) -> Tensor:
        """``[N, T, D]`` -> class scores ``A`` ``[N, T, C]``."""
        return self.net(features.transpose(1, 2)).transpose(1, 2)

    def video_logits(self, features: Tensor) -> Tensor:
        """``[N, T, D]`` -> ``[N, C]``: ``A`` averaged over time (stage-1 classification)."""
        return self(features).mean(1)

    def actionness(self, features: Tensor) -> Tensor:
        """``[N, T, D]`` -> ``sigmoid(Σ_c A)`` ``[N, T]`` in (0, 1) (eq. 2)."""
        return torch.sigmoid(self(features).sum(-1))
