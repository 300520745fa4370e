"""TRX head: fast frame-level computation vs. the literal HEADS.md oracle."""

from __future__ import annotations

import math

import pytest
import torch

import fsarbench as fb
from fsarbench.testing.contract import run_contract
from fsarbench_baselines._official import OfficialCheckpointError
from fsarbench_baselines.trx import class_slots, trx_positional_table
from oracles.trx_hyrsm import (
    OracleTRX,
    assert_rel_close,
    grad_scale,
    random_episodes,
    trx_table,
)

D, T, O = 12, 6, 8


def _pair(seed: int = 0, cardinalities=(2, 3)):
    """An oracle with random weights and the fast head loaded from its state dict."""
    torch.manual_seed(seed)
    oracle = OracleTRX(D, T, cardinalities, O).double().eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for t in oracle.transformers:
            t.norm_k.weight.uniform_(0.5, 1.5)
            t.norm_k.bias.uniform_(-0.5, 0.5)
    fast = (
        fb.create_method(
            "trx", feature_dim=D, seq_len=T, cardinalities=cardinalities, trans_linear_out_dim=O
        )
        .double()
        .eval()
    )
    assert fast.load_official_state_dict(oracle.state_dict()) == []
    return oracle, fast


def _fast_logits(fast, support, labels, query, way):
    return fast(fb.EpisodeBatch(support, labels, query, way=way)).logits


def _oracle_logits(oracle, support, labels, query, way):
    return torch.stack([oracle(support[i], labels[i], query[i], way) for i in range(len(support))])


@pytest.mark.parametrize("shot,counts", [(1, None), (5, None), (2, (1, 3, 2, 1, 2))])
def test_logits_and_gradients_match_oracle(shot, counts):
    oracle, fast = _pair()
    support, labels, query = random_episodes(2, 5, shot, 1, T, D, seed=shot, counts=counts)
    weight = torch.randn(
        2, query.shape[1], 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64
    )
    grads = {}
    for name, model, fn in (("fast", fast, _fast_logits), ("oracle", oracle, _oracle_logits)):
        s, q = support.clone().requires_grad_(), query.clone().requires_grad_()
        logits = fn(model, s, labels, q, 5)
        (logits * weight).sum().backward()
        grads[name] = (
            logits.detach(),
            s.grad,
            q.grad,
            {n: p.grad for n, p in model.named_parameters()},
        )
    fast_out, oracle_out = grads["fast"], grads["oracle"]
    assert_rel_close(fast_out[0], oracle_out[0], "logits")
    assert_rel_close(fast_out[1], oracle_out[1], "d support")
    assert_rel_close(fast_out[2], oracle_out[2], "d query")
    assert set(fast_out[3]) == set(oracle_out[3])
    scale = grad_scale(oracle_out[3])
    for name, g in oracle_out[3].items():
        if name.endswith("v_linear.bias"):  # zero analytically: attention weights sum to 1
            assert max(g.abs().max(), fast_out[3][name].abs().max()) <= 1e-12 * scale
        else:
            assert_rel_close(fast_out[3][name], g, f"d {name}")


def test_single_cardinality_and_support_order():
    oracle, fast = _pair(seed=3, cardinalities=(3,))
    support, labels, query = random_episodes(1, 3, 2, 2, T, D, seed=4)
    with torch.no_grad():
        expected = _oracle_logits(oracle, support, labels, query, 3)
        assert_rel_close(_fast_logits(fast, support, labels, query, 3), expected, "logits")
        perm = torch.randperm(labels.shape[1])
        shuffled = _fast_logits(fast, support[:, perm], labels[:, perm], query, 3)
    assert_rel_close(shuffled, expected, "shuffled support")


def test_positional_table_known_values():
    table = trx_positional_table(12, 8, 0.1)
    assert table.shape == (12, 8)
    assert table[0, 0] == 0 and table[0, 1] == pytest.approx(0.1)
    assert table[3, 2].item() == pytest.approx(0.1 * math.sin(3 * 10000 ** (-2 / 8)), rel=1e-6)
    assert table[3, 3].item() == pytest.approx(0.1 * math.cos(3 * 10000 ** (-2 / 8)), rel=1e-6)


@pytest.mark.parametrize("scale", [0.1, 0.7])
def test_the_heads_own_positional_table_follows_pe_scale(scale):
    """The other tests load the oracle's table into the head: a table built at 0.1 whatever
    pe_scale says passed them all."""
    fast = fb.create_method("trx", feature_dim=D, seq_len=T, trans_linear_out_dim=O, pe_scale=scale)
    for transformer in fast.transformers:
        table = transformer.pe.pe.reshape(-1, D).double()  # [1.5 T, D]
        assert_rel_close(table, trx_table(len(table), D, scale), "pe", rtol=1e-6)


