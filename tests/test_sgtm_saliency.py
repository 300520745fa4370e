"""Φ_cls options (issue #16): pooling, loss, rectification, init; masks rank by Σ_c A; eq. 5's
two readings. Known answers against slow, obviously-correct loops."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import fsarbench as fb
from fsarbench_sgtm.config import MEAN_CE_STAGE1, SGTMConfig
from fsarbench_sgtm.masks import MASK_STRATEGIES
from fsarbench_sgtm.model import token_error
from fsarbench_sgtm.saliency import SaliencyClassifier, saliency_loss, topk_frames


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def phi(**kw) -> SaliencyClassifier:
    torch.manual_seed(0)
    return SaliencyClassifier(16, 5, hidden=8, dropout=0.0, **kw).double()


@pytest.mark.parametrize(
    "t, ratio, k", [(8, 0.125, 1), (8, 0.25, 2), (16, 0.125, 2), (5, 0.125, 1), (8, 1.0, 8)]
)
def test_topk_frames(t: int, ratio: float, k: int) -> None:
    assert topk_frames(t, ratio) == k


def test_topk_ratio_out_of_range() -> None:
    with pytest.raises(ValueError, match="saliency_topk_ratio"):
        topk_frames(8, 0.0)


@pytest.mark.parametrize("ratio", [0.125, 0.25, 0.5])
def test_topk_pool_matches_a_loop(ratio: float) -> None:
    m = phi(pool="topk", topk_ratio=ratio, rectify="none")
    x = torch.randn(3, 8, 16, dtype=torch.float64)
    a = m(x)
    k = topk_frames(8, ratio)
    want = torch.tensor(
        [[sorted(a[n, :, c].tolist(), reverse=True)[:k] for c in range(5)] for n in range(3)],
        dtype=torch.float64,
    ).mean(-1)
    assert torch.allclose(m.video_logits(x), want)
    assert torch.allclose(phi(pool="mean", rectify="none").video_logits(x), a.mean(1))


def test_rectified_scores_are_the_relu_of_the_signed_ones() -> None:
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    signed, relu = phi(rectify="none")(x), phi(rectify="relu")(x)
    assert (signed < 0).any()
    assert torch.equal(relu, signed.clamp_min(0))
    assert torch.equal(phi(rectify="relu").actionness_logits(x), relu.sum(-1))


def test_zero_sum_init_starts_class_sum_at_zero() -> None:
    x = torch.randn(2, 8, 16, dtype=torch.float64)
    centred = phi(rectify="none", init="zero_sum").actionness_logits(x)
    assert torch.allclose(centred, torch.zeros_like(centred), atol=1e-5)  # float32 init
    plain = phi(rectify="none", init="default").actionness_logits(x)
    assert plain.abs().max() > 1e-3


def test_replicate_padding_sees_edge_frames_not_zeros() -> None:
    """A constant video gives every frame the same scores with replicate padding only."""
    x = torch.randn(1, 1, 16, dtype=torch.float64).expand(1, 8, 16)
    rep = phi(padding="replicate", rectify="none")(x)
    assert torch.allclose(rep, rep[:, :1].expand_as(rep))
    zeros = phi(padding="zeros", rectify="none")(x)
    assert not torch.allclose(zeros[:, 0], zeros[:, 4])


def test_bce_matches_a_loop() -> None:
    logits = torch.randn(4, 5, dtype=torch.float64)
    classes = torch.tensor([0, 3, 3, 1])
    want = 0.0
    for n in range(4):
        for c in range(5):
            p = 1 / (1 + math.exp(-float(logits[n, c])))
            want -= math.log(p) if c == classes[n] else math.log(1 - p)
    assert saliency_loss(logits, classes, "bce").item() == pytest.approx(want / 20)
    assert torch.equal(saliency_loss(logits, classes, "ce"), F.cross_entropy(logits, classes))


def class_sum_grad(pool: str) -> torch.Tensor:
    """Gradient of stage 1's CE on the class-sum direction of Φ_cls's last layer: ``[H, K]``."""
    m = phi(pool=pool, rectify="none")
    x = torch.randn(6, 8, 16, dtype=torch.float64)
    saliency_loss(m.video_logits(x), torch.tensor([0, 1, 2, 3, 4, 0]), "ce").backward()
    return m.net[-1].weight.grad.sum(0)


def test_mean_pooled_softmax_ce_leaves_class_sum_untrained() -> None:
    """The issue's diagnosis: softmax CE on time-averaged A gives Σ_c A no gradient at all;
    top-k pooling does give it one."""
    assert class_sum_grad("mean").abs().max() < 1e-12
    assert class_sum_grad("topk").abs().max() > 1e-4


def small_sgtm(**hp) -> fb.FewShotMethod:
    torch.manual_seed(0)
    return fb.create_method(
        "sgtm-otam", feature_dim=64, seq_len=8, num_train_classes=7, token_dim=16, num_heads=2,
        saliency_hidden=16, **hp,
    ).double()  # fmt: skip


def test_masks_rank_by_pre_sigmoid_score_without_saturation_ties() -> None:
    """Large Σ_c A: sigmoid saturates to exactly 1.0 in float32 and ties; Σ_c A still orders
    the frames, and the mask follows it (not the stable sort among the ties)."""
    m = small_sgtm(mask="top", k=1).float()
    with torch.no_grad():
        m.saliency.net[-1].weight.mul_(1e3)
    videos = torch.randn(6, 8, 64)
    logits, act = m.actionness_logits(videos), m.actionness(videos)
    top2 = logits.topk(2, dim=1).indices
    want = torch.zeros_like(logits, dtype=torch.bool).scatter(1, top2, True)
    assert all(len(set(row.tolist())) == 8 for row in logits)
    by_sigmoid = MASK_STRATEGIES["top"].fn(act, 2)
    assert not torch.equal(by_sigmoid, want)  # ties do change the mask here
    assert torch.equal(m.frame_mask(videos), want)


def test_l2_reconstruction_loss_is_eq5_as_written() -> None:
    m = small_sgtm(recon_loss="l2").train()
    videos = torch.rand(3, 8, 64, dtype=torch.float64)
    torch.manual_seed(1)
    recon, _ = m.reconstruct(videos, m.frame_mask(videos))
    target = videos.reshape(3, 32, 16)  # tokens, frame-major
    norms = [math.sqrt(sum((recon[n, i] - target[n, i]).pow(2).tolist())) for n in range(3)
             for i in range(32)]  # fmt: skip
    assert m.reconstruction_loss(videos).item() == pytest.approx(sum(norms) / len(norms))
    mse = token_error(recon, target, "mse")
    assert torch.allclose(mse, (recon - target).pow(2).mean(-1))
    assert "recon_loss" in m.hparams and m.hparams["recon_loss"] == "l2"
    assert small_sgtm().hparams["recon_loss"] == "mse"


def test_mean_ce_variant_is_todays_stage1() -> None:
    m = fb.create_method("sgtm-otam-meance", feature_dim=64, seq_len=8, num_train_classes=7,
                         token_dim=16, num_heads=2)  # fmt: skip
    assert {k: m.hparams[k] for k in MEAN_CE_STAGE1} == MEAN_CE_STAGE1
    assert m.saliency.pool == "mean" and m.saliency.rectify == "none"


STAGE1_FIELDS = (
    "saliency_pool",
    "saliency_topk_ratio",
    "saliency_loss",
    "saliency_rectify",
    "saliency_init",
    "saliency_padding",
    "recon_loss",
)


@pytest.mark.parametrize("name", STAGE1_FIELDS)
def test_readme_lists_every_unstated_stage1_choice_with_its_default(name: str) -> None:
    readme = (Path(__file__).parents[1] / "docs" / "methods.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith(f"| `{name}` |")]
    assert len(rows) == 1, name
    value = getattr(SGTMConfig(), name)
    shown = f'**`"{value}"`**' if isinstance(value, str) else f"**`{value}`**"
    assert shown in rows[0], (name, shown)
    assert name in (SGTMConfig.__doc__ or "")
