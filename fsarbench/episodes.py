"""Episode manifests: every episode a pure function of its arguments and index.

Randomness is counter-based: episode ``i`` draws from a Philox generator whose key hashes
``(seed, dataset, split, way, shot, queries)`` and whose counter starts at ``i * 2**128``.
Any process, DataLoader worker, rank or resumed run therefore derives exactly the same
episode ``i``, in any order.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fsarbench.io import atomic_write_bytes

__all__ = [
    "EPISODE_ARRAYS",
    "EpisodeSpec",
    "Manifest",
    "make_manifest",
    "make_episode",
    "EpisodeDrawer",
    "ManifestError",
    "check_unique_video_ids",
    "draw_test_manifest",
    "check_feasible",
    "check_episode_count",
    "infeasibility",
    "Shortfall",
    "EpisodeCountError",
    "MAX_EPISODES",
]

MANIFEST_FORMAT = 1

#: The most test episodes ``run`` and ``eval`` draw per setting: 100x the protocol's 10,000.
#: A setting's manifest is drawn and hashed in memory (measured: about 3 KB per 10-way
#: 5-shot episode at peak, 18 s per 100,000 on one core), so this bound already means a few
#: GB and minutes per setting; a larger ``--episodes`` is refused before any work.
MAX_EPISODES = 1_000_000


class ManifestError(ValueError):
    """Episode settings the split cannot serve; the message names the class and counts."""


class EpisodeCountError(ManifestError):
    """A count of test episodes outside ``1..MAX_EPISODES``."""


def check_episode_count(episodes: int, where: str = "episodes") -> int:
    """``episodes`` if it is an integer in ``1..``:data:`MAX_EPISODES`.

    Raises:
        EpisodeCountError: naming ``where`` (e.g. ``--episodes``), the bound and why.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)):
        raise EpisodeCountError(f"{where} must be an integer, got {episodes!r}")
    if episodes < 1:
        raise EpisodeCountError(f"{where} must be at least 1, got {episodes}")
    if episodes > MAX_EPISODES:
        raise EpisodeCountError(
            f"{where} must be at most {MAX_EPISODES:,} (100x the protocol's 10,000: each "
            f"setting's episodes are drawn and hashed in memory, about 3 KB per 10-way 5-shot "
            f"episode), got {episodes:,}; choose a count up to {MAX_EPISODES:,}"
        )
    return int(episodes)


@dataclass(frozen=True)
class EpisodeSpec:
    """What determines an episode, apart from its index."""

    way: int
    shot: int
    queries: int
    seed: int = 0
    dataset: str = ""
    split: str = ""

    def key(self) -> np.ndarray:
        """128-bit Philox key hashed from every field."""
        text = json.dumps(
            [self.seed, self.dataset, self.split, self.way, self.shot, self.queries]
        ).encode()
        return np.frombuffer(hashlib.sha256(text).digest()[:16], dtype="<u8").copy()


