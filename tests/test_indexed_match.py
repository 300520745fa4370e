"""Episodes matched from pool positions (``gathers_episodes`` / ``match_indexed``): OTAM and
Bi-MHM gather and multiply a few episodes at a time, bit-identical to gathering first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.state import state_gather
from fsarbench.training.adapter import AdaptedMethod, FrameAdapter
from fsarbench_baselines._similarity import frame_dots, indexed_frame_dots

T, D = 8, 48


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Bit-identity between a chunked and a whole-batch ``bmm`` holds at one intra-op
    thread; with more, MKL may split the two batches over its threads differently (at 3-4
    threads here, or on an Intel CPU at 2), and the sums differ in the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pool(n: int = 90, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, T, D, generator=g, dtype=torch.float64).to(dtype)


def _episodes(n_videos: int, b: int, ns: int, nq: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(n_videos, generator=g)[: ns + nq] for _ in range(b)])
    return order[:, :ns], order[:, ns:]


@pytest.mark.parametrize("chunk", [1, 3, 8, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_indexed_frame_dots_equal_gathered_products(chunk, dtype):
    frames = _pool(dtype=dtype)
    support, query = _episodes(len(frames), b=11, ns=10, nq=5)
    expected = frame_dots(frames[query], frames[support])
    got = indexed_frame_dots(frames, query, support, chunk=chunk)
    assert got.shape == (11, 5, T, 10, T)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", ["otam", "bimhm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("way", "shot", "b"), [(5, 1, 1), (5, 1, 9), (5, 5, 17), (3, 2, 8)])
def test_match_indexed_is_bit_identical_to_match(name, dtype, way, shot, b):
    method = fb.create_method(name, feature_dim=D, seq_len=T).to(dtype).eval()
    assert method.gathers_episodes
    state = method.encode(_pool(dtype=dtype))
    support, query = _episodes(90, b, way * shot, way)
    labels = torch.arange(way).repeat_interleave(shot).expand(b, -1)
    with torch.inference_mode():
        indexed = method.match_indexed(state, support, labels, query, way).logits
        gathered = method.match(
            state_gather(state, support), labels, state_gather(state, query), way
        ).logits
    assert indexed.shape == (b, way, way)
    assert torch.equal(indexed, gathered)


def test_heads_that_cannot_gather_say_so():
    assert not fb.create_method(
        "otam", feature_dim=D, seq_len=T, bidirectional=False
    ).gathers_episodes
    assert not fb.create_method("bimhm", feature_dim=D, seq_len=T, prototype=True).gathers_episodes
    assert not fb.create_method("protonet", feature_dim=D, seq_len=T).gathers_episodes
    with pytest.raises(NotImplementedError, match="does not gather"):
        fb.create_method("protonet", feature_dim=D, seq_len=T).match_indexed(
            None, None, None, None, 5
        )


@pytest.mark.parametrize("name", ["otam", "bimhm"])
def test_match_indexed_keeps_gradients(name):
    """Outside inference the episodes are gathered and matched: gradients still flow."""
    method = fb.create_method(name, feature_dim=D, seq_len=T).double()
    frames = _pool(dtype=torch.float64).requires_grad_()
    support, query = _episodes(90, 3, 5, 5)
    labels = torch.arange(5).expand(3, -1)
    logits = method.match_indexed(method.encode(frames), support, labels, query, 5).logits
    logits.sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0


def test_match_indexed_under_autocast_matches_match():
    method = fb.create_method("otam", feature_dim=D, seq_len=T).eval()
    state = method.encode(_pool())
    support, query = _episodes(90, 4, 5, 5)
    labels = torch.arange(5).expand(4, -1)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        indexed = method.match_indexed(state, support, labels, query, 5).logits
        gathered = method.match(
            state_gather(state, support), labels, state_gather(state, query), 5
        ).logits
    assert torch.equal(indexed, gathered)


@pytest.mark.parametrize("name", ["otam", "bimhm"])
@pytest.mark.parametrize("wrap", [False, True])
def test_evaluate_predictions_unchanged(monkeypatch, name, wrap):
    """Episode by episode (no pair table), the evaluator's predictions are those of gathering
    first, for bare heads and for heads behind the frozen track's adapter."""
    import importlib

    evaluate_module = importlib.import_module("fsarbench.evaluate")
    monkeypatch.setattr(evaluate_module, "use_pair_table", lambda *a, **k: False)
    feats = _pool(n=120)
    classes = np.repeat(np.arange(12), 10)
    manifest = fb.make_manifest(classes, way=5, shot=2, queries=2, episodes=40, seed=3)
    method = fb.create_method(name, feature_dim=D, seq_len=T)
    if wrap:
        method = AdaptedMethod(method, FrameAdapter(D), D)
    method.eval()
    assert method.gathers_episodes
    calls = []
    original = type(method).match_indexed

    def spy(self, *args):
        calls.append(args[1].shape[0])
        return original(self, *args)

    monkeypatch.setattr(type(method), "match_indexed", spy)
    indexed = fb.evaluate(method, feats, manifest, progress=False, batch_episodes=7)
    assert sum(calls) == 40  # every episode went through match_indexed
    monkeypatch.setattr(type(method), "gathers_episodes", property(lambda self: False))
    gathered = fb.evaluate(method, feats, manifest, progress=False, batch_episodes=7)
    assert np.array_equal(indexed.records["predicted_label"], gathered.records["predicted_label"])
    assert indexed.accuracy == gathered.accuracy


def test_adapter_passes_match_indexed_through():
    inner = fb.create_method("bimhm", feature_dim=D, seq_len=T).eval()
    adapted = AdaptedMethod(inner, FrameAdapter(D), D).eval()
    state = adapted.encode(_pool())
    support, query = _episodes(90, 2, 5, 5)
    labels = torch.arange(5).expand(2, -1)
    with torch.inference_mode():
        via_adapter = adapted.match_indexed(state, support, labels, query, 5).logits
        direct = inner.match_indexed(state, support, labels, query, 5).logits
    assert torch.equal(via_adapter, direct)


def test_the_contract_check_compares_at_one_thread_and_restores_the_count(monkeypatch):
    """A plugin head is checked on the user's machine: with more intra-op threads MKL may
    split a chunked and a whole-batch ``bmm`` differently, and a correct head failed."""
    from fsarbench.testing import contract

    seen = []
    real = contract.state_gather

    def gather(*args):
        seen.append(torch.get_num_threads())
        return real(*args)

    monkeypatch.setattr(contract, "state_gather", gather)
    torch.set_num_threads(3)
    contract.check_indexed_match("otam")
    shots = len(contract.CLAIM_SHOTS[1:])  # support and query gathered at each shot
    assert seen == [1, 1] * shots and torch.get_num_threads() == 3
