"""Episodes drawn all at once (fsarbench.episode_streams) equal numpy's scalar draws: the
Philox blocks, the bounded integers, every episode of many settings, the rare redraw and the
fallbacks."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import fsarbench.episode_streams as streams
from fsarbench.episode_streams import (
    _Stream,
    _uint32_streams,
    draw_episodes,
    draw_test_manifest_fast,
    philox4x64,
)
from fsarbench.episodes import EpisodeDrawer, EpisodeSpec, ManifestError, class_pools
from fsarbench.episodes import draw_test_manifest as scalar_manifest

KEYS = [np.array([0, 0], dtype=np.uint64), EpisodeSpec(5, 1, 1, 3, "ds", "test").key()]
KEYS.append(np.array([2**64 - 1, 2**63 + 12345], dtype=np.uint64))


@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
@pytest.mark.parametrize("index", [0, 1, 9_999, 2**64 - 1, 2**64 + 7, 2**128 - 1])
def test_philox_blocks_equal_numpys_generator(key, index) -> None:
    words = np.random.Philox(key=key, counter=index << 128).random_raw(12)  # three blocks
    counter = np.zeros((3, 4), dtype=np.uint64)
    counter[:, 0] = [1, 2, 3]  # a fresh generator steps its counter before its first block
    counter[:, 2], counter[:, 3] = index & (2**64 - 1), index >> 64
    assert np.array_equal(philox4x64(counter, key).reshape(-1), words)
    halves = _uint32_streams(key, np.array([index], dtype=object), 24)[0]
    assert np.array_equal(halves[0::2], words & 0xFFFFFFFF)  # low half first
    assert np.array_equal(halves[1::2], words >> np.uint64(32))


@pytest.mark.parametrize("index", [0, 5, 2**70])
def test_bounded_integers_equal_numpys(index) -> None:
    """Lemire's method on the 32-bit outputs, as Generator.integers (int64, range < 2**32)
    draws them one after another; a high of 0 consumes no output."""
    key = KEYS[1]
    highs = [0, 1, 2, 6, 0, 99, 12_345, 2**31, 2**32 - 2, 3]
    rng = np.random.Generator(np.random.Philox(key=key, counter=index << 128))
    expected = [int(rng.integers(0, h, endpoint=True)) if h else 0 for h in highs]
    stream = _Stream(_uint32_streams(key, np.array([index], dtype=object), len(highs)))
    got = [int(stream.bounded(np.array([h]))[0]) for h in highs]
    assert got == expected and not stream.redraw.any()
    assert stream.cursor[0] == sum(h > 0 for h in highs)


def test_an_output_lemire_would_draw_again_is_flagged() -> None:
    """Span 3: threshold (2**32 - 3) % 3 = 1, so an output of 0 (leftover 0) is rejected by
    numpy; outputs with leftover >= span are never flagged."""
    outputs = np.array([[0], [1], [2**31]], dtype=np.uint64)
    stream = _Stream(outputs)
    stream.bounded(np.full(3, 2))
    assert stream.redraw.tolist() == [True, False, False]


SETTINGS = [
    # (videos per class, way, shot, queries)
    ([6] * 7, 5, 2, 1),
    ([20] * 30, 5, 1, 1),
    ([30, 12, 25, 40, 18, 22], 5, 5, 3),
    ([11] * 12, 10, 5, 1),
    ([2, 9, 4, 7, 3], 5, 1, 1),  # a class with exactly shot + queries videos
    ([3, 3, 3], 3, 2, 1),  # every class chosen and every video of each
    ([8] * 9, 4, 3, 0),  # no queries
    ([40] * 4, 2, 1, 31),  # the most picks drawn here: Floyd's collisions are frequent
]


@pytest.mark.parametrize("counts, way, shot, queries", SETTINGS)
def test_every_episode_equals_the_scalar_drawer(counts, way, shot, queries) -> None:
    rng = np.random.default_rng(len(counts))
    video_classes = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    pools = class_pools(video_classes)
    classes = np.array(sorted(pools))
    spec = EpisodeSpec(way, shot, queries, seed=7, dataset="toy", split="test")
    indices = np.r_[np.arange(400), [2**64 + 3, 2**100]].astype(object)
    c, s, q = draw_episodes(pools, classes, spec, indices)
    draw = EpisodeDrawer(pools, classes, spec)
    for row, i in enumerate(indices):
        ec, es, eq = draw(int(i))
        assert np.array_equal(c[row], ec) and np.array_equal(s[row], es), i
        assert np.array_equal(q[row], eq), i


def test_a_flagged_episode_is_drawn_the_scalar_way(monkeypatch) -> None:
    """Episodes Lemire would redraw come from EpisodeDrawer: flag some and corrupt their
    vectorised values; the result is still the scalar one."""
    bounded = _Stream.bounded

    def flag_some(self, high):
        values = bounded(self, high)
        hit = self.rows % 7 == 3
        self.redraw |= hit
        return np.where(hit, 0, values)

    monkeypatch.setattr(_Stream, "bounded", flag_some)
    pools = class_pools(np.repeat(np.arange(8), 10))
    classes = np.arange(8)
    spec = EpisodeSpec(5, 3, 2, seed=1)
    c, s, q = draw_episodes(pools, classes, spec, np.arange(50))
    draw = EpisodeDrawer(pools, classes, spec)
    for i in range(50):
        assert all(np.array_equal(a[i], b) for a, b in zip((c, s, q), draw(i))), i


ARGS = dict(split_variant="toy-v1", way=5, shot=2, queries=1, seed=4)


@pytest.mark.parametrize("episodes", [1, 2, 1000])
def test_the_fast_manifest_is_the_scalar_manifest(episodes) -> None:
    video_classes = np.repeat(np.arange(9), [5, 6, 7, 8, 9, 10, 11, 12, 13])
    fast = draw_test_manifest_fast(video_classes, episodes=episodes, **ARGS)
    slow = scalar_manifest(video_classes, episodes=episodes, **ARGS)
    assert fast.to_bytes() == slow.to_bytes() and fast.hash == slow.hash
    assert (fast.spec, fast.num_videos, fast.meta, fast.drawn) == (
        slow.spec,
        slow.num_videos,
        slow.meta,
        True,
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"episodes": 0}, "at least one episode"),
        ({"way": 12}, "12-way episodes need 12 classes"),
        ({"shot": 6}, "class 0 of toy-v1 test has 5 videos"),
    ],
)
def test_settings_the_split_cannot_serve_get_the_scalar_error(change, message) -> None:
    video_classes = np.repeat(np.arange(9), 5)
    args = {**ARGS, "episodes": 100, **change}
    with pytest.raises(ManifestError, match=message):
        draw_test_manifest_fast(video_classes, **args)


def test_float_class_ids_that_are_not_whole_are_refused() -> None:
    with pytest.raises(ManifestError, match="whole-number class ids"):
        draw_test_manifest_fast(np.r_[np.repeat(np.arange(6.0), 4), 1.5], episodes=10, **ARGS)


@pytest.mark.parametrize("episode", [0, 100, 199])
def test_a_numpy_that_draws_otherwise_gets_the_scalar_manifest(monkeypatch, caplog, episode):
    """Episodes 0, E // 2 and E - 1 are compared with numpy's own draws; on any difference
    (another numpy's choice) the whole manifest is drawn the scalar way."""

    def shifted(pools, classes, spec, indices):
        c, s, q = draw_episodes(pools, classes, spec, indices)
        s[episode] = np.roll(s[episode], 1)
        return c, s, q

    monkeypatch.setattr(streams, "draw_episodes", shifted)
    video_classes = np.repeat(np.arange(9), 7)
    with caplog.at_level(logging.INFO, logger="fsarbench.episode_streams"):
        fast = draw_test_manifest_fast(video_classes, episodes=200, **ARGS)
    assert fast.hash == scalar_manifest(video_classes, episodes=200, **ARGS).hash
    assert "drawing them one by one" in caplog.text


def test_populations_beyond_floyds_range_are_drawn_the_scalar_way(monkeypatch) -> None:
    monkeypatch.setattr(streams, "_FLOYD_LIMIT", 5)  # numpy's is 10,000 videos per class
    pools = class_pools(np.repeat(np.arange(6), 8))
    spec = EpisodeSpec(5, 1, 1)
    calls = []
    scalar = streams._scalar
    monkeypatch.setattr(streams, "_scalar", lambda *a: calls.append(1) or scalar(*a))
    c, s, q = draw_episodes(pools, np.arange(6), spec, np.arange(30))
    draw = EpisodeDrawer(pools, np.arange(6), spec)
    assert calls and all(np.array_equal(s[i], draw(i)[1]) for i in range(30))


def test_episodes_drawn_in_chunks_are_the_same(monkeypatch) -> None:
    monkeypatch.setattr(streams, "_CHUNK_OUTPUTS", 7 * 259)  # 14 episodes of 10-way 5-shot
    video_classes = np.repeat(np.arange(12), 9)
    args = {**ARGS, "way": 10, "shot": 5, "episodes": 100}
    fast = draw_test_manifest_fast(video_classes, **args)
    assert fast.hash == scalar_manifest(video_classes, **args).hash


def test_many_picks_per_class_are_drawn_the_scalar_way(monkeypatch) -> None:
    """Above 32 videos per class and episode the scalar draw is faster (Floyd's check for
    repeats grows with their square): the same episodes, drawn by EpisodeDrawer."""
    calls = []
    scalar = streams._scalar
    monkeypatch.setattr(streams, "_scalar", lambda *a: calls.append(1) or scalar(*a))
    pools = class_pools(np.repeat(np.arange(4), 150))
    spec = EpisodeSpec(2, 1, 120)
    c, s, q = draw_episodes(pools, np.arange(4), spec, np.arange(20))
    draw = EpisodeDrawer(pools, np.arange(4), spec)
    assert calls and all(np.array_equal(q[i], draw(i)[2]) for i in range(20))
