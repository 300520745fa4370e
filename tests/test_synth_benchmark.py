"""The embedded benchmark makes its point through the whole frozen-track pipeline: on the
temporal-order classes of `synth` (pairs with the same atomic actions in opposite order) the
order-aware matchers OTAM and TRX beat order-agnostic ProtoNet by more than their CIs.

A smaller run than `make run` (about 80 s on 2 cores): 8 videos per class, one view, short
training, 1,000 episodes. Measured margins are wide (OTAM ~96%, TRX ~95%, ProtoNet ~60%).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.data.synth import SynthConfig, SynthDataset
from fsarbench.experiments.features import split_features
from fsarbench.features.backbones import create_backbone
from fsarbench.features.extract import SplitExtractConfig, clip_dataset, extract_features
from fsarbench.features.store import SubsetFeatureStore
from fsarbench.training import AdaptedMethod, FrameAdapter, Recipe, train

RECIPE = Recipe(steps=30, episodes_per_step=4, queries=2, val_every=15, val_episodes=100, lr=1e-3)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    ds = SynthDataset(root=root, config=SynthConfig(videos_per_class=8))
    backbone = create_backbone("resnet18", weights="none", seed=0)
    splits = {}
    for split in ("train", "val", "test"):
        videos = ds.videos(split)
        config = SplitExtractConfig(
            backbone="resnet18", weights="none", resolution=64, progress=False
        ).resolved(split)
        cache, _ = extract_features(
            clip_dataset(videos, config),
            backbone,
            cache_dir=root / "features" / split,
            num_frames=8,
            video_ids=[v.video_id for v in videos],
            classes=[v.class_name for v in videos],
            class_indices=[v.class_index for v in videos],
            batch_size=16,
            num_workers=2,
            progress=False,
        )
        splits[split] = split_features(cache, ds.variant)[0]
    return ds, splits


def _temporal_manifest(ds, test):
    info = ds.class_info("test")
    names = ds.class_names("test")
    temporal = [names.index(n) for n, c in info.items() if c["category"] == "temporal"]
    keep = np.flatnonzero(np.isin(test.classes, temporal))
    store = SubsetFeatureStore(test.store, keep)
    manifest = fb.make_manifest(
        test.classes[keep],
        way=len(temporal) if len(temporal) < 5 else 5,
        shot=1,
        episodes=1000,
        seed=0,
        dataset="synth-small",
        split="test-temporal",
    )
    return store, manifest


def test_order_aware_matchers_beat_protonet_on_temporal_classes(synth):
    ds, splits = synth
    t, d = splits["test"].store.feature_shape
    store, manifest = _temporal_manifest(ds, splits["test"])
    results = {}
    for name in ("protonet", "otam", "trx"):
        torch.manual_seed(0)
        method = fb.create_method(
            name, feature_dim=d, seq_len=t, num_train_classes=splits["train"].num_classes
        )
        method = AdaptedMethod(method, FrameAdapter(d), d)
        train(method, splits["train"], splits["val"], RECIPE, progress=False)
        results[name] = fb.evaluate(method, store, manifest, progress=False)
    proto = results["protonet"]
    for name in ("otam", "trx"):
        r = results[name]
        assert r.accuracy - r.ci95 > proto.accuracy + proto.ci95, (name, str(r), str(proto))
    assert all(r.accuracy > 20 + 2 * r.ci95 for r in results.values())  # above chance
