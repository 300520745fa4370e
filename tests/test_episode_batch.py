"""Per-head episode batch defaults: the evaluator takes a head's measured best batch when
its caller gives none, and the numbers are the same as with one episode per batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.evaluate import DEFAULT_BATCH_EPISODES, wanted_batch


def _pool(n_classes: int = 8, per_class: int = 6, t: int = 8, d: int = 32):
    g = torch.Generator().manual_seed(0)
    classes = np.repeat(np.arange(n_classes), per_class)
    centres = torch.rand(n_classes, 1, d, generator=g)
    feats = centres[torch.as_tensor(classes)] + 0.3 * torch.rand(len(classes), t, d, generator=g)
    return feats, classes


@pytest.mark.parametrize("head", ["otam", "bimhm", "protonet"])
@pytest.mark.parametrize("shot", [1, 3])
def test_default_batch_gives_the_same_numbers_as_batch_one(head, shot) -> None:
    feats, classes = _pool()
    manifest = fb.make_manifest(classes, way=5, shot=shot, queries=1, episodes=40, seed=1)
    method = fb.create_method(head, feature_dim=32, seq_len=8)
    chosen = fb.evaluate(method, feats, manifest, progress=False)
    one = fb.evaluate(method, feats, manifest, progress=False, batch_episodes=1)
    assert one.extra["batch_episodes"] == 1
    expect = method.preferred_episode_batch("cpu", shot) or DEFAULT_BATCH_EPISODES
    assert chosen.extra["batch_episodes"] == min(expect, 40)
    for key in ("predicted_label", "correct"):
        np.testing.assert_array_equal(chosen.records[key], one.records[key])
    assert chosen.accuracy == one.accuracy and chosen.ci95 == one.ci95


def test_hint_lookup_by_device_and_shot() -> None:
    class Hinted(type(fb.create_method("protonet", feature_dim=4, seq_len=2))):
        episode_batch = {"cpu": {1: 48, 5: 12}}

    method = Hinted(feature_dim=4, seq_len=2)
    assert [method.preferred_episode_batch("cpu", s) for s in (1, 3, 5, 10)] == [48, 48, 12, 12]
    assert method.preferred_episode_batch("cuda", 1) is None
    manifest = fb.make_manifest(np.repeat(np.arange(6), 7), way=5, shot=5, episodes=3)
    assert wanted_batch(method, torch.device("cpu"), manifest, None) == 12
    assert wanted_batch(method, torch.device("cuda"), manifest, None) == DEFAULT_BATCH_EPISODES
    assert wanted_batch(method, torch.device("cpu"), manifest, 7) == 7  # the caller's wins
    with pytest.raises(ValueError, match="batch_episodes must be >= 1"):
        wanted_batch(method, torch.device("cpu"), manifest, 0)
