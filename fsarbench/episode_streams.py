"""Test manifests drawn all episodes at once, equal to :class:`~fsarbench.episodes.EpisodeDrawer`.

An episode is ``Generator.choice`` without replacement, once over the classes and once per
chosen class over its videos, on a Philox stream of its own (key from the spec, counter
``index << 128``). For populations up to 10,000, numpy's ``choice`` is Floyd's algorithm
followed by a Fisher-Yates shuffle, and every step takes one bounded integer by Lemire's
method from the generator's next 32-bit output. Philox is counter-based: the n-th 32-bit
output of an episode is a function of (key, counter, n) alone, so the outputs of all
episodes are computed in one vectorised pass, and the Floyd and shuffle steps run in lockstep
across episodes.

Lemire's method draws again for a rare output (probability below ``range / 2**32``, about
one in 40 million per step for a pool of 100 videos); an episode that meets one is drawn by
:class:`~fsarbench.episodes.EpisodeDrawer` instead, as is every episode where the populations
are outside the algorithm written here (more than 10,000 classes or videos in a class), or
where drawing one by one is faster (more than 32 videos per class and episode). The
tests compare every episode of many settings with the scalar draws; at run time each call
compares its first, middle and last episodes and, on any difference (another numpy's
``choice``), draws the whole manifest the scalar way. What this module changes is how long
drawing takes (about 0.7 s -> 20 ms for 10,000 5-way episodes), not the episodes. It sits
outside the harness digest: a manifest is identified by the hash of its episodes wherever it
is used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from fsarbench.episodes import (
    EpisodeDrawer,
    EpisodeSpec,
    Manifest,
    class_pools,
    draw_test_manifest,
)

__all__ = ["draw_test_manifest_fast", "draw_episodes", "philox4x64"]

log = logging.getLogger(__name__)

_M = (np.uint64(0xD2E7470EE14C6C93), np.uint64(0xCA5A826395121157))
_W = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBB67AE8584CAA73B))
_LOW32 = np.uint64(0xFFFFFFFF)
_ROUNDS = 10
#: numpy's ``choice`` switches to another algorithm above this population.
_FLOYD_LIMIT = 10_000
#: Videos per class (shot + queries) above which the scalar draw is faster: Floyd's check for
#: repeats costs ``(shot + queries)²`` per class here (measured crossover about 50).
_MAX_PICKS = 32
#: 32-bit outputs drawn together (episodes x outputs per episode): bounds the temporaries.
_CHUNK_OUTPUTS = 3_200_000


def _mulhilo(a: np.ndarray, m: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` 64-bit halves of the 128-bit products ``a * m`` (uint64, elementwise)."""
    a0, a1 = a & _LOW32, a >> np.uint64(32)
    m0, m1 = m & _LOW32, m >> np.uint64(32)
    p00, p01, p10, p11 = a0 * m0, a0 * m1, a1 * m0, a1 * m1
    middle = (p00 >> np.uint64(32)) + (p01 & _LOW32) + (p10 & _LOW32)
    high = p11 + (p01 >> np.uint64(32)) + (p10 >> np.uint64(32)) + (middle >> np.uint64(32))
    return a * m, high


