from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.stats.intervals import mean_and_halfwidth


def separable_features(classes: np.ndarray, d: int = 16, t: int = 4, noise: float = 0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(int(classes.max()) + 1, d, generator=g)
    f = centres[torch.as_tensor(classes)][:, None].expand(-1, t, -1).clone()
    return f + noise * torch.randn(f.shape, generator=g)


def test_perfectly_separable_gives_100():
    pool = np.repeat(np.arange(10), 6)
    m = fb.make_manifest(pool, way=5, shot=1, episodes=300, seed=0)
    r = fb.evaluate(
        fb.create_method("protonet", feature_dim=16, seq_len=4),
        separable_features(pool),
        m,
        progress=False,
    )
    assert r.accuracy == 100.0 and r.ci95 == 0.0
    assert set(r.per_class_accuracy.values()) == {100.0}


def test_ci_is_trx_convention_and_records_consistent():
    pool = np.repeat(np.arange(10), 6)
    m = fb.make_manifest(pool, way=5, shot=1, queries=2, episodes=400, seed=1)
    r = fb.evaluate(
        fb.create_method("protonet", feature_dim=16, seq_len=4),
        separable_features(pool, noise=2.0),
        m,
        progress=False,
    )
    correct = r.records["correct"].reshape(400, 10)
    acc = correct.mean(1)
    np.testing.assert_allclose(r.episode_accuracy, acc)
    assert r.accuracy == pytest.approx(100 * acc.mean())
    assert r.ci95 == pytest.approx(100 * 1.96 * np.std(acc) / math.sqrt(400))
    assert 20 < r.accuracy < 100
    # per-class accuracy from records
    rc = r.records["true_class"]
    for c, a in r.per_class_accuracy.items():
        assert a == pytest.approx(100 * r.records["correct"][rc == c].mean())
    # predicted class is the class of the predicted label
    e = r.records["episode"]
    assert (m.classes[e, r.records["predicted_label"]] == r.records["predicted_class"]).all()


def test_t_interval():
    v = np.array([0.2, 0.4, 0.6, 1.0])
    from scipy import stats

    mean, half, _ = mean_and_halfwidth(v, "t")
    assert half == pytest.approx(stats.t.ppf(0.975, 3) * np.std(v, ddof=1) / 2)
    with pytest.raises(ValueError, match="interval must be one of"):
        mean_and_halfwidth(v, "z")


def test_each_unique_video_encoded_once_and_batching_invariant(monkeypatch):
    pool = np.repeat(np.arange(8), 5)
    feats = separable_features(pool, noise=3.0)
    m = fb.make_manifest(pool, way=4, shot=2, episodes=97, seed=2)
    method = fb.create_method("protonet", feature_dim=16, seq_len=4)
    seen = []
    original = method.encode
    monkeypatch.setattr(method, "encode", lambda x: seen.append(len(x)) or original(x))
    r1 = fb.evaluate(method, feats, m, batch_episodes=7, encode_chunk=9, progress=False)
    assert sum(seen) == len(m.unique_videos())
    r2 = fb.evaluate(method, feats, m, batch_episodes=1000, progress=False)
    np.testing.assert_array_equal(r1.records["predicted_label"], r2.records["predicted_label"])


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])  # SystemExit: preempted
def test_interrupted_evaluation_resumes_to_same_result(tmp_path, monkeypatch, stop, caplog):
    pool = np.repeat(np.arange(8), 5)
    feats = separable_features(pool, noise=3.0)
    m = fb.make_manifest(pool, way=4, shot=1, episodes=60, seed=5)
    method = fb.create_method("protonet", feature_dim=16, seq_len=4)
    full = fb.evaluate(method, feats, m, batch_episodes=10, progress=False)

    calls = {"n": 0}
    original = method.match

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise stop
        return original(*a, **k)

    monkeypatch.setattr(method, "match", flaky)
    part = tmp_path / "partial.npz"
    with pytest.raises(stop):
        fb.evaluate(method, feats, m, batch_episodes=10, progress=False, partial_path=part)
    assert part.exists()
    calls["n"] = -100
    with caplog.at_level("INFO", logger="fsarbench.evaluate"):
        resumed = fb.evaluate(
            method, feats, m, batch_episodes=10, progress=False, partial_path=part
        )
    assert calls["n"] == -100 + 3  # only the 3 unfinished batches ran again
    assert f"resuming {part}: 30 of 60 episodes already evaluated" in caplog.text
    np.testing.assert_array_equal(full.records["correct"], resumed.records["correct"])


