"""The on-disk feature cache: layout, reads, progress and resume semantics, keys."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import fsarbench as fb
from fsarbench.features.cache import CacheKey, FeatureCache, cache_folder, default_cache_root
from fsarbench.features.open import open_feature_store


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscribing busy shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


N, V, T, D = 6, 2, 4, 8
KEY = CacheKey(
    dataset="ucf101",
    split="test",
    split_md5="ab" * 16,
    frames="uniform",
    transform="test",
    backbone="resnet18",
    weights_id="none:seed0",
    num_frames=T,
    resolution=64,
    views=V,
    seed=0,
)


def _features(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(N, V, T, D)).astype(np.float32)


def _new(tmp_path, key: CacheKey | None = KEY) -> FeatureCache:
    return FeatureCache.create(
        tmp_path / "c",
        video_ids=[f"v{i}" for i in range(N)],
        num_views=V,
        num_frames=T,
        feature_dim=D,
        classes=["a", "b"] * (N // 2),
        class_indices=[0, 1] * (N // 2),
        key=key,
    )


def _fill(cache: FeatureCache, feats: np.ndarray) -> None:
    idx, view = np.divmod(np.arange(N * V), V)
    cache.write(idx, view, feats[idx, view])
    cache.flush()


def test_round_trip_float16_with_views(tmp_path):
    feats = _features()
    cache = _new(tmp_path)
    _fill(cache, feats)
    read = FeatureCache.open(tmp_path / "c")
    assert (len(read), read.num_views, read.feature_shape) == (N, V, (T, D))
    assert read.video_ids[2] == "v2" and read.class_indices[:2] == [0, 1]
    out = read.get(np.array([4, 1, 4]), np.array([1, 0, 0]))
    assert out.dtype == torch.float32 and out.shape == (3, T, D)
    expected = feats[[4, 1, 4], [1, 0, 0]].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_array_equal(
        read.get(torch.tensor([3])).numpy()[0], feats[3, 0].astype(np.float16).astype(np.float32)
    )
    stored = np.load(tmp_path / "c" / "features.npy", mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape == (N, V, T, D)
    assert read.is_complete and read.key == KEY.digest()


def test_unflushed_writes_do_not_count_as_done(tmp_path):
    cache = _new(tmp_path)
    cache.write(np.array([0, 1]), np.array([0, 0]), _features()[[0, 1], 0])
    assert FeatureCache.open(tmp_path / "c").done_mask.sum() == 0
    cache.flush()
    reopened = FeatureCache.open(tmp_path / "c")
    assert reopened.done_mask.sum() == 2 and reopened.done_mask[1, 0]
    with pytest.raises(KeyError, match=r"video 2 \(v2\) view 0 .*not extracted yet"):
        reopened.get(np.array([0, 2]))


def test_failed_entries_are_recorded(tmp_path):
    cache = _new(tmp_path)
    _fill(cache, _features())
    cache.mark_failed(3, 1, "moov atom not found")
    cache.flush()
    read = FeatureCache.open(tmp_path / "c")
    assert read.failed_mask[3, 1] and not read.is_complete
    assert read.errors == {"3/1": "moov atom not found"}
    np.testing.assert_array_equal(read.usable_videos, [0, 1, 2, 4, 5])
    with pytest.raises(KeyError, match="failed: moov atom not found"):
        read.get(np.array([3]), np.array([1]))
    assert read.get(np.array([3]), np.array([0])).shape == (1, T, D)


def test_read_only_and_bad_folders(tmp_path):
    cache = _new(tmp_path)
    with pytest.raises(FileExistsError):
        _new(tmp_path)
    read = FeatureCache.open(cache.path)
    with pytest.raises(PermissionError, match="read-only"):
        read.mark_failed(0, 0, "x")
    with pytest.raises(FileNotFoundError, match="fsarbench extract"):
        FeatureCache.open(tmp_path / "nothing")
    with pytest.raises(ValueError, match="T=4 frames"):
        cache.write(np.array([0]), np.array([0]), np.zeros((1, T + 1, D), np.float32))
    with pytest.raises(ValueError, match="views"):
        read.get(np.array([0, 1]), np.array([0]))
    index = json.loads((cache.path / "index.json").read_text())
    index["shape"] = [N + 1, V, T, D]
    (cache.path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="index says"):
        FeatureCache.open(cache.path)


def test_key_changes_with_every_field():
    digests = {KEY.digest()}
    for f in dataclasses.fields(CacheKey):
        value = getattr(KEY, f.name)
        changed = value + 1 if isinstance(value, int) else value + "_other"
        digests.add(dataclasses.replace(KEY, **{f.name: changed}).digest())
    assert len(digests) == 1 + len(dataclasses.fields(CacheKey))
    assert KEY.digest() == dataclasses.replace(KEY).digest()


def test_cache_folder_layout_and_env_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FSAR_CACHE", str(tmp_path / "root"))
    assert default_cache_root() == tmp_path / "root"
    assert cache_folder(KEY) == tmp_path / "root" / "features" / "ucf101" / "test" / KEY.digest()
    assert cache_folder(KEY, "/x").parts[-4:] == ("features", "ucf101", "test", KEY.digest())
    monkeypatch.delenv("FSAR_CACHE")
    assert default_cache_root().name == "fsarbench"


def test_cache_serves_the_evaluator_like_the_tensor(tmp_path):
    n, t, d = 40, 4, 16
    feats = torch.randn(n, 1, t, d, generator=torch.Generator().manual_seed(1)).half().float()
    cache = FeatureCache.create(
        tmp_path / "e",
        video_ids=[str(i) for i in range(n)],
        num_views=1,
        num_frames=t,
        feature_dim=d,
    )
    cache.write(np.arange(n), np.zeros(n, np.int64), feats[:, 0].numpy())
    cache.flush()
    store = open_feature_store(tmp_path / "e")
    assert isinstance(store, FeatureCache) and isinstance(store, fb.FeatureStore)
    manifest = fb.make_manifest(np.arange(n) % 8, way=5, shot=1, episodes=50, seed=0)
    method = fb.create_method("protonet", feature_dim=d, seq_len=t)
    from_cache = fb.evaluate(method, store, manifest)
    from_tensor = fb.evaluate(method, feats[:, 0], manifest)
    assert from_cache.accuracy == from_tensor.accuracy


def test_a_cache_the_disk_has_no_room_for_is_refused_by_name(tmp_path, monkeypatch):
    """The preallocated features file is sparse: a full disk ended the extraction with SIGBUS
    at the first write into an unbacked page. Its blocks are now allocated when it is made."""
    import errno
    import os

    from fsarbench.features.cache import CacheSpaceError

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(CacheSpaceError, match=r"no room for the feature cache .*--cache DIR"):
        _new(tmp_path)
    assert not (tmp_path / "c" / "features.npy").exists()
    assert not (tmp_path / "c" / "index.json").exists()  # nothing half-made is left to open


def test_the_features_file_is_allocated_where_the_file_system_can(tmp_path, monkeypatch):
    import errno
    import os

    calls = []
    allocate = os.posix_fallocate
    monkeypatch.setattr(os, "posix_fallocate", lambda *a: calls.append(a[1:]) or allocate(*a))
    cache = _new(tmp_path)
    size = (tmp_path / "c" / "features.npy").stat().st_size
    assert calls == [(0, size)]
    assert (tmp_path / "c" / "features.npy").stat().st_blocks * 512 >= N * V * T * D * 2

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    _fill(cache, _features())
    other = FeatureCache.create(
        tmp_path / "d", video_ids=["v0"], num_views=1, num_frames=T, feature_dim=D
    )  # a file system without allocation keeps the sparse file
    assert len(other) == 1 and other.feature_shape == (T, D)
    assert (tmp_path / "d" / "features.npy").exists()
    monkeypatch.delattr(os, "posix_fallocate")  # macOS has none: the file stays sparse
    mac = FeatureCache.create(
        tmp_path / "e", video_ids=["v0"], num_views=1, num_frames=T, feature_dim=D
    )
    assert len(mac) == 1


def test_nonfinite_cached_features_are_named_by_video_and_cache(tmp_path):
    """A NaN in a cached video was named by its pool index alone ("pool indices 5"): not
    which file, split or cache folder to re-extract."""
    from fsarbench.guards import NonFiniteFeaturesError, check_finite_features

    feats = _features()
    feats[4, 0, 2, 3] = np.nan  # view 0: the one get() reads
    cache = _new(tmp_path)
    _fill(cache, feats)
    read = FeatureCache.open(tmp_path / "c")
    got = read.get(np.arange(N))
    with pytest.raises(NonFiniteFeaturesError, match=r"\(v4 \(pool index 4\) of the cache .*c\)"):
        check_finite_features(got, np.arange(N), read)
    with pytest.raises(NonFiniteFeaturesError, match=r"\(pool index 4\):"):
        check_finite_features(got, np.arange(N))  # another store: indices only


def test_a_cache_s_data_file_given_as_a_features_file_names_its_folder(tmp_path):
    """'eval --features CACHE/features.npy' said the file "holds objects other than
    tensors" (and printed a stray '}}'); the user was to give its folder."""
    from fsarbench.features.open import FeatureFileError

    FeatureCache.create(tmp_path / "c", video_ids=["a"], num_views=1, num_frames=2, feature_dim=4)
    with pytest.raises(FeatureFileError, match=r"a feature cache's data file: give the cache's"):
        open_feature_store(tmp_path / "c" / "features.npy")
    other = tmp_path / "other.pt"
    other.write_bytes(b"not a torch file")
    with pytest.raises(FeatureFileError) as err:
        open_feature_store(other)
    assert "'video_ids': [...]} with torch.save" in str(err.value)  # one closing brace
