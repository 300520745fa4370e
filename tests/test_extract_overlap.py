"""Extraction with decoding ahead (lower-priority workers) and a background cache writer:
byte-equal caches to a synchronous loop, writer errors surface, nothing handed over is lost."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from fsarbench.features.backbones import create_backbone
from fsarbench.features.cache import FeatureCache
from fsarbench.features.extract import DECODE_NICENESS, encode_clips, extract_features
from fsarbench.features.writer import CacheWriter

T, HW = 3, 32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Clips(Dataset):
    """Seeded clips; position ``niceness_at`` reports its process's niceness as an error."""

    def __init__(self, n: int, niceness_at: int | None = None) -> None:
        self.n, self.niceness_at = n, niceness_at

    def __len__(self) -> int:
        return self.n

    def clip(self, p: int) -> torch.Tensor:
        return torch.rand(T, 3, HW, HW, generator=torch.Generator().manual_seed(p))

    def __getitem__(self, p: int) -> dict:
        if p == self.niceness_at:
            return {"clip": None, "index": p, "view": 0, "ok": False, "error": str(os.nice(0))}
        return {"clip": self.clip(p), "index": p, "view": 0, "ok": True, "error": None}


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("resnet18", weights="none", seed=0)


def _synchronous(backbone, data: Clips, batch: int) -> np.ndarray:
    """What the loop stored before the writer thread: one forward per batch, float16."""
    out = [
        encode_clips(
            backbone,
            torch.stack([data.clip(p) for p in range(lo, min(lo + batch, data.n))]),
            torch.device("cpu"),
        ).numpy()
        for lo in range(0, data.n, batch)
    ]
    return np.concatenate(out)


@pytest.mark.parametrize("workers", [0, 2])
def test_cache_is_byte_equal_to_a_synchronous_loop(tmp_path, backbone, workers):
    data = Clips(11)
    _, stats = extract_features(
        data,
        backbone,
        cache_dir=tmp_path / "c",
        num_frames=T,
        batch_size=4,
        num_workers=workers,
        progress=False,
    )
    cache = FeatureCache.open(tmp_path / "c")
    stored = cache.get(np.arange(11), np.zeros(11, dtype=np.int64)).numpy()
    assert stats.forward_seconds > 0 and stats.wait_seconds >= 0
    assert stats.forward_seconds + stats.wait_seconds <= stats.seconds
    expected = _synchronous(backbone, data, 4)
    assert expected.dtype == np.float16 and cache.is_complete
    assert stored.tobytes() == expected.astype(np.float32).tobytes()  # float16 -> 32: exact


def test_decode_workers_run_at_lower_priority(tmp_path, backbone):
    _, stats = extract_features(
        Clips(4, niceness_at=2),
        backbone,
        cache_dir=tmp_path / "c",
        num_frames=T,
        batch_size=2,
        num_workers=1,
        progress=False,
    )
    expected = min(19, os.nice(0) + DECODE_NICENESS)
    assert stats.errors == {"2/0": str(expected)} and stats.failed == 1


def test_writer_error_is_raised_in_the_loop(tmp_path):
    cache = FeatureCache.create(
        tmp_path / "c", video_ids=["a", "b"], num_views=1, num_frames=T, feature_dim=4
    )
    failed = pytest.raises(RuntimeError, match="writing the feature cache failed.*T=3")
    with failed, CacheWriter(cache, flush_every_s=1e9) as writer:
        writer.write(np.array([0]), np.array([0]), torch.zeros(1, T + 1, 4))
        for _ in range(50):  # the error surfaces at a later hand-over or at close
            writer.write(np.array([1]), np.array([0]), torch.zeros(1, T, 4))


@pytest.mark.parametrize("value", [float("nan"), 1e6])  # 1e6 overflows float16
def test_non_finite_features_are_never_cached(tmp_path, value):
    """Weights giving NaN were extracted and cached for every video without a word; the
    training error then blamed the learning rate."""
    cache = FeatureCache.create(
        tmp_path / "c", video_ids=["a", "b", "c"], num_views=1, num_frames=T, feature_dim=4
    )
    bad = torch.zeros(2, T, 4)
    bad[1, 0, 2] = value
    failed = pytest.raises(
        RuntimeError, match=r"NaN/inf features for 1 of 2 clips \(videos \['c'\]"
    )
    with failed, CacheWriter(cache, flush_every_s=1e9) as writer:
        writer.write(np.array([0]), np.array([0]), torch.zeros(1, T, 4))
        writer.write(np.array([1, 2]), np.array([0, 0]), bad)
    cache.flush()
    np.testing.assert_array_equal(FeatureCache.open(tmp_path / "c").done_mask[:, 0], [1, 0, 0])


def test_writer_stores_everything_queued_before_an_interruption(tmp_path):
    cache = FeatureCache.create(
        tmp_path / "c", video_ids=list("abcd"), num_views=1, num_frames=T, feature_dim=4
    )
    interrupted = pytest.raises(KeyboardInterrupt)
    with interrupted, CacheWriter(cache, flush_every_s=1e9, max_pending=8) as writer:
        for i in range(3):
            writer.write(np.array([i]), np.array([0]), torch.full((1, T, 4), float(i)))
        raise KeyboardInterrupt
    cache.flush()
    again = FeatureCache.open(tmp_path / "c")
    np.testing.assert_array_equal(again.done_mask[:, 0], [1, 1, 1, 0])
    assert again.get(np.array([2]), np.array([0])).flatten().tolist() == [2.0] * (T * 4)
