"""Heads under autocast (bf16 here on the CPU, as on a GPU): autocast may run the big matrix
products in half precision, but the logits come out float32 and untied, close to the
float32 head's. bf16 keeps 8 bits: class means or alignment costs computed in it tie, and
``argmax`` then picks the lower label for no reason (fsarbench.autocast)."""

from __future__ import annotations

import pytest
import torch

import fsarbench as fb
from fsarbench.testing.contract import make_contract_method, random_batch

METHODS = fb.list_methods()


def _logits(method, batch, autocast: bool) -> torch.Tensor:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return method(batch).logits


@pytest.mark.parametrize("shot", [1, 3])
@pytest.mark.parametrize("name", METHODS)
def test_autocast_logits_are_float32_untied_and_close(name, shot):
    method = make_contract_method(name, dtype=torch.float32).eval()
    batch = random_batch(
        batch=8, shot=shot, queries=3, dtype=torch.float32, names=method.uses_class_names
    )
    exact = _logits(method, batch, autocast=False)
    half = _logits(method, batch, autocast=True)
    assert half.dtype == torch.float32, f"{name} returns {half.dtype} logits under autocast"
    top2 = half.topk(2, dim=-1).values
    ties = (top2[..., 0] == top2[..., 1]).float().mean().item()
    assert ties == 0.0, f"{name}: {ties:.0%} of queries have tied top logits under autocast"
    agree = (half.argmax(-1) == exact.argmax(-1)).float().mean().item()
    assert agree >= 0.85, f"{name}: argmax agrees with float32 for {agree:.0%} of queries"


def test_class_mean_leaves_autocast_and_half_values_in_float32():
    from fsarbench.pairs import class_mean

    values = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 0]])
    expect = class_mean(values, labels, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = class_mean(values, labels, 2)
    assert got.dtype == torch.float32 and torch.equal(got, expect)
    half = class_mean(values.bfloat16(), labels, 2)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, class_mean(values.bfloat16().float(), labels, 2))


@pytest.mark.parametrize("hparams", [{}, {"decoder_dim": 24}])
@pytest.mark.parametrize("name", [m for m in METHODS if m.startswith("sgtm") or m == "trx"])
def test_training_stages_run_under_autocast(name, hparams):
    """Every training stage's loss is finite and back-propagates under bf16 autocast (the
    finetune track's AMP); SGTM's decoder with its own width scattered half tokens into a
    float32 mask-token grid and stopped with a dtype error."""
    if name == "trx" and hparams:
        pytest.skip("decoder_dim is SGTM's")
    plain = fb.create_method(name, feature_dim=64, seq_len=8, num_train_classes=7)
    if hparams and not plain.reconstructs:
        pytest.skip("no decoder: SGTM refuses a decoder_dim it would not use")
    torch.manual_seed(0)
    method = fb.create_method(name, feature_dim=64, seq_len=8, num_train_classes=7, **hparams)
    method.train()
    batch = random_batch(batch=2, shot=1, queries=2, dtype=torch.float32)
    for stage in method.training_stages():
        method.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            total = sum(v.float() for v in stage.loss(batch).values())
        assert torch.isfinite(total), f"stage {stage.name}: loss {total}"
        total.backward()


@pytest.mark.parametrize("name", ["bimhm", "protonet", "otam", "hyrsm"])
def test_heads_cast_to_fp16_keep_zero_frames_finite(name):
    """A head cast to fp16 (``method.half()``): epsilons of 1e-12 are 0 in fp16, and a zero
    frame's inverse norm became inf, its cosines NaN."""
    method = make_contract_method(name, dtype=torch.float16).eval()
    batch = random_batch(batch=2, shot=1, queries=1, dtype=torch.float16)
    batch.query[:, 0] = 0.0  # one all-zero query video per episode
    logits = _logits(method, batch, autocast=False)
    assert torch.isfinite(logits).all(), f"{name}: {logits}"


def test_evaluation_records_what_it_autocast_to():
    """``--amp`` does nothing on the CPU, and the result says so; on CUDA it names the dtype."""
    import numpy as np

    from fsarbench.evaluate import autocast_name

    assert autocast_name(torch.device("cpu"), True) == "off"
    assert autocast_name(torch.device("cuda"), False) == "off"
    pool = np.repeat(np.arange(6), 4)
    manifest = fb.make_manifest(pool, way=3, shot=1, episodes=10, seed=0)
    method = fb.create_method("protonet", feature_dim=8, seq_len=2)
    feats = torch.rand(len(pool), 2, 8, generator=torch.Generator().manual_seed(0))
    result = fb.evaluate(method, feats, manifest, autocast=True, progress=False)
    assert result.extra["autocast"] == "off"


def test_hyrsm_under_fp16_autocast_keeps_large_features_finite():
    """fp16 autocast (GPUs without bf16): HyRSM's raw frame products (Bi-MHM) and its set
    attention's q·k reach far past fp16's 65504 for frames of norm ~200; both now run in
    float32, and the logits are finite and close to float32's."""
    import dataclasses

    torch.manual_seed(0)
    method = fb.create_method("hyrsm", feature_dim=512, seq_len=8).eval()
    g = torch.Generator().manual_seed(0)
    batch = random_batch(batch=2, shot=1, queries=1, dtype=torch.float32)
    support, query = (16.0 * torch.rand(2, 5, 8, 512, generator=g) for _ in range(2))
    batch = dataclasses.replace(batch, support=support, query=query)
    assert support.norm(dim=-1).mean() > 150
    exact = _logits(method, batch, autocast=False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        half = method(batch).logits
    assert torch.isfinite(half).all()
    assert (half.argmax(-1) == exact.argmax(-1)).float().mean() >= 0.8
