"""Pair tables: the evaluator's lookup path must give the episode path's predictions."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.pairs import class_mean, pair_table, table_logits, use_pair_table
from fsarbench.state import state_class_means, state_map

T, D = 8, 32
# the module: ``fsarbench.evaluate`` the attribute is the function
evaluate_mod = importlib.import_module("fsarbench.evaluate")


def _pool(n_classes: int = 6, per_class: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.rand(n_classes * per_class, T, D, generator=g, dtype=torch.float64)
    return feats, np.repeat(np.arange(n_classes), per_class)


def _method(name: str, **hp) -> fb.FewShotMethod:
    torch.manual_seed(0)
    return (
        fb.create_method(name, feature_dim=D, seq_len=T, num_train_classes=5, **hp).double().eval()
    )


def _predictions(method, feats, manifest, *, table: bool, monkeypatch) -> np.ndarray:
    monkeypatch.setattr(evaluate_mod, "use_pair_table", lambda *a: table)
    result = fb.evaluate(method, feats, manifest, progress=False, batch_episodes=7)
    return result.records["predicted_label"]


@pytest.mark.parametrize(
    ("name", "hp", "shot"),
    [
        ("otam", {}, 3),
        ("bimhm", {}, 2),
        ("bimhm", {"prototype": True}, 1),
        ("protonet", {}, 1),
        ("protonet", {"metric": "sqeuclidean"}, 1),
        ("trx", {"trans_linear_out_dim": 8}, 1),
        ("sgtm-otam", {}, 2),
    ],
)
def test_table_path_predicts_as_episode_path(name, hp, shot, monkeypatch):
    feats, classes = _pool()
    method = _method(name, **hp)
    manifest = fb.make_manifest(classes, way=4, shot=shot, queries=1, episodes=40, seed=3)
    assert method.pairwise(shot)
    by_table = _predictions(method, feats, manifest, table=True, monkeypatch=monkeypatch)
    by_episode = _predictions(method, feats, manifest, table=False, monkeypatch=monkeypatch)
    np.testing.assert_array_equal(by_table, by_episode)


def test_pair_table_is_pair_logits_of_every_pair():
    feats, _ = _pool(per_class=3)
    method = _method("otam")
    state = method.encode(feats)
    table = pair_table(method, state, pairs_per_call=5)  # several row blocks, one partial
    batched = state_map(lambda t: t.unsqueeze(0), state)
    direct = method.pair_logits(batched, batched)[0]
    torch.testing.assert_close(table, direct.float())


def test_a_large_pools_pair_table_shows_its_progress(monkeypatch, capsys):
    """A real test pool's table took minutes with nothing shown; the first batch's line then
    read '1/589 batch (330 s, 0.00 batch/s)'."""
    from fsarbench import pairs

    feats, _ = _pool(per_class=3)
    method = _method("otam")
    state = method.encode(feats)
    monkeypatch.setenv("FSAR_PROGRESS", "1")
    monkeypatch.setenv("FSAR_PROGRESS_EVERY", "0")
    quiet = pair_table(method, state, pairs_per_call=5, progress=True)  # a small pool: no bar
    assert "pair table" not in capsys.readouterr().err
    monkeypatch.setattr(pairs, "PAIR_TABLE_PROGRESS_MIN", 2)
    shown = pair_table(method, state, pairs_per_call=5, progress=True)
    err = capsys.readouterr().err
    assert f"pair table: {len(feats)}/{len(feats)} video" in err
    assert torch.equal(quiet, shown)


def test_table_logits_average_each_class():
    table = torch.arange(16.0).view(4, 4)
    query = torch.tensor([[0, 1]])
    support = torch.tensor([[2, 3, 1]])
    labels = torch.tensor([[1, 0, 1]])
    logits = table_logits(table, query, support, labels, way=2)
    expected = torch.tensor([[[3.0, (2 + 1) / 2], [7.0, (6 + 5) / 2]]])
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(
        class_mean(table[query[0]][:, support[0]][None], labels, 2), expected
    )


def test_table_used_only_when_cheaper_and_pairwise():
    _, classes = _pool()  # 30 videos: 900 pairs
    many = fb.make_manifest(classes, way=5, shot=1, queries=1, episodes=40, seed=0)  # 1000 slots
    few = fb.make_manifest(classes, way=5, shot=1, queries=1, episodes=30, seed=0)  # 750 slots
    otam, hyrsm, trx = _method("otam"), _method("hyrsm"), _method("trx", trans_linear_out_dim=8)
    assert use_pair_table(otam, many, 30)
    assert not use_pair_table(otam, few, 30)
    assert not use_pair_table(hyrsm, many, 30)  # set attention mixes the classes
    three_shot = fb.make_manifest(classes, way=5, shot=3, queries=1, episodes=40, seed=0)
    assert use_pair_table(otam, three_shot, 30)
    assert not use_pair_table(trx, three_shot, 30)  # attention spans a class's videos


def test_pair_tables_are_reused_across_manifests_of_the_same_videos():
    feats, classes = _pool()
    method = _method("otam")
    calls = []
    original = method.pair_logits
    method.pair_logits = lambda q, s: calls.append(1) or original(q, s)
    tables: dict = {}
    results = []
    for way in (4, 5):
        manifest = fb.make_manifest(classes, way=way, shot=1, queries=1, episodes=200, seed=0)
        assert len(manifest.unique_videos()) == 30
        results.append(fb.evaluate(method, feats, manifest, progress=False, pair_tables=tables))
    built = len(calls)
    assert built > 0 and len(tables) == 1
    fresh = fb.evaluate(method, feats, manifest, progress=False)  # no dict: built again
    assert len(calls) == 2 * built
    np.testing.assert_array_equal(
        fresh.records["predicted_label"], results[1].records["predicted_label"]
    )


@pytest.mark.parametrize(
    ("name", "hp"), [("hyrsm", {}), ("protonet", {}), ("bimhm", {"prototype": True})]
)
def test_support_means_path_predicts_as_the_gather_path(name, hp, monkeypatch):
    """Heads that see the support only through class means get them straight from the pool."""
    feats, classes = _pool()
    method = _method(name, **hp)
    assert method.support_means
    manifest = fb.make_manifest(classes, way=4, shot=3, queries=2, episodes=30, seed=1)
    by_means = fb.evaluate(method, feats, manifest, progress=False, batch_episodes=7)
    monkeypatch.setattr(type(method), "support_means", False)
    by_gather = fb.evaluate(method, feats, manifest, progress=False, batch_episodes=7)
    np.testing.assert_array_equal(
        by_means.records["predicted_label"], by_gather.records["predicted_label"]
    )


def test_state_class_means_average_each_class():
    state = {"a": torch.arange(12.0).view(6, 2), "b": torch.arange(6.0)}
    index = torch.tensor([[[0, 1], [4, 5]], [[2, 2], [3, 0]]])  # [B=2, C=2, K=2]
    means = state_class_means(state, index)
    torch.testing.assert_close(means["b"], torch.tensor([[0.5, 4.5], [2.0, 1.5]]))
    torch.testing.assert_close(means["a"][1, 1], torch.tensor([3.0, 4.0]))
