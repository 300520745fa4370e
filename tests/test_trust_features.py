"""Features that cannot belong to something else: the extraction settings the CLI passes,
the cache key's data identity, and one class-name table for training and evaluation."""

from __future__ import annotations

import pytest

from fsarbench.cli import extract_cmd
from fsarbench.cli.main import main


@pytest.mark.parametrize(
    ("argv", "norm"),
    [
        (["--backbone", "clip-vit-b16"], "clip"),
        (["--backbone", "dinov2-vit-s14", "--protocol", "trx"], "imagenet"),
        (["--backbone", "resnet18", "--protocol", "trx"], "none"),
        (["--backbone", "resnet18"], "imagenet"),
    ],
)
def test_extract_cli_gives_a_vit_its_own_normalisation(monkeypatch, argv, norm):
    """`extract` used the protocol's statistics for CLIP and DINOv2 towers (as if the user had
    chosen them); `run` already gave them their own."""
    seen = {}

    def fake_extract(name, split, *, config, **_):
        seen["norm"] = config.norm
        raise SystemExit(0)

    monkeypatch.setattr(extract_cmd, "extract_reusing", fake_extract)
    with pytest.raises(SystemExit):
        main(["extract", "synth", "--split", "test", *argv])
    assert seen["norm"] == norm


@pytest.mark.video
def test_the_cache_key_tells_generated_datasets_apart(tmp_path):
    """Two synths of other seeds or sizes list the same (video id, class) pairs; the second
    was served the first one's features."""
    from fsarbench.data.datasets import get_dataset
    from fsarbench.data.synth import SynthConfig
    from fsarbench.features.extract import SplitExtractConfig, extract_split

    small = SynthConfig(videos_per_class=1, size=16, min_frames=4, max_frames=5)
    config = SplitExtractConfig(
        backbone="resnet18",
        weights="none",
        num_frames=2,
        resolution=16,
        workers=0,
        progress=False,
    )
    caches = []
    for seed, size in ((0, 16), (1, 16), (0, 24)):
        cfg = SynthConfig(**{**small.__dict__, "size": size})
        ds = get_dataset("synth", root=tmp_path / "synth", seed=seed, config=cfg)
        cache, stats = extract_split(
            "synth", "test", config=config, dataset=ds, cache_root=tmp_path / "cache"
        )
        assert stats is not None  # extracted, not served from another synth's cache
        caches.append(cache)
    assert len({c.path for c in caches}) == 3
    assert caches[0].index["key_fields"]["data"].startswith("synth-v1-seed0:")


def test_training_and_evaluation_share_one_class_name_table(tmp_path):
    """A dataset whose class ids are not in sorted-name order: evaluation got the sorted
    names, training the cache's table, so CLIP-FSAR paired text with other classes."""
    import numpy as np

    from fsarbench.experiments.features import split_features
    from fsarbench.features.cache import FeatureCache

    class Cache:
        classes = ["zebra", "zebra", "apple", "apple"]
        class_indices = [0, 0, 1, 1]
        video_ids = ["z0", "z1", "a0", "a1"]
        failed_mask = np.zeros(4, bool)

        def __len__(self):
            return 4

        def class_name_table(self):
            return FeatureCache.class_name_table(self)

    assert Cache().class_name_table() == ["zebra", "apple"]
    split, names, bad = split_features(Cache(), "toy")
    assert names == split.class_names == ["zebra", "apple"] and bad == {}


def test_only_a_broken_video_becomes_a_failed_entry():
    """A transform bug was recorded as an unreadable video, so every video it hit left every
    split quietly; it now stops the extraction."""
    import numpy as np

    from fsarbench.data.decode import VideoDecodeError
    from fsarbench.features.extract import _Entries

    class Clips:
        def __init__(self, error):
            self.error = error

        def __getitem__(self, p):
            raise self.error

    broken = _Entries(Clips(VideoDecodeError("v.mp4", "truncated")), np.arange(2), 1)[1]
    assert broken["ok"] is False and "truncated" in broken["error"]
    with pytest.raises(ValueError, match="crop 24 is larger"):
        _Entries(Clips(ValueError("crop 24 is larger than the frame")), np.arange(2), 1)[0]


