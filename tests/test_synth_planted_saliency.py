"""Known answer on videos (slow: generates and extracts ``synth-planted``): after stage 1
alone, SGTM's actionness with ``saliency_rectify="softplus"``, ``saliency_init="off"`` ranks
the frames of the planted action window above the shared background frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.data.datasets import get_dataset
from fsarbench.data.sampling import sample_frames
from fsarbench.experiments.features import FrozenFeatureProvider
from fsarbench.training import frozen_recipe, train
from fsarbench_sgtm.planted import topk_in_window, window_auroc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planted():
    feats = FrozenFeatureProvider(progress=False)("synth-planted")
    dataset = get_dataset("synth-planted")
    frames = {v["video_id"]: v["frames"] for v in dataset.meta()["videos"]}
    windows = dataset.windows("test")
    test = feats.splits["test"].store
    videos = test.get(np.arange(len(test.video_ids))).float()
    protocol = feats.info["protocol"]
    inside = [
        [
            windows[v][0] <= i < windows[v][1]
            for i in sample_frames(
                protocol["test_sampler"],
                frames[v],
                videos.shape[1],
                train=False,
                rng=np.random.default_rng(0),
            )  # fmt: skip
        ]
        for v in test.video_ids
    ]
    return feats, videos, torch.tensor(inside)


@pytest.mark.parametrize("steps", [6, 30, 100])  # 6: synth stage 1 then (8 now)
def test_softplus_off_stage1_finds_the_window_in_videos(planted, steps: int) -> None:
    feats, videos, window = planted
    train_split = feats.splits["train"]
    torch.manual_seed(0)
    m = fb.create_method(
        "sgtm-otam", feature_dim=videos.shape[-1], seq_len=videos.shape[1],
        num_train_classes=train_split.num_classes, saliency_rectify="softplus",
        saliency_init="off",
    )  # fmt: skip
    stages = m.training_stages()
    m.training_stages = lambda: stages[:1]
    overrides = {"adapter": "none", "val_episodes": 0, "steps": steps}
    train(m, train_split, None, frozen_recipe("sgtm-otam", overrides, dataset="synth-planted"),
          seed=0, progress=False)  # fmt: skip
    scores = m.actionness_logits(videos)
    assert window_auroc(scores, window) >= 0.8
    assert topk_in_window(scores, window, 2) >= 0.75  # chance: the window's ~40 %
