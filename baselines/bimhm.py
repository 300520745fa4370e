"""Bi-MHM: the bidirectional mean Hausdorff metric (Wang et al., HyRSM, CVPR'22).

Follows the last lines of ``CNN_HyRSM_{1,5}shot.forward`` in
github.com/alibaba-mmai-research/HyRSM ``models/base/few_shot.py``: ``F.normalize`` cosine,
``d = 1 - cos``, ``Σ_ts min_tq d + Σ_tq min_ts d`` (sums over frames, not means).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fsarbench import FewShotMethod, MethodOutput
from fsarbench_baselines._similarity import frame_dots
from fsarbench_baselines.common import class_mean, one_hot_weights

__all__ = ["BiMHM", "bimhm_distance"]

NORMALIZE_EPS = 1e-12


def bimhm_distance(query_unit: Tensor, support_unit: Tensor) -> Tensor:
    """Bi-MHM between unit-normalised frame sequences.

    Args:
        query_unit: ``[B, Nq, Tq, D]`` unit frames.
        support_unit: ``[B, S, Ts, D]`` unit frames (support videos or prototypes).

    Returns:
        ``[B, Nq, S]``: ``Σ_ts min_tq d + Σ_tq min_ts d`` with ``d = 1 - cos``.
    """
    cos = frame_dots(query_unit, support_unit)  # [B, Nq, Tq, S, Ts]
    frames = cos.shape[2] + cos.shape[4]  # Σ_ts min_tq (1 - cos) = Ts - Σ_ts max_tq cos, ...
    return frames - (cos.amax(2).sum(-1) + cos.amax(-1).sum(2))


class BiMHM(FewShotMethod):
    """Bi-MHM, the bidirectional mean Hausdorff metric of HyRSM (Wang et al., CVPR'22)."""

    @dataclass
    class Config:
        """Hyper-parameters.

        Attributes:
            prototype: match against class-mean prototypes (as inside HyRSM) instead of
                averaging the distances to every support video (the "Bi-MHM" baseline rows).
        """

        prototype: bool = False

    @property
    def support_means(self) -> bool:
        """With prototypes, the support enters only through class means of raw frames."""
        return self.config.prototype

    def encode(self, features: Tensor) -> Tensor:
        """``[N, T, D]`` -> unit frames ``[N, T, D]`` (raw frames when ``prototype``:
        a prototype is the mean of raw frames, normalised afterwards)."""
        if self.config.prototype:
            return features
        return F.normalize(features, dim=-1, eps=NORMALIZE_EPS)

    def match(self, support, support_labels, query, way, **_) -> MethodOutput:
        """``support [B, Ns, T, D]``, ``query [B, Nq, T, D]`` -> logits ``[B, Nq, way]``."""
        if not self.config.prototype:
            scores = self.pair_logits(query, support)
            return MethodOutput(logits=class_mean(scores, support_labels, way))
        b, ns, t, dim = support.shape
        weights = one_hot_weights(support_labels, way, support.dtype)  # [B, way, Ns]
        protos = torch.bmm(weights, support.reshape(b, ns, t * dim)).view(b, way, t, dim)
        unit = F.normalize(protos, dim=-1, eps=NORMALIZE_EPS)
        q_unit = F.normalize(query, dim=-1, eps=NORMALIZE_EPS)
        return MethodOutput(logits=-bimhm_distance(q_unit, unit))

    def pairwise(self, shot: int) -> bool:
        """Always without prototypes; with them only at 1-shot (the prototype is the video)."""
        return not self.config.prototype or shot == 1

    def pair_logits(self, query: Tensor, support: Tensor) -> Tensor:
        """Minus Bi-MHM of every (query, support) pair: ``[B, Nq, Ns]``."""
        if self.config.prototype:
            query = F.normalize(query, dim=-1, eps=NORMALIZE_EPS)
            support = F.normalize(support, dim=-1, eps=NORMALIZE_EPS)
        return -bimhm_distance(query, support)