def test_a_float32_extraction_keeps_its_cache_key():
    """Adding the precision to the key must not orphan every float32 cache made before (the
    digest below is the one the code before the change gave this key)."""
    from fsarbench.features.cache import CacheKey

    fields = dict(
        dataset="ucf101",
        split="test",
        split_md5="0" * 32,
        frames="tsn:test",
        transform="seed-test",
        backbone="resnet50",
        weights_id="imagenet:abc",
        num_frames=8,
        resolution=224,
        views=1,
        seed=0,
        code="c0de",
        data="ucf101:1234",
    )
    assert CacheKey(**fields).digest() == "f9c854f6101c6e3a"
    assert CacheKey(**fields, precision="fp16").digest() != "f9c854f6101c6e3a"
    assert (
        CacheKey(**fields, precision="bf16").digest()
        != CacheKey(**fields, precision="fp16").digest()
    )


def test_the_extraction_precision_is_resolved_per_device_and_checked():
    """float16 autocast on CUDA and float32 on the CPU made different features under one
    key: a GPU-made cache was served to a CPU run as its own."""
    from fsarbench.features.extract import SplitExtractConfig, resolve_precision

    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="unknown extraction precision 'fp8'"):
        SplitExtractConfig(precision="fp8")


@pytest.mark.video
def test_a_cache_is_tied_to_the_precision_that_made_it(tmp_path):
    """The same split extracted in float32 and in bf16 autocast (CPU) gets two caches with
    other numbers; asking one key with another precision is refused."""
    import dataclasses

    import numpy as np

    from fsarbench.data.datasets import get_dataset
    from fsarbench.data.synth import SynthConfig
    from fsarbench.features.backbones import create_backbone
    from fsarbench.features.extract import (
        SplitExtractConfig,
        clip_dataset,
        extract_features,
        extract_split,
    )

    cfg = SynthConfig(videos_per_class=1, size=16, min_frames=4, max_frames=5)
    ds = get_dataset("synth", root=tmp_path / "synth", seed=0, config=cfg)
    config = SplitExtractConfig(
        backbone="resnet18", weights="none", num_frames=2, resolution=16, workers=0, progress=False
    )
    fp32, _ = extract_split("synth", "test", config=config, dataset=ds, cache_root=tmp_path / "c")
    bf16, stats = extract_split(
        "synth",
        "test",
        config=dataclasses.replace(config, precision="bf16"),
        dataset=ds,
        cache_root=tmp_path / "c",
    )
    assert stats is not None and bf16.path != fp32.path
    assert bf16.index["key_fields"]["precision"] == "bf16"
    assert not np.array_equal(fp32.get([0]).numpy(), bf16.get([0]).numpy())
    clips = clip_dataset(ds.videos("test"), config.resolved("test"), pixels=True)
    with pytest.raises(ValueError, match="precision 'bf16'.*'fp32' on cpu"):
        extract_features(
            clips,
            create_backbone("resnet18", weights="none"),
            cache_dir=bf16.path,
            num_frames=2,
            video_ids=bf16.video_ids,
            key=_key_of(bf16),
            num_workers=0,
            progress=False,
            normalise=clips.transform.pixel_norm(),
        )


def _key_of(cache):
    from fsarbench.features.cache import CacheKey

    return CacheKey(**cache.index["key_fields"])


@pytest.mark.parametrize(
    ("cuda", "bf16", "amp", "expected"),
    [
        (False, True, True, "fp32"),
        (True, True, True, "bf16"),
        (True, False, True, "fp16"),
        (True, True, False, "fp32"),
    ],
)
def test_finetune_test_features_are_extracted_in_the_training_precision(
    monkeypatch, cuda, bf16, amp, expected
):
    """The finetune track's test extraction always ran fp16 autocast on CUDA, whatever the
    training's `amp` and precision (bf16, or float32 with amp=false)."""
    import torch

    from fsarbench.experiments.tracks import training_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert training_precision("cuda" if cuda else "cpu", amp) == expected


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_finetune_records_identity_names_its_test_features_precision(precision):
    """The test features' precision (bf16 on one GPU, fp16 on another, fp32 on the CPU) was
    in no record identity: eval of a GPU-trained model elsewhere replaced train's record
    with another precision's number. fp32 is left unnamed (the CPU's records keep their id)."""
    from fsarbench.training.finetune_recipe import record_identity

    recipe = {"recipe": {}, "options": {"backbone": "resnet50", "weights": "w"}}
    _, features = record_identity(recipe, {"test": "abc"}, precision)
    plain = {"backbone": "resnet50", "weights": "w", "split_md5": {"test": "abc"}}
    assert features == (plain if precision == "fp32" else {**plain, "precision": precision})


