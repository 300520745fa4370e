"""SGTM says so when its saliency is flat (issue #16): a Φ_cls whose rectified evidence is dead
everywhere gives every frame one actionness, and its "saliency" masks are then frame order."""

from __future__ import annotations

import logging

import torch

import fsarbench as fb
from fsarbench_sgtm.saliency import OFF_BIAS, SaliencyClassifier

T, D, C = 8, 16, 5


def _sgtm(**hparams) -> fb.FewShotMethod:
    torch.manual_seed(0)
    m = fb.create_method(
        "sgtm-otam", feature_dim=D, seq_len=T, num_train_classes=C, token_dim=8, num_heads=2,
        **hparams,
    )  # fmt: skip
    return m.eval()


def test_dead_relu_evidence_is_reported_once(caplog) -> None:
    m = _sgtm()
    with torch.no_grad():
        m.saliency.net[-1].bias.fill_(-1e3)  # every max(A, 0) is 0
    videos = torch.randn(6, T, D)
    with caplog.at_level(logging.WARNING, logger="fsarbench_sgtm.model"):
        m.frame_mask(videos)
        m.frame_mask(videos)
    warnings = [r for r in caplog.records if "same actionness" in r.getMessage()]
    assert len(warnings) == 1
    assert "100%" in warnings[0].getMessage() and "saliency_init=off" in warnings[0].getMessage()


def test_healthy_saliency_says_nothing(caplog) -> None:
    m = _sgtm(saliency_rectify="softplus", saliency_init="off")
    with caplog.at_level(logging.WARNING, logger="fsarbench_sgtm.model"):
        m.frame_mask(torch.randn(6, T, D))
    assert not [r for r in caplog.records if "same actionness" in r.getMessage()]


def test_off_init_starts_every_class_near_zero_evidence() -> None:
    torch.manual_seed(0)
    phi = SaliencyClassifier(D, C, rectify="softplus", init="off", dropout=0.0)
    with torch.no_grad():
        a = phi(torch.randn(4, T, D))
    last = phi.net[-1]
    assert torch.allclose(last.bias, torch.full((C,), OFF_BIAS))
    assert torch.allclose(last.weight.sum(0), torch.zeros_like(last.weight[0]), atol=1e-6)
    assert float(a.min()) > 0  # softplus: positive, never a dead unit
    assert float(a.mean()) < 0.1  # softplus(-4) ≈ 0.018 plus a centred perturbation
