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

    def fake_extract(dataset, split, *, config, **_):
        seen["norm"] = config.norm
        raise SystemExit(0)

    monkeypatch.setattr(extract_cmd, "extract_split", fake_extract)
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
    assert names == split.class_names == ["zebra", "apple"] and bad == []


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