class _CopiedVideos:
    """A dataset read from a copy of a small synth's files under ``root``, listed as a
    published dataset is (its split md5 hashes the list, not the files)."""

    name = variant = "copied"
    flip_ok = False

    def __init__(self, inner, root) -> None:
        self.inner, self.root = inner, root

    def class_names(self, split):
        return self.inner.class_names(split)

    def videos(self, split):
        import dataclasses

        return [
            dataclasses.replace(v, path=self.root / v.path.relative_to(self.inner.path))
            for v in self.inner.videos(split)
        ]

    def split_md5s(self):
        return {"train": "list-md5", "val": "list-md5", "test": "list-md5"}


def test_the_cache_key_names_the_files_of_a_listed_dataset(tmp_path):
    """A published dataset's cache was keyed by its split list alone: a run on other files
    under another --root (noise in place of the videos) was served the first files'
    features and printed 100.00 ± 0.00 where a fresh cache gives 23.50."""
    import shutil

    from fsarbench.data.datasets import get_dataset
    from fsarbench.data.synth import SynthConfig
    from fsarbench.features.extract import SplitExtractConfig, extract_split

    small = SynthConfig(videos_per_class=1, size=16, min_frames=4, max_frames=5)
    inner = get_dataset("synth", root=tmp_path / "synth", config=small)
    inner.videos("test")
    config = SplitExtractConfig(
        backbone="resnet18", weights="none", num_frames=2, resolution=16, workers=0, progress=False
    )

    def extract(root):
        ds = _CopiedVideos(inner, root)
        return extract_split("copied", "test", config=config, dataset=ds, cache_root=tmp_path / "c")

    for name in ("a", "b"):
        shutil.copytree(inner.path, tmp_path / name)  # copy2: same sizes and times
    first, stats = extract(tmp_path / "a")
    assert stats is not None
    same, stats = extract(tmp_path / "b")  # the same files (sizes and times) elsewhere
    assert stats is None and same.path == first.path
    videos = _CopiedVideos(inner, tmp_path / "b").videos("test")
    shutil.copyfile(videos[1].path, videos[0].path)  # another video's bytes in its place
    replaced, stats = extract(tmp_path / "b")
    assert stats is not None and replaced.path != first.path
    videos[2].path.unlink()
    missing, stats = extract(tmp_path / "b")
    assert stats is not None and missing.path not in (first.path, replaced.path)


def test_a_frame_folder_re_extracted_in_place_gets_new_features(tmp_path):
    """A folder of JPEG frames was stamped by its own modification time, which rewriting
    its frames in place (same names, same count) leaves as it was: the cache served the old
    frames' features."""
    import os

    import numpy as np
    from PIL import Image

    from fsarbench.data.datasets import VideoRecord
    from fsarbench.features.extract import SplitExtractConfig, extract_split

    root = tmp_path / "frames"
    videos = [VideoRecord(f"v{i}", f"c{i % 2}", i % 2, root / f"v{i}") for i in range(4)]

    def write_frames(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for v in videos:
            v.path.mkdir(parents=True, exist_ok=True)
            for k in range(6):
                frame = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                Image.fromarray(frame).save(v.path / f"{k:05d}.jpg")
            os.utime(v.path, ns=(1, 1))  # the folder's own time as it was before

    class Frames:
        name = variant = "frames"
        flip_ok = True

        def videos(self, split):
            return videos

        def split_md5s(self):
            return {"test": "list-md5"}

    config = SplitExtractConfig(
        backbone="resnet18", weights="none", num_frames=2, resolution=16, workers=0, progress=False
    )

    def extract():
        return extract_split(
            "frames", "test", config=config, dataset=Frames(), cache_root=tmp_path / "c"
        )

    write_frames(0)
    first, _ = extract()
    old = first.get(np.arange(4)).numpy()
    write_frames(1)
    second, stats = extract()
    assert stats is not None and second.path != first.path
    assert not np.allclose(second.get(np.arange(4)).numpy(), old)
