"""A split whose files changed gets a new cache that starts from the earlier cache's features
of its unchanged videos: only the changed videos are extracted, and every feature equals a
fresh extraction's."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from fsarbench.data.datasets import get_dataset
from fsarbench.data.synth import SynthConfig
from fsarbench.experiments.cache_reuse import STAMPS_FILE, reuse_unchanged_videos
from fsarbench.features.extract import SplitExtractConfig, extract_split


@pytest.fixture()
def synth(tmp_path):
    small = SynthConfig(videos_per_class=1, size=16, min_frames=4, max_frames=5)
    ds = get_dataset("synth", root=tmp_path / "synth", config=small)
    ds.videos("test")
    return ds


def _config(**change) -> SplitExtractConfig:
    base = dict(
        backbone="resnet18", weights="none", num_frames=2, resolution=16, workers=0, progress=False
    )
    return SplitExtractConfig(**{**base, **change})


def _extract(ds, root, config=None, split="test"):
    config = config or _config()
    reused = reuse_unchanged_videos("synth", split, dataset=ds, config=config, cache_root=root)
    cache, stats = extract_split("synth", split, dataset=ds, config=config, cache_root=root)
    return reused, cache, stats


def _features(cache) -> np.ndarray:
    """``[N, V, T, D]``: every view of every video."""
    n = len(cache)
    views = [cache.get(np.arange(n), np.full(n, v)).numpy() for v in range(cache.num_views)]
    return np.stack(views, 1)


@pytest.mark.parametrize(("split", "views"), [("test", 1), ("train", 3)])
def test_only_changed_videos_are_extracted_and_features_equal_a_fresh_cache(
    synth, tmp_path, split, views
):
    config = _config(views=views, train=split == "train")
    videos = synth.videos(split)
    n = len(videos)
    reused, first, stats = _extract(synth, tmp_path / "c", config, split)
    assert reused == 0 and stats.written == n * views
    before = _features(first)

    os.utime(videos[0].path, ns=(10**18, 10**18))  # touched: same bytes, another stamp
    shutil.copyfile(videos[2].path, videos[1].path)  # replaced by another video's bytes
    reused, second, stats = _extract(synth, tmp_path / "c", config, split)
    assert second.path != first.path
    assert reused == n - 2
    assert (stats.written, stats.already_done) == (2 * views, (n - 2) * views)

    # augmented train views too: each entry's draws do not depend on what else is extracted
    fresh = _extract(synth, tmp_path / "fresh", config, split)[1]
    np.testing.assert_array_equal(_features(second), _features(fresh))
    assert not np.array_equal(_features(second)[1], before[1])
    # the earlier cache is only read: a process still using it keeps its features
    np.testing.assert_array_equal(_features(first), before)
    assert first.is_complete


def test_nothing_is_reused_without_stamps_or_across_settings(synth, tmp_path):
    videos = synth.videos("test")
    first = _extract(synth, tmp_path / "c")[1]
    (first.path / STAMPS_FILE).unlink()  # a cache whose files no stamp vouches for
    os.utime(videos[0].path, ns=(10**18, 10**18))
    reused, _, stats = _extract(synth, tmp_path / "c")
    assert reused == 0 and stats.written == len(videos)

    os.utime(videos[1].path, ns=(2 * 10**18, 2 * 10**18))
    reused, _, stats = _extract(synth, tmp_path / "c", _config(resolution=24))
    assert reused == 0 and stats.written == len(videos)  # other settings: other features


def test_a_missing_video_is_left_out_and_the_rest_reused(synth, tmp_path):
    videos = synth.videos("test")
    _extract(synth, tmp_path / "c")
    videos[3].path.unlink()
    reused, cache, stats = _extract(synth, tmp_path / "c")
    assert reused == len(videos) - 1 and stats.failed == 1
    assert cache.failed_mask[3].all() and cache.done_mask.sum() == len(videos) - 1


def test_a_file_replaced_while_stamping_is_never_vouched_for(synth, tmp_path, monkeypatch):
    """Review: the per-video stamps were taken in a second look at the files, after the
    key's; a video replaced in between was written into a cache made without stamps as if
    its old features came from the new file, and the next cache copied them."""
    import fsarbench.experiments.cache_reuse as cache_reuse

    videos = synth.videos("test")
    first = _extract(synth, tmp_path / "c")[1]
    before = _features(first)
    (first.path / STAMPS_FILE).unlink()  # a cache made before stamps were kept
    resolve = cache_reuse._resolve_split

    def replaced_after_the_key(*args):
        out = resolve(*args)
        shutil.copyfile(videos[2].path, videos[1].path)  # re-downloaded, renamed into place
        return out

    monkeypatch.setattr(cache_reuse, "_resolve_split", replaced_after_the_key)
    reused, second, stats = _extract(synth, tmp_path / "c")
    monkeypatch.undo()
    assert reused == 0 and not (first.path / STAMPS_FILE).exists()
    assert stats.written == len(videos)  # no earlier features vouched for: all extracted
    fresh = _extract(synth, tmp_path / "fresh")[1]
    np.testing.assert_array_equal(_features(second), _features(fresh))
    assert not np.array_equal(_features(second)[1], before[1])
    # once looked at again, the new cache's stamps are kept and it serves later reuse
    assert _extract(synth, tmp_path / "c")[0] == 0 and (second.path / STAMPS_FILE).exists()
    os.utime(videos[0].path, ns=(10**18, 10**18))
    assert _extract(synth, tmp_path / "c")[0] == len(videos) - 1


def test_extract_reusing_opens_a_complete_cache_after_one_look_and_reuses_otherwise(
    synth, tmp_path, monkeypatch
):
    """`run` and `extract` go through extract_reusing: a complete, stamped cache is opened
    without a second stat pass over the split (extract_split's own), a changed split reuses."""
    import fsarbench.experiments.cache_reuse as cache_reuse

    videos = synth.videos("test")
    config, root = _config(), tmp_path / "c"

    def run():
        return cache_reuse.extract_reusing(
            "synth", "test", dataset=synth, config=config, cache_root=root
        )

    first, stats = run()
    assert stats.written == len(videos) and (first.path / STAMPS_FILE).exists()

    def no_extract(*args, **kwargs):
        raise AssertionError("extract_split called for a complete, stamped cache")

    with monkeypatch.context() as m:
        m.setattr(cache_reuse, "extract_split", no_extract)
        again, stats = run()
    assert stats is None and again.path == first.path
    os.utime(videos[0].path, ns=(10**18, 10**18))
    second, stats = run()
    assert (stats.written, stats.already_done) == (1, len(videos) - 1)
    np.testing.assert_array_equal(_features(second), _features(first))


@pytest.mark.parametrize("real", [True, False])
def test_another_copy_of_a_real_datasets_list_reuses_the_features(
    synth, tmp_path, monkeypatch, real
):
    """HyRSM's copy of the HMDB51 lists (the same videos in the same order, another md5)
    re-extracted every video. A real dataset's features are its files'; a generated one's
    list md5 is what tells its files apart, so it keeps needing an equal md5."""
    import fsarbench.experiments.cache_reuse as reuse_mod

    monkeypatch.setattr(reuse_mod, "is_synthetic", lambda name: not real)
    videos = synth.videos("test")
    first = _extract(synth, tmp_path / "c")[1]
    md5s = synth.split_md5s()
    monkeypatch.setattr(synth, "split_md5s", lambda: {**md5s, "test": "another list copy"})
    reused, second, stats = _extract(synth, tmp_path / "c")
    assert second.path != first.path  # the list's md5 is part of the key
    assert reused == (len(videos) if real else 0)
    written = 0 if stats is None else stats.written  # None: complete, nothing extracted
    assert written == (0 if real else len(videos))
    np.testing.assert_array_equal(_features(second), _features(first))


def test_a_reuse_cut_short_is_finished_by_the_next_run(synth, tmp_path, monkeypatch):
    """The new cache's index was written before the copy and nothing was kept until its end:
    a Ctrl-C, kill or full disk there left a cache the next run never copied into again, and
    every video was extracted once more (280 of 280 clips instead of 1)."""
    import fsarbench.experiments.cache_reuse as cache_reuse

    videos = synth.videos("test")
    n = len(videos)
    _extract(synth, tmp_path / "c")
    os.utime(videos[0].path, ns=(10**18, 10**18))
    copy = cache_reuse._copy

    def cut_short(earlier, cache, indices):
        copy(earlier, cache, indices[: len(indices) // 2])  # half copied and kept, then:
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_reuse, "_copy", cut_short)
    with pytest.raises(KeyboardInterrupt):
        _extract(synth, tmp_path / "c")
    monkeypatch.setattr(cache_reuse, "_copy", copy)
    reused, cache, stats = _extract(synth, tmp_path / "c")
    assert reused == (n - 1) - (n - 1) // 2  # the rest of the copy
    assert (stats.written, stats.already_done) == (1, n - 1)
    assert not (cache.path / cache_reuse.REUSING_FILE).exists()
    fresh = _extract(synth, tmp_path / "fresh")[1]
    np.testing.assert_array_equal(_features(cache), _features(fresh))


def test_a_cache_copied_onto_another_key_s_folder_is_refused(synth, tmp_path):
    """The quick 'already cached' paths served any complete cache found in a key's folder:
    one copied or renamed there by hand was served as that key's features."""
    from fsarbench.experiments.cache_reuse import extract_reusing
    from fsarbench.features.cache import cache_folder
    from fsarbench.features.extract import _resolve_split

    _, first, _ = _extract(synth, tmp_path / "c")
    other = _config(resolution=32)
    folder = cache_folder(_resolve_split("synth", "test", synth, other)[3], tmp_path / "c")
    shutil.copytree(first.path, folder)
    for extract in (extract_split, extract_reusing):
        with pytest.raises(ValueError, match=r"holds the cache of key .* \(copied or renamed"):
            extract("synth", "test", dataset=synth, config=other, cache_root=tmp_path / "c")
