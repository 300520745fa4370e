"""ProtoNet / TSN mean baseline against a literal oracle (cosine and squared Euclidean)."""

from __future__ import annotations

import pytest
import torch

import fsarbench as fb
from fsarbench.testing.contract import run_contract
from oracles.otam_bimhm import logits_and_grads, protonet_logits_literal, random_episodes


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-9) -> None:
    scale = b.abs().max().clamp_min(1e-12)
    assert a.shape == b.shape
    assert ((a - b).abs().max() / scale).item() <= rtol, (a - b).abs().max().item()


@pytest.mark.parametrize(
    "metric, temperature", [("cosine", 10.0), ("cosine", 3.0), ("sqeuclidean", 10.0)]
)
@pytest.mark.parametrize(
    "episode",
    [
        dict(way=3, shot=2, queries=2, frames=8, seed=1),
        dict(way=5, shot=1, queries=1, frames=4, seed=2),
        dict(way=2, shot=4, queries=3, frames=6, seed=3),
    ],
)
def test_matches_literal_oracle(metric, temperature, episode) -> None:
    batch = random_episodes(dim=16, **episode)
    method = fb.create_method(
        "protonet",
        feature_dim=16,
        seq_len=episode["frames"],
        metric=metric,
        temperature=temperature,
    ).double()
    fast = logits_and_grads(batch, lambda b: method(b).logits)
    slow = logits_and_grads(batch, lambda b: protonet_logits_literal(b, metric, temperature))
    for a, b in zip(fast, slow):
        _close(a, b)


def test_contract() -> None:
    run_contract("protonet")


def test_unknown_metric_is_rejected() -> None:
    with pytest.raises(fb.ConfigError):
        fb.create_method("protonet", feature_dim=16, seq_len=8, metrc="cosine")


def test_unknown_metric_value_is_rejected() -> None:
    with pytest.raises(fb.ConfigError, match="not one of"):
        fb.create_method("protonet", feature_dim=16, seq_len=8, metric="manhattan")
