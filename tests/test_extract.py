"""Feature extraction: equality with a per-video loop, failures, resume, split driver, CLI."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from fsarbench.cli.main import main as cli_main
from fsarbench.features.backbones import create_backbone
from fsarbench.features.cache import FeatureCache
from fsarbench.features.extract import (
    SplitExtractConfig,
    collate_clips,
    exclusive,
    extract_features,
    extract_split,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscribing busy shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


T, HW = 3, 32


class SynthClips(Dataset):
    """Clips ``[T, 3, HW, HW]`` drawn from the position; ``bad`` videos are unreadable,
    ``raising`` videos make ``__getitem__`` raise. Counts the positions it served."""

    def __init__(self, n: int, views: int = 1, bad=(), raising=()) -> None:
        self.n, self.views, self.bad, self.raising = n, views, set(bad), set(raising)
        self.served: list[int] = []

    def __len__(self) -> int:
        return self.n * self.views

    def clip(self, p: int) -> torch.Tensor:
        return torch.rand(T, 3, HW, HW, generator=torch.Generator().manual_seed(p))

    def __getitem__(self, p: int) -> dict:
        self.served.append(p)
        i, v = divmod(p, self.views)
        if i in self.raising:
            raise OSError(f"cannot open video {i}")
        if i in self.bad:
            return {"clip": None, "index": i, "view": v, "ok": False, "error": "corrupt"}
        return {"clip": self.clip(p), "index": i, "view": v, "ok": True, "error": None}


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("resnet18", weights="none", seed=0)


def _reference(backbone, data: SynthClips) -> np.ndarray:
    """The obviously-correct version: one video at a time, float32 ``[N, V, T, D]``."""
    out = np.zeros((data.n, data.views, T, backbone.feature_dim), np.float32)
    with torch.inference_mode():
        for p in range(len(data)):
            i, v = divmod(p, data.views)
            out[i, v] = backbone(data.clip(p)).numpy()
    return out


def _all(cache: FeatureCache) -> np.ndarray:
    idx, view = np.divmod(np.arange(len(cache) * cache.num_views), cache.num_views)
    return cache.get(idx, view).numpy().reshape(len(cache), cache.num_views, T, -1)


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_extraction_equals_per_video_loop(tmp_path, backbone, workers):
    data = SynthClips(7, views=2)
    cache, stats = extract_features(
        data,
        backbone,
        cache_dir=tmp_path / "c",
        num_frames=T,
        num_views=2,
        batch_size=3,
        num_workers=workers,
        progress=False,
    )
    assert (stats.entries, stats.written, stats.failed, stats.frames) == (14, 14, 0, 14 * T)
    assert cache.is_complete and cache.video_ids == [str(i) for i in range(7)]
    np.testing.assert_allclose(
        _all(FeatureCache.open(cache.path)), _reference(backbone, data), rtol=2e-3, atol=2e-3
    )


def test_unreadable_videos_are_recorded_and_retried(tmp_path, backbone):
    data = SynthClips(5, bad=[1], raising=[3])
    cache, stats = extract_features(
        data,
        backbone,
        cache_dir=tmp_path / "c",
        num_frames=T,
        batch_size=2,
        num_workers=0,
        progress=False,
    )
    assert (stats.written, stats.failed) == (3, 2)
    assert stats.errors == {"1/0": "corrupt", "3/0": "OSError: cannot open video 3"}
    np.testing.assert_array_equal(FeatureCache.open(cache.path).usable_videos, [0, 2, 4])
    fixed = SynthClips(5)
    cache, stats = extract_features(
        fixed,
        backbone,
        cache_dir=tmp_path / "c",
        num_frames=T,
        batch_size=2,
        num_workers=0,
        progress=False,
    )
    assert sorted(fixed.served) == [1, 3] and stats.already_done == 3
    assert cache.is_complete and cache.errors == {}
    np.testing.assert_allclose(_all(cache), _reference(backbone, fixed), rtol=2e-3, atol=2e-3)


class _Interrupting(torch.nn.Module):
    """Wraps a backbone and raises KeyboardInterrupt on forward call number ``at``."""

    def __init__(self, inner, at: int) -> None:
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0
        self.feature_dim = inner.feature_dim

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.inner(x)


def test_interrupted_extraction_resumes_to_the_same_features(tmp_path, backbone):
    data = SynthClips(8)
    with pytest.raises(KeyboardInterrupt):
        extract_features(
            data,
            _Interrupting(backbone, at=3),
            cache_dir=tmp_path / "c",
            num_frames=T,
            batch_size=2,
            num_workers=0,
            flush_every_s=1e9,
            progress=False,
        )
    partial = FeatureCache.open(tmp_path / "c")
    np.testing.assert_array_equal(partial.done_mask[:, 0], [1, 1, 1, 1, 0, 0, 0, 0])
    again = SynthClips(8)
    cache, stats = extract_features(
        again,
        backbone,
        cache_dir=tmp_path / "c",
        num_frames=T,
        batch_size=2,
        num_workers=0,
        progress=False,
    )
    assert sorted(again.served) == [4, 5, 6, 7]
    assert (stats.already_done, stats.written) == (4, 4)
    np.testing.assert_allclose(_all(cache), _reference(backbone, data), rtol=2e-3, atol=2e-3)


def test_resume_refuses_other_settings(tmp_path, backbone):
    extract_features(
        SynthClips(2),
        backbone,
        cache_dir=tmp_path / "c",
        num_frames=T,
        num_workers=0,
        progress=False,
    )
    with pytest.raises(ValueError, match="other videos or settings"):
        extract_features(
            SynthClips(3),
            backbone,
            cache_dir=tmp_path / "c",
            num_frames=T,
            num_workers=0,
            progress=False,
        )


def test_dataset_positions_must_match_entries(tmp_path, backbone):
    class Shuffled(SynthClips):
        def __getitem__(self, p):
            return {**super().__getitem__(p), "index": (p + 1) % self.n}

    with pytest.raises(ValueError, match="position 0 yielded video 1"):
        extract_features(
            Shuffled(3),
            backbone,
            cache_dir=tmp_path / "c",
            num_frames=T,
            num_workers=0,
            progress=False,
        )
    with pytest.raises(ValueError, match="multiple of views=2"):
        extract_features(
            SynthClips(3),
            backbone,
            cache_dir=tmp_path / "d",
            num_frames=T,
            num_views=2,
            num_workers=0,
            progress=False,
        )


def test_one_writer_per_cache(tmp_path, backbone, monkeypatch):
    from fsarbench.locks import LockTimeout

    monkeypatch.setenv("FSAR_LOCK_TIMEOUT", "0.2")
    held_by = f"held by pid {os.getpid()}|locked after 0 s by pid {os.getpid()}"
    with exclusive(tmp_path / "c"), pytest.raises(LockTimeout, match=held_by):
        extract_features(
            SynthClips(2),
            backbone,
            cache_dir=tmp_path / "c",
            num_frames=T,
            num_workers=0,
            progress=False,
        )
    _, stats = extract_features(
        SynthClips(2),
        backbone,
        cache_dir=tmp_path / "c",
        num_frames=T,
        num_workers=0,
        progress=False,
    )
    assert stats.written == 2


def test_collate_rejects_mixed_shapes():
    items = [
        {"clip": torch.zeros(T, 3, 8, 8), "index": 0, "view": 0, "ok": True, "error": None},
        {"clip": torch.zeros(T, 3, 9, 9), "index": 1, "view": 0, "ok": True, "error": None},
    ]
    with pytest.raises(ValueError, match="share one shape"):
        collate_clips(items)


# ---- extract_split and the CLI, through fsarbench.data's ClipDataset on generated mp4s -------


def _write_mp4(path, frames: np.ndarray) -> None:
    """``frames uint8 [n, H, W, 3]`` as an mpeg4 file (PyAV)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=12)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Five records: three readable mp4s, one too short, one corrupt file."""
    from fsarbench.data.datasets import VideoRecord

    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    records = []
    for i, n in enumerate([12, 10, 16, 2, 0]):
        path = folder / f"v{i}.mp4"
        if n:
            _write_mp4(path, rng.integers(0, 256, (n, 48, 64, 3), dtype=np.uint8))
        else:
            path.write_bytes(b"not a video at all")
        records.append(VideoRecord(f"v{i}", f"c{i % 2}", i % 2, path))
    return records


@pytest.fixture
def toy_dataset(monkeypatch, videos):
    """``get_dataset("toy")`` serves the generated videos as its test split."""
    import fsarbench.data.datasets as datasets

    class Toy:
        variant = "toy-v1"

        def videos(self, split):
            assert split == "test"
            return videos

        def split_md5s(self):
            return {"test": "toy-test-md5"}

    real = datasets.get_dataset
    monkeypatch.setattr(
        datasets, "get_dataset", lambda name, **kw: Toy() if name == "toy" else real(name, **kw)
    )
    monkeypatch.setenv("FSAR_PROGRESS", "0")
    return videos


CONFIG = SplitExtractConfig(
    backbone="resnet18",
    weights="none",
    num_frames=T,
    resolution=HW,
    workers=0,
    batch_size=2,
    progress=False,
)


@pytest.mark.video
def test_extract_split_through_clip_dataset(tmp_path, backbone, toy_dataset):
    cache, stats = extract_split("toy", "test", cache_root=tmp_path, config=CONFIG)
    assert cache.path.parent == tmp_path / "features" / "toy" / "test"
    assert (stats.written, stats.failed) == (3, 2)
    assert "v3.mp4" in cache.errors["3/0"] and "v4.mp4" in cache.errors["4/0"]
    assert cache.classes == ["c0", "c1", "c0", "c1", "c0"] and cache.class_indices[1] == 1
    from fsarbench.features.extract import clip_dataset

    clips = clip_dataset(toy_dataset, CONFIG.resolved("test"))
    with torch.inference_mode():
        expected = np.stack([backbone(clips[i]["clip"]).numpy() for i in range(3)])
    assert clips[0]["clip"].shape == (T, 3, HW, HW)
    np.testing.assert_allclose(cache.get(np.arange(3)).numpy(), expected, rtol=2e-3, atol=2e-3)
    again, stats = extract_split("toy", "test", cache_root=tmp_path, config=CONFIG)
    assert again.path == cache.path and stats.written == 0 and stats.already_done == 3
    assert stats.failed == 2  # the unreadable videos were tried again
    # processes reading another's cache take its failures as they are (a retry that decodes
    # on one rank and not another gave the ranks other test sets)
    kept, stats = extract_split(
        "toy", "test", cache_root=tmp_path, config=CONFIG, retry_failed=False
    )
    assert kept.path == cache.path and (stats.written, stats.failed) == (0, 0)
    from fsarbench.experiments.features import split_features

    # the frozen track's records list each left-out video with the extraction's error
    usable, _, bad = split_features(again, "toy-v1")
    assert len(usable.classes) == 3 and list(bad) == ["v3", "v4"]
    assert "v3.mp4" in bad["v3"] and "v4.mp4" in bad["v4"] and "\n" not in bad["v4"]


@pytest.mark.video
def test_extract_split_key_follows_settings(tmp_path, toy_dataset):
    import dataclasses

    first, _ = extract_split("toy", "test", cache_root=tmp_path, config=CONFIG)
    other, _ = extract_split(
        "toy",
        "test",
        cache_root=tmp_path,
        config=dataclasses.replace(CONFIG, seed=1, train=True, views=2),
    )
    assert other.path != first.path and other.num_views == 2
    assert other.index["key_fields"]["frames"] == "tsn:train"
    assert other.index["key_fields"]["transform"] == "seed-train"
    assert not np.array_equal(other.get([0], [0]).numpy(), other.get([0], [1]).numpy())


@pytest.mark.video
def test_cli_extract(tmp_path, toy_dataset, capsys):
    argv = [
        "extract",
        "toy",
        "--split",
        "test",
        "--backbone",
        "resnet18",
        "--weights",
        "none",
        "--num-frames",
        str(T),
        "--resolution",
        str(HW),
        "--cache",
        str(tmp_path),
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    assert cli_main(argv) == 1  # two unreadable videos
    out = capsys.readouterr()
    assert "3 clips extracted" in out.out and "failed: v4" in out.err


def test_cli_missing_weights_is_a_clear_error(tmp_path, toy_dataset, capsys, monkeypatch):
    monkeypatch.setenv("FSAR_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    argv = ["extract", "toy", "--backbone", "resnet18", "--cache", str(tmp_path)]
    assert cli_main(argv) == 2
    assert "resnet18-f37072fd.pth" in capsys.readouterr().err


def test_half_precision_extraction_on_the_cpu_warns(tmp_path, toy_dataset, monkeypatch, caplog):
    """fp16 on the CPU ran ~30x slower than fp32 (74 min for 280 clips) without a word."""
    monkeypatch.setenv("FSAR_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    argv = ["extract", "toy", "--backbone", "resnet18", "--cache", str(tmp_path)]
    with caplog.at_level("WARNING"):
        cli_main([*argv, "--device", "cpu", "--precision", "fp16"])  # stops at the weights
        assert "--precision fp16 on the CPU" in caplog.text
        caplog.clear()
        cli_main([*argv, "--device", "cpu", "--precision", "fp32"])
        assert "on the CPU" not in caplog.text


@pytest.mark.video
def test_augmented_train_views_are_reproducible(tmp_path, toy_dataset):
    """Random train views are drawn from the seed and the video, not from worker timing: a
    second extraction elsewhere, with DataLoader workers, stores the same numbers."""
    import dataclasses

    config = dataclasses.replace(CONFIG, train=True, views=2)
    first, _ = extract_split("toy", "test", cache_root=tmp_path / "a", config=config)
    second, _ = extract_split(
        "toy", "test", cache_root=tmp_path / "b", config=dataclasses.replace(config, workers=2)
    )
    assert first.path.name == second.path.name  # workers are not part of the key
    done = np.arange(3)  # v3 (too short) and v4 (corrupt) are recorded failures
    for view in (0, 1):
        views = [view] * len(done)
        np.testing.assert_array_equal(
            first.get(done, views).numpy(), second.get(done, views).numpy()
        )


def test_decode_workers_default_to_two_on_the_cpu_and_to_the_spare_cores_on_cuda(monkeypatch):
    import os

    from fsarbench.data.workers import default_workers

    assert default_workers("cpu") == 2 and default_workers("cpu", ranks=8) == 2
    cases = {(16, 1): 12, (64, 1): 12, (8, 1): 6, (4, 1): 2, (1, 1): 2, (64, 8): 6, (32, 8): 2}
    for (cores, ranks), expected in cases.items():
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert default_workers("cuda", ranks) == expected, (cores, ranks)


@pytest.mark.video
def test_extract_split_without_workers_uses_the_device_default(tmp_path, toy_dataset, monkeypatch):
    import dataclasses

    from fsarbench.features import extract as ex

    asked = []
    real = ex.extract_features
    monkeypatch.setattr(
        ex, "extract_features", lambda *a, **kw: asked.append(kw["num_workers"]) or real(*a, **kw)
    )
    monkeypatch.setattr(ex, "default_workers", lambda device: 1)
    extract_split(
        "toy", "test", cache_root=tmp_path, config=dataclasses.replace(CONFIG, workers=None)
    )
    assert asked == [1]


def test_a_negative_worker_count_is_refused_before_any_extraction():
    with pytest.raises(ValueError, match="decode workers must be >= 0"):
        SplitExtractConfig(workers=-1)


@pytest.mark.parametrize("split", ["test", "train"])
def test_extract_defaults_to_the_cache_run_reads(split, monkeypatch, tmp_path):
    """'extract synth' asked for ResNet-50 ImageNet weights at 224 px with one view, a cache
    'run' (resnet18, no weights, 64 px, 2 train views on synth) never read."""
    import fsarbench.cli.extract_cmd as extract_cmd
    import fsarbench.experiments.cache_reuse as cache_reuse
    from fsarbench.data.datasets import get_dataset
    from fsarbench.data.protocols import get_protocol
    from fsarbench.experiments.features import FrozenFeatureProvider, feature_preset
    from fsarbench.features.extract import _resolve_split

    keys = []

    class Stop(Exception):
        """Nothing is extracted: the cache key is what is compared."""

    def capture(name, split_name, *, dataset, config, cache_root=None):
        keys.append(_resolve_split(name, split_name, dataset, config)[3].digest())
        raise Stop

    monkeypatch.setattr(extract_cmd, "extract_reusing", capture)
    monkeypatch.setattr(cache_reuse, "extract_reusing", capture)
    argv = ["extract", "synth", "--split", split, "--cache", str(tmp_path), "--device", "cpu"]
    with pytest.raises(Stop):
        cli_main(argv)
    provider = FrozenFeatureProvider(cache_root=tmp_path, progress=False, device="cpu")
    preset = feature_preset("synth", provider.overrides)
    protocol = get_protocol(provider.protocol, "synth")
    with pytest.raises(Stop):  # what the provider extracts for this split
        provider._extract(get_dataset("synth"), "synth", split, preset, protocol)
    assert keys[0] == keys[1]
