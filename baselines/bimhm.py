"""Bi-MHM: the bidirectional mean Hausdorff metric (Wang et al., HyRSM, CVPR'22).

Follows the last lines of ``CNN_HyRSM_{1,5}shot.forward`` in
github.com/alibaba-mmai-research/HyRSM ``models/base/few_shot.py``: ``F.normalize`` cosine,
``d = 1 - cos``, ``Σ_ts min_tq d + Σ_tq min_ts d`` (sums over frames, not means).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fsarbench import FewShotMethod, MethodOutput
from fsarbench.state import state_gather
from fsarbench_baselines._similarity import frame_dots, indexed_frame_dots
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
    return _distance_from_cosines(frame_dots(query_unit, support_unit))


def _distance_from_cosines(cos: Tensor) -> Tensor:
    """``[B, Nq, Tq, S, Ts]`` cosines -> ``[B, Nq, S]`` Bi-MHM.

    ``Σ_ts min_tq (1 - cos) = Ts - Σ_ts max_tq cos``, and the same the other way round.
    """
    frames = cos.shape[2] + cos.shape[4]
    return frames - (cos.amax(2).sum(-1) + cos.amax(-1).sum(2))


def _with_inverse_norms(frames: Tensor) -> dict[str, Tensor]:
    """``[..., T, D]`` -> ``{"frames": the frames, "inv_norm": [..., T]}`` with
    ``1 / max(|x|, 1e-12)``: ``F.normalize``'s scale, applied to the cosines later instead of
    writing a normalised copy of every frame."""
    # 1e-12 is 0 in fp16 (its smallest normal is 6e-5): a zero frame's reciprocal would be inf
    eps = max(NORMALIZE_EPS, torch.finfo(frames.dtype).tiny)
    norm = torch.linalg.vector_norm(frames, dim=-1).clamp_min(eps)
    return {"frames": frames, "inv_norm": norm.reciprocal()}


def _state_cosines(query: dict[str, Tensor], support: dict[str, Tensor]) -> Tensor:
    """Cosines ``[B, Nq, Tq, S, Ts]`` of frames stored with their inverse norms.

    In half precision (half frames, or an autocast GEMM) raw dot products overflow once
    ``|x||y|`` passes 65504, so the query frames are made unit first there."""
    q_frames, q_inv = query["frames"], query["inv_norm"]
    if q_frames.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(
        q_frames.device.type
    ):
        q_frames = q_frames * q_inv.unsqueeze(-1)
        return frame_dots(q_frames, support["frames"]) * support["inv_norm"][:, None, None]
    dots = frame_dots(q_frames, support["frames"])
    q_scale, s_scale = q_inv[:, :, :, None, None], support["inv_norm"][:, None, None]
    if dots.requires_grad:
        return dots * q_scale * s_scale
    return dots.mul_(q_scale).mul_(s_scale)  # inference: in place, the same products


class BiMHM(FewShotMethod):
    """Bi-MHM, the bidirectional mean Hausdorff metric of HyRSM (Wang et al., CVPR'22)."""

    #: fastest episodes per batch in ``make bench`` (2 CPU threads, T=8, D=2048)
    episode_batch = {"cpu": {1: 64, 5: 64}}

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

    def encode(self, features: Tensor) -> Tensor | dict[str, Tensor]:
        """``[N, T, D]`` -> ``{"frames": [N, T, D], "inv_norm": [N, T]}`` (the frames as
        given and ``F.normalize``'s inverse scale); raw frames when ``prototype`` (a prototype
        is the mean of raw frames, normalised afterwards)."""
        if self.config.prototype:
            return features
        return _with_inverse_norms(features)

    def match(self, support, support_labels, query, way, **_) -> MethodOutput:
        """Encoded ``support [B, Ns, ...]``, ``query [B, Nq, ...]`` -> logits ``[B, Nq, way]``."""
        if not self.config.prototype:
            scores = self.pair_logits(query, support)
            return MethodOutput(logits=class_mean(scores, support_labels, way))
        b, ns, t, dim = support.shape
        weights = one_hot_weights(support_labels, way, support.dtype)  # [B, way, Ns]
        protos = torch.bmm(weights, support.reshape(b, ns, t * dim)).view(b, way, t, dim)
        cos = _state_cosines(_with_inverse_norms(query), _with_inverse_norms(protos))
        return MethodOutput(logits=-_distance_from_cosines(cos))

    @property
    def gathers_episodes(self) -> bool:
        """Without prototypes, episodes are matched from pool positions (:meth:`match_indexed`)."""
        return not self.config.prototype

    def match_indexed(self, state, support_index, support_labels, query_index, way):
        """:meth:`match` of episodes given as pool positions: the frame products are made a
        few episodes at a time while their gathered frames are in cache
        (:func:`indexed_frame_dots`), then scaled in place as in :func:`_state_cosines`;
        bit-identical logits. With gradients, half precision or autocast, the episodes are
        gathered and matched."""
        frames, inv = state["frames"], state["inv_norm"]
        half = frames.dtype in (torch.float16, torch.bfloat16)
        if half or torch.is_autocast_enabled(frames.device.type) or frames.requires_grad:
            support, query = state_gather(state, support_index), state_gather(state, query_index)
            return self.match(support, support_labels, query, way)
        dots = indexed_frame_dots(frames, query_index, support_index)
        cos = dots.mul_(inv[query_index][:, :, :, None, None]).mul_(
            inv[support_index][:, None, None]
        )
        scores = -_distance_from_cosines(cos)
        return MethodOutput(logits=class_mean(scores, support_labels, way))

    def pairwise(self, shot: int) -> bool:
        """Always without prototypes; with them only at 1-shot (the prototype is the video)."""
        return not self.config.prototype or shot == 1

    def pair_logits(self, query: Tensor, support: Tensor) -> Tensor:
        """Minus Bi-MHM of every (query, support) pair: ``[B, Nq, Ns]``."""
        if self.config.prototype:
            query, support = _with_inverse_norms(query), _with_inverse_norms(support)
        return -_distance_from_cosines(_state_cosines(query, support))
