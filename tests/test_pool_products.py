"""Pool products: TRX's K-shot episodes from every video pair's frame products, looked up."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fsarbench as fb
import fsarbench.pairs as pairs
from fsarbench.pairs import use_pool_products
from fsarbench.state import state_gather

T, D = 8, 32


def _trx(**hp) -> fb.FewShotMethod:
    torch.manual_seed(0)
    return fb.create_method("trx", feature_dim=D, seq_len=T, trans_linear_out_dim=12, **hp)


def _pool(n_classes: int = 6, per_class: int = 5, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(n_classes * per_class, T, D, generator=g, dtype=dtype)
    return feats, np.repeat(np.arange(n_classes), per_class)


@pytest.mark.parametrize(("way", "shot"), [(5, 2), (3, 4), (4, 1)])
@pytest.mark.parametrize("cardinalities", [(2, 3), (1,)])
def test_match_pool_equals_match_in_float64(way, shot, cardinalities):
    """Same logits as gathering the states, support in shuffled order."""
    method = _trx(cardinalities=cardinalities).double().eval()
    feats, _ = _pool()
    g = torch.Generator().manual_seed(2)
    b, nq = 6, 3
    support = torch.stack([torch.randperm(30, generator=g)[: way * shot] for _ in range(b)])
    labels = torch.arange(way).repeat_interleave(shot).expand(b, -1)
    order = torch.randperm(way * shot, generator=g)
    support, labels = support[:, order], labels[:, order].contiguous()
    query = torch.randint(0, 30, (b, nq), generator=g)
    with torch.inference_mode():
        state = method.encode(feats)
        gathered = method.match(
            state_gather(state, support), labels, state_gather(state, query), way
        ).logits
        pooled = method.match_pool(
            state, method.pool_products(state), support, labels, query, way
        ).logits
    torch.testing.assert_close(pooled, gathered, rtol=1e-12, atol=1e-12)


def test_match_pool_with_uneven_classes():
    """Classes with fewer videos than the largest (masked slots) match as ``match`` does."""
    method = _trx().double().eval()
    feats, _ = _pool()
    support = torch.tensor([[0, 5, 6, 10, 11, 12], [3, 4, 9, 15, 16, 20]])
    labels = torch.tensor([[0, 1, 1, 2, 2, 2], [2, 0, 0, 1, 1, 1]])
    query = torch.tensor([[1, 7, 13], [2, 8, 21]])
    with torch.inference_mode():
        state = method.encode(feats)
        gathered = method.match(
            state_gather(state, support), labels, state_gather(state, query), 3
        ).logits
        pooled = method.match_pool(
            state, method.pool_products(state), support, labels, query, 3
        ).logits
    torch.testing.assert_close(pooled, gathered, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_evaluator_pool_path_predicts_as_episode_path(dtype, monkeypatch):
    feats, classes = _pool(dtype=dtype)
    method = _trx().to(dtype).eval()
    manifest = fb.make_manifest(classes, way=5, shot=3, queries=2, episodes=60, seed=4)
    assert use_pool_products(method, manifest, 30)
    calls = []
    original = method.pool_products
    monkeypatch.setattr(method, "pool_products", lambda s: calls.append(1) or original(s))
    pooled = fb.evaluate(method, feats, manifest, progress=False, batch_episodes=7)
    assert calls == [1]
    monkeypatch.setattr(pairs, "POOL_PRODUCTS_BYTES", 0)
    episodes = fb.evaluate(method, feats, manifest, progress=False, batch_episodes=7)
    assert calls == [1]  # the second evaluation matched episode by episode
    np.testing.assert_array_equal(
        pooled.records["predicted_label"], episodes.records["predicted_label"]
    )
    assert pooled.accuracy == episodes.accuracy


def test_pool_products_used_only_when_they_fit_and_pay():
    _, classes = _pool()  # 30 videos: 900 ordered pairs
    trx, otam = _trx(), fb.create_method("otam", feature_dim=D, seq_len=T)
    many = fb.make_manifest(classes, way=5, shot=3, queries=1, episodes=12, seed=0)  # 900 slots
    few = fb.make_manifest(classes, way=5, shot=3, queries=1, episodes=11, seed=0)  # 825 slots
    assert use_pool_products(trx, many, 30)
    assert not use_pool_products(trx, few, 30)
    assert not use_pool_products(otam, many, 30)  # no pool products
    one_shot = fb.make_manifest(classes, way=5, shot=1, queries=1, episodes=200, seed=0)
    assert not use_pool_products(trx, one_shot, 30)  # pairwise: the pair table serves
    # two float32 [U·R, U·R] tables per cardinality (R = ω·T)
    assert trx.pool_products_bytes(30, 3) == sum(2 * 4 * (30 * w * T) ** 2 for w in (2, 3))
    assert trx.pool_products_bytes(2000, 5) > pairs.POOL_PRODUCTS_BYTES  # Kinetics test pool
    assert trx.double().pool_products_bytes(30, 3) == 2 * trx.float().pool_products_bytes(30, 3)


def test_adapted_method_delegates_every_evaluator_hook():
    """The frozen track wraps heads in an adapter: the evaluator must still see the head's
    pool products, pair tables, batch preference and support means."""
    from fsarbench.training.adapter import AdaptedMethod, FrameAdapter

    for name, shot in (("trx", 5), ("otam", 1), ("hyrsm", 1)):
        inner = fb.create_method(name, feature_dim=D, seq_len=T)
        adapted = AdaptedMethod(inner, FrameAdapter(D), D)
        assert adapted.pool_products_bytes(30, shot) == inner.pool_products_bytes(30, shot)
        assert adapted.pairwise(shot) == inner.pairwise(shot)
        assert adapted.support_means == inner.support_means
        for device, s in (("cpu", 1), ("cpu", 5), ("cuda", 1)):
            assert adapted.preferred_episode_batch(device, s) == inner.preferred_episode_batch(
                device, s
            )
    assert AdaptedMethod(_trx(), FrameAdapter(D), D).pool_products_bytes(30, 5) is not None


def test_adapted_trx_evaluates_through_pool_products(monkeypatch):
    from fsarbench.training.adapter import AdaptedMethod, FrameAdapter

    feats, classes = _pool(dtype=torch.float32)
    method = AdaptedMethod(_trx(), FrameAdapter(D), D).eval()
    manifest = fb.make_manifest(classes, way=5, shot=2, queries=1, episodes=60, seed=5)
    pooled = fb.evaluate(method, feats, manifest, progress=False)
    assert pooled.extra["batch_episodes"] == 60  # no gathered states bound the batch
    monkeypatch.setattr(pairs, "POOL_PRODUCTS_BYTES", 0)
    episodes = fb.evaluate(method, feats, manifest, progress=False)
    np.testing.assert_array_equal(
        pooled.records["predicted_label"], episodes.records["predicted_label"]
    )