def test_an_unreadable_partial_file_is_discarded_not_fatal(tmp_path, caplog):
    pool = np.repeat(np.arange(8), 5)
    feats = separable_features(pool, noise=3.0)
    m = fb.make_manifest(pool, way=4, shot=1, episodes=60, seed=5)
    method = fb.create_method("protonet", feature_dim=16, seq_len=4)
    full = fb.evaluate(method, feats, m, batch_episodes=10, progress=False)
    part = tmp_path / "partial.npz"
    part.write_bytes(b"PK\x03\x04 truncated")
    again = fb.evaluate(method, feats, m, batch_episodes=10, progress=False, partial_path=part)
    assert "discarding unreadable partial evaluation" in caplog.text
    np.testing.assert_array_equal(full.records["correct"], again.records["correct"])


def test_a_partial_evaluation_resumes_only_for_its_weights_and_policy(tmp_path, monkeypatch):
    """The resume tag was the manifest and the method's name: a count_wrong run of NaN
    logits resumed under nonfinite="error" printed 0.00 ± 0.00, and a partial file of one
    model's weights served another's."""
    pool = np.repeat(np.arange(8), 5)
    feats = separable_features(pool, noise=3.0)
    m = fb.make_manifest(pool, way=4, shot=1, episodes=40, seed=5)
    from fsarbench.training import AdaptedMethod, FrameAdapter

    method = AdaptedMethod(
        fb.create_method("protonet", feature_dim=16, seq_len=4), FrameAdapter(16), 16
    )
    fresh = fb.evaluate(method, feats, m, batch_episodes=10, progress=False)
    part = tmp_path / "partial.npz"
    original = method.match

    def nan_logits(*a, **k):
        out = original(*a, **k)
        out.logits[:] = float("nan")
        return out

    monkeypatch.setattr(method, "match", nan_logits)
    kw = dict(batch_episodes=10, progress=False, partial_path=part)
    wrong = fb.evaluate(method, feats, m, nonfinite="count_wrong", **kw)
    assert wrong.accuracy == 0.0 and part.exists()
    monkeypatch.setattr(method, "match", original)
    again = fb.evaluate(method, feats, m, nonfinite="error", **kw)
    assert again.accuracy == fresh.accuracy
    with torch.no_grad():
        torch.nn.init.normal_(
            method.adapter.linear.weight, generator=torch.Generator().manual_seed(4)
        )
    other = fb.evaluate(method, feats, m, batch_episodes=10, progress=False)
    assert fb.evaluate(method, feats, m, **kw).accuracy == other.accuracy != fresh.accuracy


def test_a_store_of_another_pool_size_is_an_error():
    """A store longer than the manifest's pool (e.g. features of the pool before its
    unreadable videos were left out) was used as is: every index named a shifted video."""
    pool = np.repeat(np.arange(5), 3)
    m = fb.make_manifest(pool, way=5, shot=1, episodes=2)
    with pytest.raises(ValueError, match="pool of 15 videos but the feature store holds 16"):
        fb.evaluate(
            fb.create_method("protonet", feature_dim=16, seq_len=4),
            torch.zeros(16, 4, 16),
            m,
            progress=False,
        )


def test_store_too_small_is_an_error():
    pool = np.repeat(np.arange(5), 3)
    m = fb.make_manifest(pool, way=5, shot=1, episodes=2)
    with pytest.raises(ValueError, match="feature store holds 4"):
        fb.evaluate(
            fb.create_method("protonet", feature_dim=16, seq_len=4),
            torch.zeros(4, 4, 16),
            m,
            progress=False,
        )


def test_batches_of_class_mean_heads_count_one_support_slot_per_class():
    from fsarbench.evaluate import fit_batch

    pool = np.repeat(np.arange(10), 8)
    m = fb.make_manifest(pool, way=5, shot=5, queries=1, episodes=50, seed=0)
    state = torch.zeros(len(pool), 8, 16)  # 512 bytes per video
    budget = 512 * 30 * 4  # four episodes of 25 support + 5 query videos
    assert fit_batch(state, len(pool), m, 500, budget) == 4
    assert fit_batch(state, len(pool), m, 500, budget, support_means=True) == 12  # 5 + 5 slots
    assert fit_batch(state, len(pool), m, 3, budget, support_means=True) == 3


def test_pool_encoded_from_a_view_leaves_features_untouched_and_matches_copies():
    pool = np.repeat(np.arange(6), 5)
    feats = separable_features(pool, noise=0.5)
    before = feats.clone()
    m = fb.make_manifest(pool, way=3, shot=2, episodes=40, seed=1)
    method = fb.create_method("bimhm", feature_dim=16, seq_len=4)
    whole = fb.evaluate(method, feats, m, progress=False)
    chunked = fb.evaluate(method, feats, m, progress=False, encode_chunk=7)
    assert torch.equal(feats, before)
    np.testing.assert_array_equal(
        whole.records["predicted_label"], chunked.records["predicted_label"]
    )


