"""Under DDP each rank updates BatchNorm running statistics from its own micro-batches; the
model validated, saved and resumed must still be one model: every rank ends with rank 0's
buffers (``bn: train`` on the finetune track trains such statistics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

import fsarbench as fb
from fsarbench.distributed.env import rank
from fsarbench.distributed.launch import spawn_local
from fsarbench.training import Recipe, SplitFeatures, train
from fsarbench_baselines.protonet import ProtoNet


class _BatchNormProtoNet(ProtoNet):
    """ProtoNet over batch-normalised frames: running statistics move with every batch."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.bn = nn.BatchNorm1d(self.feature_dim)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        n, t, d = features.shape
        return self.bn(features.reshape(n * t, d)).reshape(n, t, d).mean(1)


def _worker(out: str) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    classes = np.repeat(np.arange(10), 6)
    feats = torch.randn(10, 1, 1, 16, generator=g)[classes].squeeze(1).expand(-1, 8, -1)
    feats = feats + 3 * torch.randn(len(classes), 8, 16, generator=g)
    data = SplitFeatures(fb.InMemoryFeatureStore(feats.contiguous()), classes)
    torch.manual_seed(0)
    model = _BatchNormProtoNet(feature_dim=16, seq_len=8)
    recipe = Recipe(
        steps=6, episodes_per_step=4, micro_batch=1, val_episodes=0, lr=1e-2, queries=2,
        adapter="none",
    )  # fmt: skip
    train(model, data, None, recipe, progress=False)
    torch.save(dict(model.named_buffers()), Path(out) / f"rank{rank()}.pt")


def test_every_rank_ends_with_the_same_batch_norm_statistics(tmp_path):
    spawn_local(_worker, 2, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert set(r0) >= {"bn.running_mean", "bn.running_var"}
    for name, value in r0.items():
        assert torch.equal(value, r1[name]), name
