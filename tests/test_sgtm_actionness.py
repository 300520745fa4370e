"""Known answer for actionness (issue #16): after stage 1 alone, sigmoid(Σ_c A) finds a planted
action window among shared background frames, in every seed."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import fsarbench as fb
from fsarbench.training import AdaptedMethod, FrameAdapter, SplitFeatures, frozen_recipe, train
from fsarbench.training.trainer import stage_steps
from fsarbench_sgtm.config import MEAN_CE_STAGE1
from fsarbench_sgtm.masks import MASK_STRATEGIES
from fsarbench_sgtm.planted import planted_window_videos, topk_in_window, window_auroc

T, D, C, PER_CLASS = 8, 64, 10, 16
SMALL_HP = dict(token_dim=16, num_heads=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one intra-op thread avoids oversubscription on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_stage1(seed: int, *, adapter: bool = False, **hparams: Any) -> fb.FewShotMethod:
    """SGTM after stage 1 alone on planted-window features, with the frozen-track recipe of
    ``sgtm-otam`` (its optimiser, lr, weight decay, schedule, episodes) for stage 1's share of
    its steps; by default no adapter (Φ_cls sees the features themselves), else the SGTM head
    wrapped in the recipe's ``linear_ln`` adapter (``m.inner``; ``m.adapter``)."""
    torch.manual_seed(seed)
    m = fb.create_method(
        "sgtm-otam", feature_dim=D, seq_len=T, num_train_classes=C, **{**SMALL_HP, **hparams}
    )
    if adapter:
        m = AdaptedMethod(m, FrameAdapter(D), D)
    recipe = frozen_recipe("sgtm-otam", {"adapter": "none", "val_episodes": 0})
    assert recipe.weight_decay > 0
    stages = m.training_stages()
    assert stages[0].name == "saliency"
    n1 = stage_steps(stages, recipe.steps)[0]
    labels = torch.arange(C).repeat_interleave(PER_CLASS)
    data = planted_window_videos(labels, num_classes=C, seq_len=T, dim=D, seed=seed)
    split = SplitFeatures(fb.InMemoryFeatureStore(data.videos), labels.numpy())
    m.training_stages = lambda: stages[:1]
    train(m, split, None, recipe.__class__(**{**recipe.to_dict(), "steps": n1}), seed=seed,
          progress=False)  # fmt: skip
    return m


def held_out(seed: int):
    """Fresh planted-window videos of the same classes (another noise / window draw)."""
    labels = torch.arange(C).repeat(8)
    return planted_window_videos(labels, num_classes=C, seq_len=T, dim=D, seed=1000 + seed)


@pytest.mark.parametrize("seed", range(5))
def test_default_actionness_finds_the_planted_window(seed: int) -> None:
    m = train_stage1(seed)
    data = held_out(seed)
    scores = m.actionness(data.videos)
    assert window_auroc(scores, data.window) >= 0.9
    # the k = 2 frames SGTM masks as "salient" lie in the 3-frame window (chance: 3/8)
    assert topk_in_window(scores, data.window, 2) >= 0.85


def test_mean_ce_stage1_does_not_find_the_window() -> None:
    """Today's stage 1 (``sgtm-otam-meance``): Σ_c A is untrained and, here, inverted."""
    for seed in range(2):
        m = train_stage1(seed, **MEAN_CE_STAGE1)
        data = held_out(seed)
        assert window_auroc(m.actionness(data.videos), data.window) < 0.5


def test_masks_on_planted_windows_mean_what_they_say() -> None:
    """After stage 1: "top" masks the action, "bottom" the background, "saliency" both ends."""
    m = train_stage1(0)
    data = held_out(0)
    logits = m.actionness_logits(data.videos)
    win = data.window

    def in_window(mask: torch.Tensor) -> float:
        return float(win[mask].float().mean())

    assert in_window(MASK_STRATEGIES["top"].fn(logits, 3)) >= 0.85
    assert in_window(MASK_STRATEGIES["bottom"].fn(logits, 3)) <= 0.05
    assert in_window(MASK_STRATEGIES["middle"].fn(logits, 2)) < in_window(
        MASK_STRATEGIES["top"].fn(logits, 2)
    )
    both = m.frame_mask(data.videos)  # the method: 2 highest + 2 lowest of T = 8
    assert torch.equal(both, MASK_STRATEGIES["saliency"].fn(logits, 4))
    order = logits.argsort(1, descending=True)
    assert float(win.gather(1, order[:, :2]).float().mean()) >= 0.85
    assert float(win.gather(1, order[:, -2:]).float().mean()) <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_actionness_behind_the_linear_ln_adapter(seed: int) -> None:
    """The frozen track's adapter layer-normalises frames before Φ_cls (measured 0.87-0.95)."""
    m = train_stage1(seed, adapter=True)
    data = held_out(seed)
    with torch.no_grad():
        scores = m.inner.actionness_logits(m.adapter(data.videos))
    assert window_auroc(scores, data.window) >= 0.85