def class_pools(video_classes: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(video_classes, kind="stable")
    sorted_classes = video_classes[order]
    uniq, starts = np.unique(sorted_classes, return_index=True)
    ends = list(starts[1:]) + [len(order)]
    return {int(c): order[s:e] for c, s, e in zip(uniq, starts, ends)}


#: What to do about an infeasible setting, by kind of shortfall (:func:`infeasibility`), for
#: callers without options of their own; ``{classes}``, ``{smallest}`` (videos in the
#: smallest class) and ``{max_shot}`` (the largest shot it serves) are filled in.
DEFAULT_REMEDIES: dict[str, str] = {
    "setting": "",
    "way": "use way up to {classes}",
    "videos": "lower shot or queries (the smallest class has {smallest} videos)",
    # a class too small for any shot (lowering the shot cannot help)
    "videos_none": "the smallest class has {smallest} videos: too few for any shot with "
    "{queries} query(ies) per class",
}
#: :func:`make_manifest`'s own remedy: its ``min_videos_policy`` can leave such classes out.
DROP_REMEDY = (
    "lower shot or queries, or pass min_videos_policy='drop' to leave such classes out (recorded)"
)


@dataclass(frozen=True)
class Shortfall:
    """Why class pools cannot serve a spec: ``kind`` (``setting``: way/shot/queries out of
    range; ``way``: too few classes; ``videos``: a class with too few videos), the
    ``problem`` in words (no remedy), and the pools' sizes remedies quote."""

    kind: str
    problem: str
    classes: int
    smallest: int
    queries: int

    def remedy(self, remedies: Mapping[str, str] | None = None) -> str:
        """The remedy of this kind from ``remedies`` (else :data:`DEFAULT_REMEDIES`)."""
        table = {**DEFAULT_REMEDIES, **(remedies or {})}
        max_shot = self.smallest - self.queries
        kind = "videos_none" if self.kind == "videos" and max_shot < 1 else self.kind
        return table[kind].format(
            classes=self.classes, smallest=self.smallest, max_shot=max_shot, queries=self.queries
        )

    def message(self, remedies: Mapping[str, str] | None = None) -> str:
        """``problem; remedy`` (the problem alone where the kind has no remedy)."""
        remedy = self.remedy(remedies)
        return f"{self.problem}; {remedy}" if remedy else self.problem


def infeasibility(
    pools: dict[int, np.ndarray], spec: EpisodeSpec, class_names: Sequence[str] | None = None
) -> Shortfall | None:
    """Why the class pools (:func:`class_pools`) cannot serve ``spec``'s episodes (every
    class must hold ``shot + queries`` videos: episodes draw their classes from all), or
    ``None`` when they can."""
    need = spec.shot + spec.queries
    sizes = [len(v) for v in pools.values()]
    counts = {"classes": len(pools), "smallest": min(sizes, default=0), "queries": spec.queries}
    if spec.way < 1 or spec.shot < 1 or spec.queries < 0:
        problem = (
            f"way and shot must be >= 1 and queries >= 0, got way={spec.way}, "
            f"shot={spec.shot}, queries={spec.queries}"
        )
        return Shortfall("setting", problem, **counts)
    if spec.way > len(pools):
        split = f"the {spec.split} split" if spec.split else "the pool"
        problem = (
            f"{spec.way}-way episodes need {spec.way} classes, but {split} of "
            f"{spec.dataset or 'this dataset'} has only {len(pools)}"
        )
        return Shortfall("way", problem, **counts)
    small = [(c, len(v)) for c, v in pools.items() if len(v) < need]
    if small:
        c, n = small[0]
        name = f" ({class_names[c]!r})" if class_names is not None else ""
        where = f" of {spec.dataset} {spec.split or ''}".rstrip() if spec.dataset else ""
        problem = (
            f"class {c}{name}{where} has {n} videos, but {spec.shot}-shot episodes with "
            f"{spec.queries} queries per class need {need}; {len(small)} class(es) fall short"
        )
        return Shortfall("videos", problem, **counts)
    return None


def check_feasible(
    pools: dict[int, np.ndarray],
    spec: EpisodeSpec,
    class_names: Sequence[str] | None,
    remedies: Mapping[str, str] | None = None,
) -> None:
    """Whether the class pools (:func:`class_pools`) can serve ``spec``'s episodes.

    ``remedies``: what to tell the caller's user to do, per kind of shortfall
    (:data:`DEFAULT_REMEDIES` where not given), in the options the caller offers.

    Raises:
        ManifestError: naming the setting, or the first class short of videos and the counts.
    """
    found = infeasibility(pools, spec, class_names)
    if found is not None:
        raise ManifestError(found.message(remedies))


def make_episode(
    pools: dict[int, np.ndarray],
    classes: np.ndarray,
    spec: EpisodeSpec,
    index: int,
    key: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episode ``index``: (class ids ``[way]``, support ``[way*shot]``, query ``[way*queries]``).

    Support and queries are class-major; class ``j`` of the episode has label ``j``. Each
    episode has a random stream of its own: Philox keyed by ``spec.key()`` (``key``, passed in
    by callers that hash the spec once) at counter ``index << 128``. Callers drawing many
    episodes use :class:`EpisodeDrawer`, which draws the same ones faster.
    """
    key = spec.key() if key is None else key
    rng = np.random.Generator(np.random.Philox(key=key, counter=int(index) << 128))
    return _draw(rng, pools, classes, spec)


def _draw(
    rng: np.random.Generator, pools: dict[int, np.ndarray], classes: np.ndarray, spec: EpisodeSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chosen = classes[rng.choice(len(classes), spec.way, replace=False)]
    need = spec.shot + spec.queries
    picks = np.stack([rng.choice(pools[int(c)], need, replace=False) for c in chosen])
    return chosen, picks[:, : spec.shot].reshape(-1), picks[:, spec.shot :].reshape(-1)


class EpisodeDrawer:
    """:func:`make_episode` for one spec and pool, one generator reused: each episode resets
    the Philox state to what a fresh ``Philox(key, counter=index << 128)`` holds (counter,
    key, empty output buffer), so the episodes are the same; building a new generator per
    episode took a quarter of a 10,000-episode manifest's time. Not for sharing between
    threads (one drawer per thread): a draw is a reset and several reads of one state."""

    _WORDS = 4  # Philox4x64: a 256-bit counter in four little-endian uint64 words

    def __init__(
        self,
        pools: dict[int, np.ndarray],
        classes: np.ndarray,
        spec: EpisodeSpec,
        key: np.ndarray | None = None,
    ) -> None:
        self.pools, self.classes, self.spec = pools, classes, spec
        self.key = spec.key() if key is None else key
        self._bits = np.random.Philox(key=self.key)
        self._rng = np.random.Generator(self._bits)
        self._fresh = self._bits.state  # counter 0, empty buffer: the template of every reset

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counter = int(index) << 128
        if not 0 <= counter < 1 << 64 * self._WORDS:
            raise ValueError(f"episode index {index} is outside 0..2**128-1")
        words = [(counter >> 64 * w) & ((1 << 64) - 1) for w in range(self._WORDS)]
        state = dict(self._fresh)
        state["state"] = {"counter": np.array(words, dtype=np.uint64), "key": self.key}
        self._bits.state = state
        return _draw(self._rng, self.pools, self.classes, self.spec)


@dataclass
class Manifest:
    """A fixed list of episodes over a pool of videos.

    Attributes:
        spec: the arguments every episode derives from.
        classes: ``[E, way]`` global class id of each episode label.
        support: ``[E, way*shot]`` video indices, class-major.
        query: ``[E, way*queries]`` video indices, class-major.
        num_videos: size of the video pool the indices point into.
        video_ids: optional names of the pool's videos (index -> id).
        meta: anything else that fixes the inputs (frame protocol, view ids, dropped classes).
        drawn: made by :func:`make_manifest` in this process (not saved): its repeated
            episodes, if any, are the sampler's own and not checked again.
    """

    spec: EpisodeSpec
    classes: np.ndarray
    support: np.ndarray
    query: np.ndarray
    num_videos: int
    video_ids: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    drawn: bool = field(default=False, compare=False, repr=False)

    @property
    def episodes(self) -> int:
        return int(self.classes.shape[0])

    @property
    def way(self) -> int:
        return self.spec.way

    @property
    def support_labels(self) -> np.ndarray:
        """``[E, way*shot]`` episode labels of the support slots."""
        row = np.repeat(np.arange(self.spec.way), self.spec.shot)
        return np.broadcast_to(row, self.support.shape)

    @property
    def query_labels(self) -> np.ndarray:
        """``[E, way*queries]`` episode labels of the query slots."""
        row = np.repeat(np.arange(self.spec.way), self.spec.queries)
        return np.broadcast_to(row, self.query.shape)

    def unique_videos(self) -> np.ndarray:
        """Sorted indices of every video some episode uses."""
        return np.unique(np.concatenate([self.support.ravel(), self.query.ravel()]))

    def validate(self) -> Manifest:
        """Check the episodes against the spec and the pool; returns ``self``.

        Raises:
            ManifestError: arrays of the wrong shape, indices outside ``[0, num_videos)``,
                or an episode that repeats a video (support leaking into queries) or a class.
        """
        way, shot, queries = self.spec.way, self.spec.shot, self.spec.queries
        e = self.classes.shape[0] if self.classes.ndim == 2 else -1
        shapes = {"classes": (e, way), "support": (e, way * shot), "query": (e, way * queries)}
        for name, want in shapes.items():
            got = getattr(self, name).shape
            if e < 1 or got != want:
                raise ManifestError(
                    f"manifest {name} has shape {got}, but its spec ({way}-way {shot}-shot, "
                    f"{queries} queries per class) needs {want} with at least one episode"
                )
        videos = np.concatenate([self.support, self.query], axis=1)
        bad = (videos < 0) | (videos >= self.num_videos)
        if bad.any():
            ep, slot = np.argwhere(bad)[0]
            raise ManifestError(
                f"manifest episode {ep} indexes video {videos[ep, slot]}, outside its pool of "
                f"{self.num_videos} videos (0..{self.num_videos - 1})"
            )
        if (self.classes < 0).any():
            ep = int(np.argwhere(self.classes < 0)[0][0])
            raise ManifestError(
                f"manifest episode {ep} names class {int(self.classes.min())}: class ids are "
                "0 or more (a negative one filed its accuracy under another class's name)"
            )
        self._check_video_ids()
        for name, values in (("video", videos), ("class", self.classes)):
            ordered = np.sort(values, axis=1)
            repeated = (ordered[:, 1:] == ordered[:, :-1]).any(1)
            if repeated.any():
                ep = int(np.flatnonzero(repeated)[0])
                raise ManifestError(
                    f"manifest episode {ep} uses a {name} more than once "
                    f"({int(repeated.sum())} episode(s) do): "
                    + (
                        "a video in both support and query scores itself"
                        if name == "video"
                        else "each label must be a different class"
                    )
                )
        if not self.drawn:
            self._check_repeats()
        return self

    def _check_video_ids(self) -> None:
        """Each pool position names another video: a pool holding a video twice (two
        overlapping extraction shards) let a query be scored against itself as a support."""
        ids = self.video_ids
        if ids is None:
            return
        if len(ids) != self.num_videos:
            raise ManifestError(f"{len(ids)} video_ids for a pool of {self.num_videos} videos")
        check_unique_video_ids(ids, "manifest video_ids")

    def repeats(self) -> tuple[np.ndarray, np.ndarray]:
        """Episodes equal to an earlier one: (their indices ``[R]``, the earlier one's ``[R]``)."""
        rows = np.concatenate([self.classes, self.support, self.query], axis=1)
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        earlier = first[inverse.reshape(-1)]
        later = np.flatnonzero(earlier != np.arange(len(rows)))
        return later, earlier[later]

    def regenerates(
        self, video_classes: np.ndarray | None = None, episodes: Iterable[int] | None = None
    ) -> bool:
        """Whether every episode (or those at ``episodes``) is the one :func:`make_manifest`
        draws from this manifest's spec (seed, dataset, split, way, shot, queries; episode
        indices from ``meta["first_episode"]``) over the class pools of ``video_classes`` (the
        pool's class id per video), else over the pools its episodes use. Pools that cannot
        draw the spec (a class too small) do not regenerate it."""
        pools = class_pools(np.asarray(video_classes)) if video_classes is not None else None
        pools = pools if pools is not None else self.pools_in_use()
        if pools is None:
            return False
        classes = np.array(sorted(pools), dtype=np.int64)
        draw = EpisodeDrawer(pools, classes, self.spec)
        start = int(self.meta.get("first_episode", 0))
        for i in range(self.episodes) if episodes is None else episodes:
            try:
                drawn = draw(start + i)
            except ValueError:  # numpy's choice: a class with fewer videos than it draws
                return False
            mine = (self.classes[i], self.support[i], self.query[i])
            if not all(np.array_equal(a, b) for a, b in zip(drawn, mine)):
                return False
        return True

    def pools_in_use(self) -> dict[int, np.ndarray] | None:
        """Class id -> sorted videos the episodes give that class; ``None`` when a video
        appears under two classes (no pool can draw that)."""
        videos = np.concatenate([self.support, self.query], axis=1).ravel()
        labels = np.concatenate([self.support_labels, self.query_labels], axis=1)
        owners = np.take_along_axis(self.classes, labels, axis=1).ravel()
        pairs = np.unique(np.stack([videos, owners], axis=1), axis=0)
        if len(np.unique(pairs[:, 0])) != len(pairs):
            return None
        return {int(c): pairs[pairs[:, 1] == c, 0] for c in np.unique(pairs[:, 1])}

    def _check_repeats(self) -> None:
        """Refuse repeated episodes that the seeded sampler would not draw.

        :func:`make_manifest` draws every episode independently, so over a small pool it
        repeats some legitimately (5 classes of 2 videos allow 3,840 distinct 5-way 1-shot
        episodes: 10,000 draws must repeat); its own manifests are not checked (``drawn``).
        A loaded manifest's repeats are refused only when the equal pairs are far beyond
        what that sampler gives over the classes and videos the manifest uses (which
        overstates what the full pool gives; :func:`_implausible`) and the manifest does not
        regenerate from its spec. Such a manifest (hand-edited, concatenated, from another
        tool) counts one episode several times, which weights it and narrows the interval.
        """
        later, earlier = self.repeats()
        if not len(later):
            return
        pairs, (expected, spread) = _equal_pairs(earlier), _equal_pairs_moments(self)
        if not _implausible(pairs, expected, spread) or self.regenerates():
            return
        raise ManifestError(
            f"manifest episode {int(later[0])} repeats episode {int(earlier[0])}: "
            f"{len(later)} of its {self.episodes} episodes repeat an earlier one ({pairs} equal "
            f"pairs, where its seeded sampler gives about {expected:.3g}), and it does not "
            "regenerate from its spec. Repeats are kept only as make_manifest draws them over a "
            "small pool; here each would count one episode again and narrow the interval. "
            "Remove the repeated episodes, or draw the manifest with make_manifest"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "spec": vars(self.spec).copy(),
            "num_videos": self.num_videos,
            "video_ids": self.video_ids,
            "meta": self.meta,
            "classes": self.classes.tolist(),
            "support": self.support.tolist(),
            "query": self.query.tolist(),
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON encoding (sorted keys, no whitespace): equal manifests, equal bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def hash(self) -> str:
        """sha256 of :meth:`to_bytes`, first 16 hex digits; recorded with every result."""
        return hashlib.sha256(self.to_bytes()).hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_bytes(path, self.to_bytes())
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ManifestError(f"unsupported manifest format {found!r}")
        return cls(
            spec=EpisodeSpec(**_checked_spec(data["spec"])),
            classes=_index_array(data["classes"], "classes"),
            support=_index_array(data["support"], "support"),
            query=_index_array(data["query"], "query"),
            num_videos=_whole(data["num_videos"], "num_videos", 1),
            video_ids=data.get("video_ids"),
            meta=_checked_meta(data.get("meta", {})),
        ).validate()

    def header(self) -> str:
        """:meth:`to_dict` without the episode arrays, as JSON (stored beside the arrays in a
        run's ``manifests/*.npz``, so that such a file loads on its own)."""
        data = {k: v for k, v in self.to_dict().items() if k not in EPISODE_ARRAYS}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """A manifest JSON (:meth:`save`), or a run's stored test episodes
        (``RUNS/manifests/*.npz``)."""
        try:
            raw = Path(path).read_bytes()
            if raw.startswith(b"PK"):  # a zip: numpy's .npz
                return _load_npz(raw)
            return cls.from_dict(json.loads(raw))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            if isinstance(err, ManifestError):
                raise ManifestError(f"{path}: {err}") from None
            raise ManifestError(f"{path} is not a valid fsarbench manifest: {err}") from None

    def select(self, indices: np.ndarray) -> Manifest:
        """The sub-manifest of the given episode indices (e.g. a distributed shard)."""
        return Manifest(
            self.spec,
            self.classes[indices],
            self.support[indices],
            self.query[indices],
            self.num_videos,
            self.video_ids,
            dict(self.meta),
            self.drawn,
        )


#: The per-episode arrays of a manifest (``[E, way]`` classes, ``[E, way·shot]`` support,
#: ``[E, way·queries]`` query), as a run's ``manifests/*.npz`` stores them.
EPISODE_ARRAYS = ("classes", "support", "query")


def _load_npz(raw: bytes) -> Manifest:
    """A run's stored test episodes (``experiments.manifest_cache``): the arrays, the
    :meth:`Manifest.header` and the hash they were stored with, which they must give
    (:meth:`Manifest.load` names the file in any error)."""
    import io
    import zipfile

    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            if "header" not in data:
                raise ManifestError(
                    "it holds a run's test episodes stored by an earlier fsarbench, "
                    "without their settings: run 'python -m fsarbench run' into that folder "
                    "again (it stores them anew), or save the episodes with "
                    "fsarbench.episodes.draw_test_manifest(...).save(FILE)"
                )
            fields = json.loads(str(data["header"]))
            fields |= {k: data[k].astype(np.int64).tolist() for k in EPISODE_ARRAYS}
            stored = str(data["hash"])
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise ManifestError(f"not a readable .npz of test episodes ({err})") from None
    manifest = Manifest.from_dict(fields)
    if manifest.hash != stored:
        raise ManifestError(f"its episodes give hash {manifest.hash}, not {stored}")
    return manifest


def check_unique_video_ids(ids: Sequence[str], where: str) -> None:
    """Refuse a pool naming one video twice (two overlapping extraction shards): it can be
    both a support and a query of one episode, scored against itself."""
    if len(set(ids)) != len(ids):
        twice = next(v for v, n in Counter(ids).items() if n > 1)
        raise ManifestError(
            f"{where} name {twice!r} (and maybe others) more than once: a video listed twice "
            "can be both a support and a query of one episode; remove the repeats (and draw "
            "the episodes again)"
        )


def _whole(value: Any, name: str, least: int | None) -> int:
    """``value`` when it is an integer (not a bool, nor a float) of at least ``least``
    (``None``: any integer)."""
    wrong_type = isinstance(value, bool) or not isinstance(value, int)
    if wrong_type or (least is not None and value < least):
        wanted = "an integer" + ("" if least is None else f" >= {least}")
        raise ManifestError(f"manifest field {name} is {value!r}: {wanted}")
    return value


def _checked_meta(meta: Any) -> dict[str, Any]:
    """A manifest's ``meta``: an object whose ``first_episode`` (a shard's offset in its
    full draw) is a whole number >= 0 (a list crashed ``regenerates`` with a traceback)."""
    if not isinstance(meta, dict):
        raise ManifestError(f"manifest field meta is {type(meta).__name__}, not an object")
    if "first_episode" in meta:
        _whole(meta["first_episode"], "meta.first_episode", 0)
    return meta


def _checked_spec(spec: Any) -> dict[str, Any]:
    """A manifest file's spec with its field types checked ('shot': true was evaluated as
    "5-way True-shot" and written in a record its readers then refused)."""
    if not isinstance(spec, dict):
        raise ManifestError(f"manifest field spec is {type(spec).__name__}, not an object")
    least = {"way": 1, "shot": 1, "queries": 0, "seed": 0}
    for name in least.keys() & spec.keys():
        _whole(spec[name], f"spec.{name}", least[name])
    for name in ("dataset", "split"):
        if not isinstance(spec.get(name, ""), str):
            raise ManifestError(f"manifest field spec.{name} is {spec[name]!r}, not text")
    return spec


def _equal_pairs(earlier: np.ndarray) -> int:
    """How many pairs of episodes are equal, from :meth:`Manifest.repeats`' ``earlier``
    (each repeat's first occurrence): a group of ``s`` equal episodes gives ``s(s-1)/2``."""
    sizes = np.unique(earlier, return_counts=True)[1] + 1
    return int((sizes * (sizes - 1) // 2).sum())


def _equal_pairs_moments(manifest: Manifest) -> tuple[float, float]:
    """Mean and standard deviation of the number of equal pairs among the manifest's episodes
    if :func:`make_manifest` drew them over the class pools they use (``(0, 0)`` when no pool
    can draw them).

    With ``n`` independent draws from episode probabilities ``p_e``, the equal pairs ``X``
    have mean ``C(n, 2) s2`` and variance ``C(n, 2) (s2 - s2^2) + 6 C(n, 3) (s3 - s2^2)``
    (pairs sharing a draw are correlated), ``s_k = sum_e p_e^k``. The ordered way-tuple of
    ``C`` classes is uniform and so are each chosen class's ordered ``shot + queries``
    videos, so ``s_k = way! e_way(x^(k-1)) / P(C, way)^k`` with ``x_c = 1 / P(n_c, shot +
    queries)`` and ``e_way`` the elementary symmetric sum. The pools in use are subsets of
    the real ones, so this overstates the real expectation.
    """
    pools = manifest.pools_in_use()
    spec = manifest.spec
    if pools is None or len(pools) < spec.way:
        return 0.0, 0.0
    need = spec.shot + spec.queries
    x = [1.0 / math.perm(len(videos), need) for videos in pools.values()]
    tuples = math.perm(len(pools), spec.way)
    s2 = math.factorial(spec.way) * _elementary(x, spec.way) / tuples**2
    s3 = math.factorial(spec.way) * _elementary([v * v for v in x], spec.way) / tuples**3
    n = manifest.episodes
    mean = math.comb(n, 2) * s2
    variance = math.comb(n, 2) * (s2 - s2 * s2) + 6 * math.comb(n, 3) * (s3 - s2 * s2)
    return mean, math.sqrt(max(variance, 0.0))


def _elementary(values: list[float], k: int) -> float:
    """The elementary symmetric sum ``e_k`` of ``values``."""
    sums = [1.0] + [0.0] * k
    for v in values:
        for j in range(k, 0, -1):
            sums[j] += sums[j - 1] * v
    return sums[k]


#: How many standard deviations above the sampler's mean a manifest's equal pairs must be
#: (besides twice the mean) to be refused. The count is far from normal when a few likely
#: episodes dominate (classes with exactly shot + queries videos), so the margin is wide.
REPEAT_SIGMAS = 12.0


def _implausible(pairs: int, expected: float, spread: float) -> bool:
    """Whether ``pairs`` equal pairs are beyond what the sampler gives (mean ``expected``,
    standard deviation ``spread``): more than twice the mean and :data:`REPEAT_SIGMAS`
    standard deviations above it."""
    return pairs > 2 * expected and pairs > expected + REPEAT_SIGMAS * spread


def _index_array(values: Any, name: str) -> np.ndarray:
    """A manifest's integer array; a non-integer entry (e.g. ``1.7``) is an error, not
    truncated."""
    array = np.asarray(values)
    if array.size and array.dtype.kind not in "iu":
        raise ManifestError(f"manifest {name} must hold integers, found {array.dtype} values")
    return array.astype(np.int64).reshape(array.shape)


def _class_ids(video_classes: Sequence[int] | np.ndarray) -> np.ndarray:
    """``video_classes`` as int64 class ids. Whole numbers stored as floats are taken; any
    other value (``1.7``, NaN, a bool, a string) is an error: it was truncated to a class."""
    vc = np.asarray(video_classes)
    if vc.ndim != 1 or len(vc) == 0:
        raise ManifestError("video_classes must be a non-empty 1-D sequence of class ids")
    if vc.dtype.kind in "iu":
        return vc.astype(np.int64)
    if vc.dtype.kind == "f":
        odd = np.flatnonzero(~np.isfinite(vc) | (vc != np.round(vc)))
    else:
        odd = np.arange(len(vc))
    if not len(odd):
        return vc.astype(np.int64)
    i = int(odd[0])
    raise ManifestError(
        f"video_classes must be whole-number class ids, but video {i} has {vc.tolist()[i]!r} "
        f"({len(odd)} such value(s), {vc.dtype} array); a class id is never truncated or "
        "rounded. Pass each video's integer class id"
    )


class _EpisodeRange:
    """Map-style dataset of episode indices, so DataLoader workers can build episodes."""

    def __init__(self, pools, classes, spec, n):
        self.draw, self.n = EpisodeDrawer(pools, classes, spec), n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.draw(i)


def make_manifest(
    video_classes: Sequence[int] | np.ndarray,
    *,
    way: int = 5,
    shot: int = 1,
    queries: int = 1,
    episodes: int = 10_000,
    seed: int = 0,
    dataset: str = "",
    split: str = "",
    video_ids: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    min_videos_policy: str = "error",
    start: int = 0,
    num_workers: int = 0,
    meta: dict[str, Any] | None = None,
    remedies: Mapping[str, str] | None = None,
) -> Manifest:
    """Draw ``episodes`` episodes (indices ``start..start+episodes-1``) over a video pool.

    Args:
        video_classes: one class id per video; a video's position is its index.
        way, shot, queries: N-way K-shot with ``queries`` queries per class.
        seed, dataset, split: hashed into every episode's random stream.
        min_videos_policy: ``"error"`` (default) or ``"drop"`` classes with too few videos.
        num_workers: build episodes in that many DataLoader workers (same result).
        remedies: what an infeasible setting's error tells the user to do, per kind
            (:func:`check_feasible`); by default this function's own options
            (``min_videos_policy='drop'`` for classes short of videos).
    """
    vc = _class_ids(video_classes)
    if episodes < 1:
        raise ManifestError(f"a manifest needs at least one episode, got episodes={episodes}")
    if video_ids is not None and len(video_ids) != len(vc):
        raise ManifestError(f"{len(video_ids)} video_ids for {len(vc)} videos")
    # numpy integers (a grid's) as ints; a negative seed was drawn, then refused at load
    way, shot, queries, seed = (
        int(v) if isinstance(v, np.integer) else v for v in (way, shot, queries, seed)
    )
    for name, value in (("way", way), ("shot", shot), ("queries", queries)):
        _whole(value, f"spec.{name}", None)  # their ranges are checked with the pools
    _whole(seed, "spec.seed", 0)
    spec = EpisodeSpec(way, shot, queries, seed, dataset, split)
    pools = class_pools(vc)
    meta = dict(meta or {})
    if min_videos_policy == "drop":
        dropped = sorted(c for c, v in pools.items() if len(v) < shot + queries)
        pools = {c: v for c, v in pools.items() if c not in dropped}
        if dropped:
            meta["dropped_classes"] = dropped
    elif min_videos_policy != "error":
        raise ManifestError(
            f"min_videos_policy must be 'error' or 'drop', not {min_videos_policy!r}"
        )
    check_feasible(
        pools, spec, class_names, {"videos": DROP_REMEDY} if remedies is None else remedies
    )
    classes = np.array(sorted(pools), dtype=np.int64)
    if num_workers > 0:
        episodes_list = _episodes_in_workers(pools, classes, spec, start, episodes, num_workers)
    else:
        draw = EpisodeDrawer(pools, classes, spec)
        episodes_list = [draw(i) for i in range(start, start + episodes)]
    if start:
        meta["first_episode"] = start
    c, s, q = (np.stack([e[k] for e in episodes_list]) for k in range(3))
    if queries == 0:
        q = np.zeros((episodes, 0), dtype=np.int64)
    ids = list(video_ids) if video_ids is not None else None
    return Manifest(spec, c, s, q, len(vc), ids, meta, drawn=True)


def _episodes_in_workers(pools, classes, spec, start, n, num_workers):
    from torch.utils.data import DataLoader, Subset

    from fsarbench.data.forking import start_workers

    full = _EpisodeRange(pools, classes, spec, start + n)
    loader = DataLoader(
        Subset(full, range(start, start + n)),
        batch_size=None,
        num_workers=num_workers,
        collate_fn=lambda x: x,
    )
    return list(start_workers(loader))


def draw_test_manifest(
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
    """The official test episodes of a setting: what ``run`` and ``eval`` evaluate on and
    ``verify`` redraws, over the test split's usable videos (``test_classes``, one class id
    per video) of ``split_variant``. ``remedies``: what an infeasible setting's error tells
    the caller's user (:data:`DEFAULT_REMEDIES` by default: the commands have no
    ``min_videos_policy``)."""
    return make_manifest(
        test_classes,
        way=way,
        shot=shot,
        queries=queries,
        episodes=episodes,
        seed=seed,
        dataset=split_variant,
        split="test",
        class_names=class_names,
        remedies=DEFAULT_REMEDIES if remedies is None else remedies,
    )


def manifest_class_names(
    manifest: Manifest, video_classes: Sequence[int], class_names: Sequence[str]
) -> list[str]:
    """Names of the manifest's class ids, from the pool's own class of every video.

    A manifest may number classes its own way; what must hold is that each of its classes
    covers videos of one pool class, a different one per manifest class. Anything else means
    the manifest was drawn for another pool (its labels would disagree with the videos) and
    raises :class:`ManifestError`.

    Args:
        video_classes: ``[N]`` the pool's class id of every video the manifest indexes.
        class_names: pool class id -> name.

    Returns:
        manifest class id -> name (``[max id + 1]``; ids no episode uses are named by number).
    """
    ids = np.asarray(video_classes, dtype=np.int64)
    videos = np.concatenate([manifest.support, manifest.query], 1)
    if videos.size and int(videos.max()) >= len(ids):
        raise ManifestError(
            f"the manifest indexes video {int(videos.max())}, the features hold {len(ids)}: "
            "it was drawn for another pool; draw it from these features' class ids"
        )
    labels = np.concatenate([manifest.support_labels, manifest.query_labels], 1)
    own = np.take_along_axis(manifest.classes, labels, 1)
    pairs = np.unique(np.stack([own.ravel(), ids[videos].ravel()], 1), axis=0)
    for column, what in ((0, "manifest class"), (1, "feature class")):
        values, counts = np.unique(pairs[:, column], return_counts=True)
        if (counts > 1).any():
            bad = int(values[counts > 1][0])
            other = pairs[pairs[:, column] == bad][:, 1 - column].tolist()
            raise ManifestError(
                f"the manifest does not fit these features: {what} {bad} meets "
                f"{'feature classes' if column == 0 else 'manifest classes'} {other[:5]}; the "
                "manifest was drawn for another split or pool. Draw it from these features' "
                "class ids (make_manifest(cache.class_indices, ...) in Python)."
            )
    names = [str(c) for c in range(int(manifest.classes.max(initial=-1)) + 1)]
    for mine, theirs in pairs.tolist():
        names[mine] = str(class_names[theirs])
    return names
