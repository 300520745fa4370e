"""A trainable frame adapter in front of any method (frozen-feature track).

Parameter-free matchers (OTAM, Bi-MHM, ProtoNet) have nothing to learn on frozen features;
matching-based FSAR benchmarks put a ``Linear + LayerNorm`` per frame in front of them. The
adapter is part of the per-video ``encode``, so evaluation still encodes each video once.
"""

from __future__ import annotations

from torch import Tensor, nn

from fsarbench.methods import (
    EpisodeBatch,
    FewShotMethod,
    MethodOutput,
    TrainingStage,
    match_keywords,
)
from fsarbench.state import State

__all__ = ["FrameAdapter", "AdaptedMethod"]


class FrameAdapter(nn.Module):
    """``Linear(D -> D_out)`` then ``LayerNorm(D_out)``, applied to every frame.

    Initialised near identity when ``D_out == D`` (identity weight, zero bias) so training
    starts from the frozen features.
    """

    def __init__(self, in_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = out_dim or in_dim
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        if out_dim == in_dim:
            nn.init.eye_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``[..., T, D]`` -> ``[..., T, D_out]``."""
        return self.norm(self.linear(x))


class AdaptedMethod(FewShotMethod):
    """``method`` applied to adapted frame features; trains the adapter in every stage."""

    def __init__(self, method: FewShotMethod, adapter: nn.Module, in_dim: int) -> None:
        super().__init__(
            feature_dim=in_dim,
            seq_len=method.seq_len,
            num_train_classes=method.num_train_classes,
            config=method.config,
        )
        self.inner = method
        self.adapter = adapter
        self.method_name = getattr(method, "method_name", type(method).__name__)
        self.uses_class_names = method.uses_class_names

    def adapt(self, batch: EpisodeBatch) -> EpisodeBatch:
        return EpisodeBatch(
            self.adapter(batch.support),
            batch.support_labels,
            self.adapter(batch.query),
            batch.query_labels,
            batch.support_classes,
            batch.query_classes,
            batch.way,
            batch.class_names,
        )

    def encode(self, features: Tensor) -> State:
        return self.inner.encode(self.adapter(features))

    def match(self, support, support_labels, query, way, **kw) -> MethodOutput:
        accepted = match_keywords(type(self.inner))
        kw = {k: v for k, v in kw.items() if k in accepted}
        return self.inner.match(support, support_labels, query, way, **kw)

    @property
    def support_means(self) -> bool:
        return self.inner.support_means

    def pairwise(self, shot: int) -> bool:
        return self.inner.pairwise(shot)

    def pair_logits(self, query: State, support: State) -> Tensor:
        return self.inner.pair_logits(query, support)

    def preferred_episode_batch(self, device_type: str, shot: int) -> int | None:
        return self.inner.preferred_episode_batch(device_type, shot)

    def pool_products_bytes(self, n_videos: int, shot: int) -> int | None:
        return self.inner.pool_products_bytes(n_videos, shot)

    def pool_products(self, state: State) -> State:
        return self.inner.pool_products(state)

    def match_pool(self, state, products, support_index, support_labels, query_index, way):
        return self.inner.match_pool(
            state, products, support_index, support_labels, query_index, way
        )

    @property
    def gathers_episodes(self) -> bool:
        return self.inner.gathers_episodes

    def match_indexed(self, state, support_index, support_labels, query_index, way):
        return self.inner.match_indexed(state, support_index, support_labels, query_index, way)

    def training_stages(self) -> list[TrainingStage]:
        return [self._wrap(stage) for stage in self.inner.training_stages()]

    def _wrap(self, stage: TrainingStage) -> TrainingStage:
        def parameters():
            return [*self.adapter.parameters(), *stage.parameters()]

        def loss(batch: EpisodeBatch):
            return stage.loss(self.adapt(batch))

        return TrainingStage(stage.name, parameters, loss, stage.fraction, stage.needs_classes)

    @property
    def hparams(self) -> dict:
        return self.inner.hparams