def test_class_slots_known_answer():
    labels = torch.tensor([[2, 0, 1, 0, 2, 1], [1, 1, 0, 0, 2, 2]])
    index, valid = class_slots(labels, 3)
    assert valid is None
    assert index.tolist() == [[1, 3, 2, 5, 0, 4], [2, 3, 0, 1, 4, 5]]
    index, valid = class_slots(torch.tensor([[1, 0, 1, 2, 1]]), 3)
    assert index.shape == (1, 9)
    assert valid.tolist() == [[[True, False, False], [True, True, True], [True, False, False]]]
    assert index[0, valid[0].flatten()].tolist() == [1, 0, 2, 4, 3]


def test_official_checkpoint_prefixes_and_errors():
    oracle, fast = _pair()
    sd = {f"module.{k}": v for k, v in oracle.state_dict().items()}
    sd["module.resnet.0.weight"] = torch.zeros(3)
    sd["transformers.1.tuples.4"] = torch.tensor([0, 1, 2])  # HyRSM's copy of TRX
    ignored = fast.load_official_state_dict({"model_state_dict": sd})
    assert ignored == ["module.resnet.0.weight", "transformers.1.tuples.4"]
    # HyRSM's copy of TRX, saved through its BaseVideoModel: every key under ``head.``
    saved = {f"head.{k}": v for k, v in oracle.state_dict().items()}
    saved["head.transformers.0.tuples.1"] = torch.tensor([0, 2])
    assert fast.load_official_state_dict({"model_state": saved}) == ["head.transformers.0.tuples.1"]
    broken = dict(oracle.state_dict())
    del broken["transformers.0.norm_k.bias"]
    with pytest.raises(OfficialCheckpointError, match=r"missing key 'transformers.0.norm_k.bias'"):
        fast.load_official_state_dict(broken)
    wide = OracleTRX(D, T, (2, 3), O + 1).double().state_dict()
    with pytest.raises(OfficialCheckpointError, match=r"k_linear.weight' has shape \(9, 24\)"):
        fast.load_official_state_dict(wide)
    with pytest.raises(OfficialCheckpointError, match=r"unexpected key 'transformers.2.k_linear"):
        fast.load_official_state_dict(OracleTRX(D, T, (2, 3, 4), O).double().state_dict())


def test_dropout_only_in_training_and_norm_v_frozen():
    fast = fb.create_method("trx", feature_dim=D, seq_len=T, trans_linear_out_dim=O, dropout=0.5)
    support, labels, query = random_episodes(1, 3, 1, 1, T, D)
    batch = fb.EpisodeBatch(support.float(), labels, query.float(), way=3)
    fast.train()
    assert not torch.equal(fast(batch).logits, fast(batch).logits)
    fast.eval()
    assert torch.equal(fast(batch).logits, fast(batch).logits)
    trained = {id(p) for p in fast.training_stages()[0].parameters()}
    assert all(id(p) not in trained for p in fast.transformers[0].norm_v.parameters())


def test_contract():
    run_contract("trx")


def _reference_task_loss(oracle, support, labels, query, query_labels, way) -> torch.Tensor:
    """TRX's ``run.py``: each task's ``utils.loss`` (one sample: the sum over the task's
    queries of their cross-entropy), divided by the tasks of an update."""
    tasks = [
        torch.nn.functional.cross_entropy(
            oracle(support[i], labels[i], query[i], way), query_labels[i], reduction="sum"
        )
        for i in range(len(support))
    ]
    return sum(tasks) / len(tasks)


@pytest.mark.parametrize("queries", [1, 3])
def test_training_loss_sums_each_episodes_queries_as_the_reference(queries):
    """The loss was the mean over queries, way x queries times smaller than the reference's
    sum: under TRX's plain SGD recipe every step was 25 times too small (5-way, 5 queries)."""
    oracle, fast = _pair(seed=1)
    support, labels, query = random_episodes(3, 4, 2, queries, T, D, seed=4)
    query_labels = torch.arange(4).repeat_interleave(queries).expand(3, -1)
    batch = fb.EpisodeBatch(support, labels, query, query_labels, way=4)
    reference = _reference_task_loss(oracle, support, labels, query, query_labels, 4)
    assert_rel_close(fast.episode_loss(batch)["ce"], reference, 1e-12)
    mean = fb.create_method(
        "trx", feature_dim=D, seq_len=T, trans_linear_out_dim=O, loss_reduction="mean"
    ).double()
    mean.load_state_dict(fast.state_dict())
    mean.eval()
    assert_rel_close(mean.episode_loss(batch)["ce"] * 4 * queries, reference, 1e-12)


def test_a_checkpoint_saved_before_loss_reduction_is_named_as_trained():
    """TRX models saved before loss_reduction existed trained on the mean over queries."""
    from fsarbench.cli.eval_checks import trained_name
    from fsarbench.registry import stored_hparams

    old = {"cardinalities": [2, 3], "trans_linear_out_dim": 1152, "pe_scale": 0.1, "dropout": 0.1}
    assert stored_hparams("trx", old)["loss_reduction"] == "mean"
    assert trained_name("trx", {"method": {}, "hparams": old}, None) == "trx[loss_reduction=mean]"