@pytest.mark.parametrize(
    "indices, view",
    [([2, 3, 4], True), ([0], True), ([2, 4, 3], False), ([1, 1], False), ([], False)],
)
def test_in_memory_store_returns_views_for_runs_of_consecutive_videos(indices, view):
    feats = torch.rand(6, 4, 8)
    store = fb.InMemoryFeatureStore(feats)
    got = store.get(np.array(indices, dtype=np.int64))
    assert torch.equal(got, feats[torch.as_tensor(indices, dtype=torch.long)])
    shares = (
        got.numel() > 0 and got.untyped_storage().data_ptr() == feats.untyped_storage().data_ptr()
    )
    assert shares == view
    half = fb.InMemoryFeatureStore(feats.half()).get(np.arange(3))
    assert half.dtype == torch.float32  # other dtypes are converted, never viewed


def test_encoded_pool_states_are_contiguous():
    # HyRSM's token projections come out of einsum/unbind as strided views; gathering or
    # averaging them per batch would copy the whole pool each time.
    from fsarbench.evaluate import encode_videos
    from fsarbench.state import state_leaves

    method = fb.create_method("hyrsm", feature_dim=16, seq_len=4).eval()
    feats = torch.rand(12, 4, 16)
    raw = method.encode(feats)
    assert not all(t.is_contiguous() for t in state_leaves(raw))  # what the head makes
    for chunk in (4096, 5):
        state = encode_videos(method, fb.InMemoryFeatureStore(feats), np.arange(12), chunk=chunk)
        assert all(t.is_contiguous() for t in state_leaves(state))
        for a, b in zip(state_leaves(state), state_leaves(raw)):
            torch.testing.assert_close(a, b)


def test_in_memory_store_rejects_runs_past_its_end():
    store = fb.InMemoryFeatureStore(torch.rand(4, 2, 3))
    for bad in ([3, 4], [5, 6]):
        with pytest.raises(IndexError):
            store.get(np.array(bad))


class _Batches:
    """Counts the evaluator's batches; raises KeyboardInterrupt after ``stop_after`` of them."""

    def __init__(self, monkeypatch) -> None:
        import importlib

        evaluate_mod = importlib.import_module("fsarbench.evaluate")  # not fb.evaluate()
        self.calls, self.stop_after = 0, None
        make = evaluate_mod.make_predictor

        def counted(*args, **kwargs):
            predict = make(*args, **kwargs)

            def run(start, stop):
                self.calls += 1
                if self.stop_after is not None and self.calls > self.stop_after:
                    raise KeyboardInterrupt
                return predict(start, stop)

            return run

        monkeypatch.setattr(evaluate_mod, "make_predictor", counted)

    def interrupt(self, method, feats, m, part, after: int = 3) -> None:
        part.unlink(missing_ok=True)  # a finished evaluation leaves its predictions there
        self.calls, self.stop_after = 0, after
        with pytest.raises(KeyboardInterrupt):
            fb.evaluate(method, feats, m, batch_episodes=10, progress=False, partial_path=part)
        self.calls, self.stop_after = 0, None
        assert part.exists()


def test_a_partial_evaluation_resumes_only_for_its_hparams_and_code(tmp_path, monkeypatch):
    """A head without weights (OTAM) resumed another configuration's predictions (lam 0.1's
    batches under lam 50: a number of neither), and an evaluation interrupted before a code
    change resumed under the new code (two versions' predictions under the new digest)."""
    import fsarbench.provenance as provenance

    pool = np.repeat(np.arange(8), 5)
    feats = separable_features(pool, noise=6.0)
    m = fb.make_manifest(pool, way=4, shot=1, episodes=60, seed=5)
    sharp, soft = (fb.create_method("otam", feature_dim=16, seq_len=4, lam=v) for v in (0.1, 50))
    kw = dict(batch_episodes=10, progress=False, partial_path=tmp_path / "partial.npz")
    batches = _Batches(monkeypatch)
    batches.interrupt(sharp, feats, m, kw["partial_path"])
    fb.evaluate(soft, feats, m, **kw)
    assert batches.calls == 6  # every batch: none of lam 0.1's was resumed

    batches.interrupt(soft, feats, m, kw["partial_path"])
    fb.evaluate(soft, feats, m, **kw)
    assert batches.calls == 3  # its own: resumed

    batches.interrupt(soft, feats, m, kw["partial_path"])
    monkeypatch.setattr(provenance, "code_digest", lambda model: "0123456789abcdef")
    fb.evaluate(soft, feats, m, **kw)
    assert batches.calls == 6  # other code: started again