def philox4x64(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Philox4x64-10 blocks (Salmon et al., SC'11), numpy's ``Philox`` bit generator.

    Args:
        counter: ``[N, 4]`` uint64 counters (little-endian words).
        key: ``[2]`` uint64.

    Returns:
        ``[N, 4]`` uint64, the block each counter encrypts to.
    """
    x = [counter[:, i].copy() for i in range(4)]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    with np.errstate(over="ignore"):
        for r in range(_ROUNDS):
            if r:
                k0, k1 = k0 + _W[0], k1 + _W[1]
            lo0, hi0 = _mulhilo(x[0], _M[0])
            lo1, hi1 = _mulhilo(x[2], _M[1])
            x = [hi1 ^ x[1] ^ k0, lo1, hi0 ^ x[3] ^ k1, lo0]
    return np.stack(x, 1)


def _uint32_streams(key: np.ndarray, indices: np.ndarray, count: int) -> np.ndarray:
    """``[E, count]``: the first ``count`` 32-bit outputs of each episode's fresh generator.

    A fresh ``Philox(key, counter=i << 128)`` steps its counter before its first block, hands
    out a block's four 64-bit words in order, and ``next_uint32`` splits each word low half
    first.
    """
    blocks = -(-count // 8)
    e = len(indices)
    counter = np.zeros((e, blocks, 4), dtype=np.uint64)
    counter[:, :, 0] = np.arange(1, blocks + 1, dtype=np.uint64)
    words = [(int(i) & ((1 << 64) - 1), int(i) >> 64) for i in indices]
    counter[:, :, 2] = np.array([w[0] for w in words], dtype=np.uint64)[:, None]
    counter[:, :, 3] = np.array([w[1] for w in words], dtype=np.uint64)[:, None]
    out = philox4x64(counter.reshape(-1, 4), key).reshape(e, blocks * 4)
    halves = np.stack([out & _LOW32, out >> np.uint64(32)], -1).reshape(e, blocks * 8)
    return halves[:, :count]


class _Stream:
    """Per-episode cursors into the 32-bit outputs, and Lemire's bounded integers from them."""

    def __init__(self, outputs: np.ndarray) -> None:
        self.outputs = outputs
        self.rows = np.arange(len(outputs))
        self.cursor = np.zeros(len(outputs), dtype=np.int64)
        self.redraw = np.zeros(len(outputs), dtype=bool)  # a step Lemire would repeat

    def bounded(self, high: np.ndarray) -> np.ndarray:
        """Integers in ``0..high`` (``[E]``, int64), as ``random_bounded_uint64(0, high)``: no
        output consumed where ``high == 0``."""
        high = np.asarray(high, dtype=np.uint64)
        draws = high > 0
        u = self.outputs[self.rows, self.cursor]  # an episode past its outputs: IndexError
        span = high + np.uint64(1)
        m = u * span
        # numpy draws again while the low half is below (2**32 - span) % span: flag that
        # (rare) case and draw the episode the scalar way
        threshold = (np.uint64(2**32) - span) % span
        self.redraw |= draws & ((m & _LOW32) < threshold)
        self.cursor += draws
        return np.where(draws, m >> np.uint64(32), 0).astype(np.int64)


def _choice(stream: _Stream, population: np.ndarray, size: int) -> np.ndarray:
    """``Generator.choice(population, size, replace=False)`` positions per episode.

    Args:
        population: ``[E]`` population sizes (each at least ``size``).

    Returns:
        ``[E, size]`` int64 positions, in numpy's order.
    """
    e = len(population)
    picked = np.empty((e, size), dtype=np.int64)
    for s in range(size):  # Floyd: j runs over the population's last `size` positions
        j = population - size + s
        value = stream.bounded(j)
        taken = (picked[:, :s] == value[:, None]).any(1)
        picked[:, s] = np.where(taken, j, value)
    for i in range(size - 1, 0, -1):  # Fisher-Yates over the picks
        j = stream.bounded(np.full(e, i))
        at_i = picked[:, i].copy()
        picked[:, i] = picked[stream.rows, j]
        picked[stream.rows, j] = at_i
    return picked


def _pool_table(pools: dict[int, np.ndarray], classes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``[C, max videos]`` video positions padded with -1, in ``classes`` order (``sizes``:
    ``[C]`` pool sizes)."""
    table = np.full((len(classes), int(sizes.max())), -1, dtype=np.int64)
    for row, c in enumerate(classes):
        table[row, : sizes[row]] = pools[int(c)]
    return table


def _outputs_per_episode(way: int, picks: int) -> int:
    """32-bit outputs an episode draws at most: Floyd and the shuffle over the classes, then
    over ``picks`` videos of each chosen class."""
    return (2 * way - 1) + way * (2 * picks - 1)


def draw_episodes(
    pools: dict[int, np.ndarray], classes: np.ndarray, spec: EpisodeSpec, indices: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episodes ``indices`` of ``spec`` as :class:`~fsarbench.episodes.EpisodeDrawer` draws
    them: ``(classes [E, way], support [E, way*shot], query [E, way*queries])``.

    Args:
        pools: class id -> the positions of its videos (:func:`~fsarbench.episodes.class_pools`).
        classes: ``[C]`` the class ids episodes draw from, sorted.
        indices: ``[E]`` episode indices (non-negative, below ``2**128``).
    """
    indices = np.asarray(indices)
    need = spec.shot + spec.queries
    sizes = np.array([len(pools[int(c)]) for c in classes], dtype=np.int64)
    e, way = len(indices), spec.way
    if len(classes) > _FLOYD_LIMIT or sizes.max() > _FLOYD_LIMIT or need > _MAX_PICKS:
        return _scalar(pools, classes, spec, indices)
    table = _pool_table(pools, classes, sizes)
    stream = _Stream(_uint32_streams(spec.key(), indices, _outputs_per_episode(way, need)))
    rows = _choice(stream, np.full(e, len(classes)), way)  # [E, way] rows of `classes`
    picks = np.empty((e, way, need), dtype=np.int64)
    for slot in range(way):
        row = rows[:, slot]
        positions = _choice(stream, sizes[row], need)
        picks[:, slot] = table[row[:, None], positions]
    chosen = classes[rows]
    support = picks[:, :, : spec.shot].reshape(e, -1)
    query = picks[:, :, spec.shot :].reshape(e, -1)
    redraw = np.flatnonzero(stream.redraw)
    if len(redraw):
        c, s, q = _scalar(pools, classes, spec, indices[redraw])
        chosen[redraw], support[redraw], query[redraw] = c, s, q
    return chosen, support, query


def _scalar(pools, classes, spec, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    draw = EpisodeDrawer(pools, classes, spec)
    episodes = [draw(int(i)) for i in indices]
    return tuple(np.stack([ep[k] for ep in episodes]).astype(np.int64) for k in range(3))


def _agree(drawn: tuple, pools: dict, classes: np.ndarray, spec: EpisodeSpec) -> bool:
    """Whether episodes 0, ``E // 2`` and ``E - 1`` of ``drawn`` are numpy's own draws."""
    draw, n = EpisodeDrawer(pools, classes, spec), len(drawn[0])
    for i in sorted({0, n // 2, n - 1}):
        if not all(np.array_equal(mine[i], ref) for mine, ref in zip(drawn, draw(i))):
            return False
    return True


def draw_test_manifest_fast(
    test_classes: Sequence[int] | np.ndarray,
    *,
    split_variant: str,
    way: int,
    shot: int,
    queries: int,
    episodes: int,
    seed: int,
    class_names: Sequence[str] | None = None,
    remedies: Mapping[str, str] | None = None,
) -> Manifest:
    """:func:`~fsarbench.episodes.draw_test_manifest`, every episode drawn at once.

    The scalar function draws episode 0 first, which makes every check it makes (class ids,
    episode count, whether the split serves the setting); episodes 0, ``E // 2`` and ``E - 1``
    are compared with numpy's own draws, and on any difference the scalar manifest is
    returned.
    """
    args = {"split_variant": split_variant, "way": way, "shot": shot, "queries": queries}
    args |= {"seed": seed, "class_names": class_names, "remedies": remedies}
    if episodes < 2:  # nothing to gain, and the scalar function names a bad count
        return draw_test_manifest(test_classes, episodes=episodes, **args)
    first = draw_test_manifest(test_classes, episodes=1, **args)
    pools = class_pools(np.asarray(test_classes).astype(np.int64))
    classes = np.array(sorted(pools), dtype=np.int64)
    chunk = max(1, _CHUNK_OUTPUTS // _outputs_per_episode(way, shot + queries))
    parts = [
        draw_episodes(pools, classes, first.spec, np.arange(lo, min(lo + chunk, episodes)))
        for lo in range(0, episodes, chunk)
    ]
    c, s, q = (np.concatenate([part[k] for part in parts]) for k in range(3))
    if queries == 0:
        q = np.zeros((episodes, 0), dtype=np.int64)
    if not _agree((c, s, q), pools, classes, first.spec):
        log.info(
            "vectorised episodes differ from numpy %s's draws; drawing them one by one",
            np.__version__,
        )
        return draw_test_manifest(test_classes, episodes=episodes, **args)
    return Manifest(first.spec, c, s, q, first.num_videos, None, dict(first.meta), drawn=True)
