"""ProtoNet / TSN mean baseline: mean-pooled frames, distance to class means."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fsarbench import FewShotMethod, MethodOutput
from fsarbench.autocast import float32_region, upcast
from fsarbench_baselines.common import one_hot_weights


class ProtoNet(FewShotMethod):
    """Prototypical network over temporally mean-pooled frame features (Snell et al., 2017;
    the TSN-style baseline of few-shot action recognition)."""

    #: fastest episodes per batch in ``make bench`` (2 CPU threads, T=8, D=2048)
    episode_batch = {"cpu": {1: 64, 5: 32}}

    support_means = True

    @dataclass
    class Config:
        """Hyper-parameters.

        Attributes:
            metric: ``"cosine"`` (cosine similarity to the class mean, scaled by
                ``temperature``) or ``"sqeuclidean"`` (negative squared L2, Snell et al.).
            temperature: logit scale for the cosine metric.
        """

        metric: Literal["cosine", "sqeuclidean"] = "cosine"
        temperature: float = 10.0

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if not self.config.temperature > 0:  # 0 ties every logit; < 0 ranks classes backwards
            raise ValueError(f"ProtoNet temperature must be > 0, got {self.config.temperature}")

    def encode(self, features: Tensor) -> Tensor:
        """``[N, T, D]`` -> ``[N, D]`` temporal mean."""
        return features.mean(1)

    def match(self, support, support_labels, query, way, **_) -> MethodOutput:
        """``support [B, Ns, D]``, ``query [B, Nq, D]`` -> logits ``[B, Nq, way]`` (float32
        for half-precision inputs, outside autocast: bf16 logits tie)."""
        support, query = upcast(support), upcast(query)
        with float32_region(query.device):
            protos = torch.bmm(one_hot_weights(support_labels, way, support.dtype), support)
            if self.config.metric == "cosine":
                q = F.normalize(query, dim=-1)
                p = F.normalize(protos, dim=-1)
                logits = self.config.temperature * torch.bmm(q, p.transpose(1, 2))
            else:
                logits = -torch.cdist(query, protos).pow(2)
        return MethodOutput(logits=logits)

    def pairwise(self, shot: int) -> bool:
        """At 1-shot, where each class mean is one video."""
        return shot == 1

    def pair_logits(self, query: Tensor, support: Tensor) -> Tensor:
        """``[B, Nq, D]``, ``[B, Ns, D]`` -> ``[B, Nq, Ns]``: the logit of each support video
        taken as its own prototype."""
        query, support = upcast(query), upcast(support)
        with float32_region(query.device):
            if self.config.metric == "cosine":
                q, s = F.normalize(query, dim=-1), F.normalize(support, dim=-1)
                return self.config.temperature * torch.bmm(q, s.transpose(1, 2))
            return -torch.cdist(query, support).pow(2)
