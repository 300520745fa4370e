"""``eval --features CACHE --manifest M``: class names come from the cache, after checking that
the manifest's classes are the cache's classes (a manifest of another pool is refused)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fsarbench.cli.main import main
from fsarbench.episodes import ManifestError, make_manifest, manifest_class_names
from fsarbench.features.cache import FeatureCache

NAMES = ["archery", "bowling", "surfing", "diving", "rowing", "skiing"]
PER_CLASS, T, D = 4, 4, 32


def _cache(tmp_path) -> FeatureCache:
    n = len(NAMES) * PER_CLASS
    ids = np.repeat(np.arange(len(NAMES)), PER_CLASS)
    cache = FeatureCache.create(
        tmp_path / "cache",
        video_ids=[f"v{i}" for i in range(n)],
        num_views=1,
        num_frames=T,
        feature_dim=D,
        classes=[NAMES[c] for c in ids],
        class_indices=ids.tolist(),
    )
    feats = np.random.default_rng(0).random((n, T, D), dtype=np.float32)
    cache.write(np.arange(n), np.zeros(n, dtype=np.int64), feats)
    cache.flush()
    return cache


def test_names_follow_the_manifests_own_numbering():
    ids = np.repeat(np.arange(3), 4)  # the pool's classes 0, 1, 2
    manifest = make_manifest(2 - ids, way=3, shot=1, queries=1, episodes=20, seed=0)
    # manifest class k holds the pool's class 2 - k
    assert manifest_class_names(manifest, ids, ["a", "b", "c"]) == ["c", "b", "a"]


def test_a_manifest_of_another_pool_is_refused():
    ids = np.repeat(np.arange(3), 4)
    other = np.tile(np.arange(3), 4)  # the same 12 videos grouped differently
    manifest = make_manifest(other, way=3, shot=1, queries=1, episodes=20, seed=0)
    with pytest.raises(ManifestError, match="does not fit these features"):
        manifest_class_names(manifest, ids, ["a", "b", "c"])
    too_few = np.repeat(np.arange(3), 3)
    with pytest.raises(ManifestError, match="features hold 9"):
        manifest_class_names(manifest, too_few, ["a", "b", "c"])


def test_eval_runs_clip_fsar_on_a_cache_with_class_names(tmp_path, capsys):
    cache = _cache(tmp_path)
    manifest = make_manifest(cache.class_indices, way=3, shot=1, queries=1, episodes=30, seed=0)
    manifest.save(tmp_path / "m.json")
    hparams = {"text_tower": "tiny", "text_weights": "none", "mlp_dim": 32, "heads": 4}
    argv = ["eval", "clip-fsar", "--features", str(tmp_path / "cache")]
    argv += ["--manifest", str(tmp_path / "m.json"), "--hparams", json.dumps(hparams)]
    argv += ["--out", str(tmp_path / "runs")]
    assert main(argv) == 0
    assert "30 episodes" in capsys.readouterr().out


def test_eval_refuses_a_manifest_that_does_not_fit_the_cache(tmp_path, capsys):
    cache = _cache(tmp_path)
    shuffled = np.random.default_rng(1).permutation(cache.class_indices)
    manifest = make_manifest(shuffled, way=3, shot=1, queries=1, episodes=30, seed=0)
    manifest.save(tmp_path / "m.json")
    argv = ["eval", "otam", "--features", str(tmp_path / "cache")]
    argv += ["--manifest", str(tmp_path / "m.json"), "--out", str(tmp_path / "runs")]
    assert main(argv) != 0
    assert "drawn for another split or pool" in capsys.readouterr().err


def test_a_cache_with_failed_videos_serves_manifests_over_its_usable_videos(tmp_path, capsys):
    import torch

    cache = _cache(tmp_path)
    cache.mark_failed(3, 0, "corrupt: moov atom not found")
    cache.mark_failed(10, 0, "corrupt: moov atom not found")
    cache.flush()
    cache = FeatureCache.open(tmp_path / "cache")
    usable = cache.usable_videos
    assert len(usable) == len(cache) - 2
    classes = np.asarray(cache.class_indices)
    over_usable = make_manifest(classes[usable], way=3, shot=1, queries=2, episodes=40, seed=0)
    over_usable.save(tmp_path / "usable.json")
    torch.save(cache.get(usable), tmp_path / "usable.pt")  # the same videos as a bare tensor
    accuracy = {}
    for name, features in (("cache", tmp_path / "cache"), ("tensor", tmp_path / "usable.pt")):
        argv = ["eval", "protonet", "--features", str(features), "--manifest"]
        assert main([*argv, str(tmp_path / "usable.json")]) == 0
        accuracy[name] = capsys.readouterr().out.split(":")[1].split("(")[0]
    assert accuracy["cache"] == accuracy["tensor"]
    over_all = make_manifest(classes, way=3, shot=1, queries=2, episodes=40, seed=0)
    over_all.save(tmp_path / "all.json")
    argv = ["eval", "protonet", "--features", str(tmp_path / "cache"), "--manifest"]
    assert main([*argv, str(tmp_path / "all.json")]) == 2
    err = capsys.readouterr().err
    assert "uses 2 video(s)" in err and "v3, v10" in err and "usable_videos" in err


def test_an_unfinished_cache_is_refused_and_failed_videos_are_recorded(tmp_path, capsys):
    """Videos not extracted yet were left out as if they had failed: a manifest over
    ``usable_videos`` of an interrupted extraction evaluated part of the test pool, and
    the record listed no left-out video."""
    from fsarbench.results import load_records

    cache = _cache(tmp_path)
    cache.mark_failed(3, 0, "corrupt: moov atom not found")
    cache.flush()
    classes = np.asarray(cache.class_indices)
    usable = FeatureCache.open(tmp_path / "cache").usable_videos
    make_manifest(classes[usable], way=3, shot=1, queries=2, episodes=40, seed=0).save(
        tmp_path / "m.json"
    )
    argv = ["eval", "protonet", "--features", str(tmp_path / "cache")]
    argv += ["--manifest", str(tmp_path / "m.json"), "--out", str(tmp_path / "runs")]
    assert main(argv) == 0
    (record,) = load_records(tmp_path / "runs")
    assert record.skipped_videos == ["test/v3: corrupt: moov atom not found"]

    from fsarbench.features.cache import _TODO

    progress = json.loads((tmp_path / "cache" / "progress.json").read_text())
    status = list(progress["status"])
    status[5] = _TODO  # video 5 as an interrupted extraction leaves it
    progress["status"] = "".join(status)
    (tmp_path / "cache" / "progress.json").write_text(json.dumps(progress))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "extraction of" in err and "is unfinished: 1 of 24 videos" in err
