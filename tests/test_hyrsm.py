"""HyRSM head: fast split encode/match vs. the literal HEADS.md oracle."""

from __future__ import annotations

import math

import pytest
import torch

import fsarbench as fb
from fsarbench.testing.contract import run_contract
from fsarbench_baselines._official import OfficialCheckpointError
from fsarbench_baselines.hyrsm import hyrsm_positional_table
from oracles.trx_hyrsm import (
    OracleHyRSM,
    assert_rel_close,
    hyrsm_table,
    random_episodes,
)

D, T, C = 32, 6, 11
NO_DROPOUT = dict(pe_dropout=0.0, intra_dropout=0.0, inter_attn_dropout=0.0, inter_dropout=0.0)


def _pair(seed: int = 0, classes: int | None = C, **hp):
    """An oracle with random weights and the fast head loaded from its state dict."""
    torch.manual_seed(seed)
    a, b = hp.get("position_a", 10.0), hp.get("position_b", 1.0)
    oracle = OracleHyRSM(D, C, a=a, b=b).double().eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for ln in (oracle.temporal_atte_before.norm, oracle.temporal_atte.layer_norm):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.5, 0.5)
    fast = fb.create_method("hyrsm", feature_dim=D, seq_len=T, num_train_classes=classes, **hp)
    fast = fast.double().eval()
    fast.load_official_state_dict(oracle.state_dict())
    return oracle, fast


def _episodes(shot: int, seed: int = 0, batch: int = 2):
    support, labels, query = random_episodes(batch, 5, shot, 1, T, D, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    episode_classes = torch.stack([torch.randperm(C, generator=g)[:5] for _ in range(batch)])
    s_cls = episode_classes.gather(1, labels)
    q_cls = episode_classes.gather(1, torch.arange(5).expand(batch, 5))
    return support, labels, query, s_cls, q_cls


@pytest.mark.parametrize("shot", [1, 5])
def test_logits_and_gradients_match_oracle(shot):
    oracle, fast = _pair()
    support, labels, query, _, _ = _episodes(shot, seed=shot)
    weight = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    results = {}
    for name, model in (("fast", fast), ("oracle", oracle)):
        s, q = support.clone().requires_grad_(), query.clone().requires_grad_()
        if name == "fast":
            logits = model(fb.EpisodeBatch(s, labels, q, way=5)).logits
        else:
            logits = torch.stack([model(s[i], labels[i], q[i], 5)[0] for i in range(2)])
        (logits * weight).sum().backward()
        results[name] = (
            logits.detach(),
            s.grad,
            q.grad,
            {n: p.grad for n, p in model.named_parameters()},
        )
    fast_out, oracle_out = results["fast"], results["oracle"]
    assert_rel_close(fast_out[0], oracle_out[0], "logits")
    assert_rel_close(fast_out[1], oracle_out[1], "d support")
    assert_rel_close(fast_out[2], oracle_out[2], "d query")
    assert set(fast_out[3]) == set(oracle_out[3])
    for name, g in oracle_out[3].items():
        if name.startswith("classification_layer"):  # only the auxiliary loss reaches it
            assert g is None and fast_out[3][name] is None
        else:
            assert_rel_close(fast_out[3][name], g, f"d {name}")


def test_aux_loss_matches_oracle_and_only_in_training():
    oracle, fast = _pair(seed=1, **NO_DROPOUT)
    support, labels, query, s_cls, q_cls = _episodes(2, seed=3)
    batch = fb.EpisodeBatch(support, labels, query, torch.arange(5).expand(2, 5), s_cls, q_cls, 5)
    fast.train()
    out = fast(batch)
    assert set(out.losses) == {"aux_cls"}
    expected = []
    for i in range(2):
        logits, frame_logits = oracle(support[i], labels[i], query[i], 5)
        classes = torch.cat([s_cls[i], q_cls[i]])
        expected.append(OracleHyRSM.aux_loss(frame_logits, classes, 0.15))
        assert_rel_close(out.logits[i], logits.detach(), "training logits (no dropout)")
    assert_rel_close(out.losses["aux_cls"], torch.stack(expected).mean(), "aux loss")
    out.losses["aux_cls"].backward()
    assert fast.classification_layer.weight.grad.abs().sum() > 0
    assert set(fast.episode_loss(batch)) == {"ce", "aux_cls"}
    no_classes = fb.EpisodeBatch(support, labels, query, batch.query_labels, way=5)
    assert fast(no_classes).losses == {}
    fast.eval()
    assert fast(batch).losses == {}


def test_no_classifier_without_num_train_classes():
    oracle, fast = _pair(classes=None)
    assert fast.classification_layer is None
    fast.train()
    support, labels, query, s_cls, q_cls = _episodes(1)
    assert fast(fb.EpisodeBatch(support, labels, query, None, s_cls, q_cls, 5)).losses == {}
    ignored = fast.load_official_state_dict(oracle.state_dict())
    assert ignored == ["classification_layer.bias", "classification_layer.weight"]


def test_kinetics_positional_options_match_oracle():
    oracle, fast = _pair(seed=2, position_a=2048.0, position_b=0.01)
    support, labels, query, _, _ = _episodes(1, seed=5, batch=1)
    with torch.no_grad():
        expected = oracle(support[0], labels[0], query[0], 5)[0]
        logits = fast(fb.EpisodeBatch(support, labels, query, way=5)).logits[0]
    assert_rel_close(logits, expected, "logits with A=2048, B=0.01")


def test_positional_table_is_the_references():
    table = hyrsm_positional_table(20, D)
    assert_rel_close(table.double(), hyrsm_table(20, D), "table", rtol=1e-6)
    # exponent 2i (not i): pe[pos, 3] = cos(pos / 10000^(2·3/D))
    assert table[5, 3].item() == pytest.approx(math.cos(5 / 10000 ** (6 / D)), rel=1e-6)
    with pytest.raises(ValueError, match="even feature_dim"):
        hyrsm_positional_table(20, 7)


def test_official_checkpoint_prefixes_and_errors():
    oracle, fast = _pair()
    sd = {f"module.{k}": v for k, v in oracle.state_dict().items()}
    sd["module.backbone.0.weight"] = torch.zeros(2)
    assert fast.load_official_state_dict({"model_state": sd}) == ["module.backbone.0.weight"]
    # HyRSM's training script saves its BaseVideoModel: the head's keys under ``head.``
    saved = {f"module.head.{k}": v + 1 for k, v in oracle.state_dict().items()}
    saved["module.head.backbone.0.weight"] = torch.zeros(2)
    ignored = fast.load_official_state_dict({"epoch": 10, "model_state": saved})
    assert ignored == ["module.head.backbone.0.weight"]
    assert torch.equal(fast.pe.pe, oracle.pe.pe + 1)
    other = OracleHyRSM(D, C + 1).double().state_dict()
    with pytest.raises(OfficialCheckpointError, match=r"classification_layer.weight' has shape"):
        fast.load_official_state_dict(other)
    broken = dict(oracle.state_dict())
    del broken["temporal_atte.w_ks.weight"]
    with pytest.raises(OfficialCheckpointError, match=r"missing key 'temporal_atte.w_ks.weight'"):
        fast.load_official_state_dict(broken)


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="heads"):
        fb.create_method("hyrsm", feature_dim=30, seq_len=8, heads=8)
    with pytest.raises(ValueError, match="20 rows"):
        fb.create_method("hyrsm", feature_dim=32, seq_len=24)


def test_contract():
    run_contract("hyrsm")
