"""Test manifests kept in a run's folder: read back equal to a fresh draw, drawn again when
anything they depend on changes or the file is unusable."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import fsarbench.experiments.manifest_cache as cache_mod
from fsarbench.episodes import Manifest, draw_test_manifest
from fsarbench.experiments.manifest_cache import cached_test_manifest

CLASSES = np.repeat(np.arange(7), 6)
ARGS = dict(split_variant="toy-v1", way=5, shot=2, queries=1, episodes=300, seed=4)


def _no_draw(*args, **kwargs):
    raise AssertionError("drew the manifest although the folder holds it")


def test_a_kept_manifest_is_read_back_equal_to_a_fresh_draw(tmp_path, monkeypatch) -> None:
    drawn = cached_test_manifest(tmp_path, CLASSES, **ARGS)
    assert [p.suffix for p in tmp_path.iterdir()] == [".npz"]
    fresh = draw_test_manifest(CLASSES, **ARGS)
    monkeypatch.setattr(cache_mod, "draw_test_manifest_fast", _no_draw)
    again = cached_test_manifest(tmp_path, CLASSES, **ARGS)
    assert again.hash == drawn.hash == fresh.hash
    assert again.to_bytes() == fresh.to_bytes()
    assert again.num_videos == len(CLASSES) and again.spec == fresh.spec


@pytest.mark.parametrize(
    "change",
    [{"episodes": 301}, {"seed": 5}, {"way": 4}, {"shot": 1}, {"split_variant": "toy-v2"}],
)
def test_other_inputs_draw_another_manifest(tmp_path, change) -> None:
    first = cached_test_manifest(tmp_path, CLASSES, **ARGS)
    other = cached_test_manifest(tmp_path, CLASSES, **{**ARGS, **change})
    assert other.hash != first.hash
    assert other.hash == draw_test_manifest(CLASSES, **{**ARGS, **change}).hash
    assert len(list(tmp_path.iterdir())) == 2


def test_other_test_videos_or_sampler_code_draw_again(tmp_path, monkeypatch) -> None:
    cached_test_manifest(tmp_path, CLASSES, **ARGS)
    fewer = CLASSES[1:]  # a test video left out: other pools
    assert (
        cached_test_manifest(tmp_path, fewer, **ARGS).hash == draw_test_manifest(fewer, **ARGS).hash
    )
    hashed = []
    monkeypatch.setattr(
        cache_mod, "source_digest", lambda paths: hashed.append(paths) or "changed-sampler"
    )
    cached_test_manifest(tmp_path, CLASSES, **ARGS)
    assert len(list(tmp_path.iterdir())) == 3
    # both samplers name the file: the scalar one and the vectorised one that equals it
    assert sorted(p.name for p in hashed[0]) == ["episode_streams.py", "episodes.py"]


@pytest.mark.parametrize("damage", ["junk", "truncated", "edited", "forged", "repeated"])
def test_an_unusable_file_is_drawn_again_and_replaced(tmp_path, caplog, damage) -> None:
    drawn = cached_test_manifest(tmp_path, CLASSES, **ARGS)
    (path,) = tmp_path.iterdir()
    if damage == "junk":
        path.write_bytes(b"not a zip")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:  # other episodes under the stored hash
        with np.load(path) as data:
            arrays = dict(data)
        arrays["support"] = arrays["support"][::-1].copy()
        np.savez(path.with_suffix(""), **arrays)  # np.savez appends .npz
    if damage in ("forged", "repeated"):  # rewritten with a hash that matches it: 8.80 printed
        with np.load(path) as data:
            arrays = {k: data[k] for k in ("classes", "support", "query")}
        if damage == "forged":  # each episode's queries one label over
            arrays["query"] = np.roll(arrays["query"], 1, axis=1)
        else:  # every episode the first
            arrays = {k: np.repeat(v[:1], len(v), 0) for k, v in arrays.items()}
        forged = Manifest(drawn.spec, **arrays, num_videos=len(CLASSES), drawn=True)
        np.savez(path.with_suffix(""), **arrays, hash=np.array(forged.hash))
    with caplog.at_level(logging.WARNING):
        again = cached_test_manifest(tmp_path, CLASSES, **ARGS)
    assert again.hash == drawn.hash
    assert "drawing the test manifest again" in caplog.text
    assert cached_test_manifest(tmp_path, CLASSES, **ARGS).hash == drawn.hash


def test_without_a_folder_nothing_is_kept(tmp_path) -> None:
    assert (
        cached_test_manifest(None, CLASSES, **ARGS).hash == draw_test_manifest(CLASSES, **ARGS).hash
    )
    assert not list(tmp_path.iterdir())
