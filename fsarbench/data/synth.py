"""The embedded synthetic benchmark ``synth``: real mp4 files, generated on first use.

Three class categories make the benchmark's point (see docs/user-guide.md, "The synthetic
benchmark `synth`"):

- ``appearance`` (``scene_XX``): a class-specific background (colour and pattern) with random
  foreground actions -- recognisable from any single frame, like Kinetics/UCF101.
- ``temporal`` (``order_XX_fwd`` / ``order_XX_rev``): pairs of classes showing the same three
  atomic actions A->B->C and C->B->A over one neutral background, so mean pooling cannot tell
  the two members of a pair apart while order-aware matching can (like SSv2).
- ``composite`` (``composite_XX``): start action, a long ambiguous middle (two random actions
  overlaid, the same pool for every composite class) and an end action.

The variant ``synth-planted`` (``kind="planted"``) is built for SGTM's saliency ablations
(Tables 3 and 4): every class is an ordered pair of atomic actions shown at full opacity inside
one short *action window* (about 40% of the video, at a random position), and every other frame
is *background*: two atomic actions overlaid at half opacity, drawn for every class from one
pool of actions that no class uses. Only the window tells classes apart, so a mask that
keeps "the most salient frames" means what its name says; ``window`` in the metadata gives
each video's window frames.

Classes are split train/val/test by class; every video is deterministic from the seed.
Generation writes each file atomically into ``<dir>.partial`` (a rerun resumes there) and
renames the folder when complete.
"""

from __future__ import annotations

import colorsys
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs

from fsarbench.data.datasets import VideoRecord
from fsarbench.data.forking import clean_fork
from fsarbench.data.sampling import frame_rng
from fsarbench.data.synth_render import (
    ACTIONS,
    Segment,
    neutral_background,
    render_video,
    scene_background,
)
from fsarbench.io import atomic_write_json, file_lock, md5_file, stable_hash

__all__ = [
    "SYNTH_VERSION",
    "SynthConfig",
    "SynthClass",
    "SynthDataset",
    "ensure_synth",
    "generation_workers",
    "plan_classes",
    "render_class_video",
    "write_video",
]

SYNTH_VERSION = 1
SPLIT_PLAN = {"train": (8, 4, 8), "val": (2, 2, 2), "test": (4, 3, 4)}
"""split -> (appearance classes, reversed pairs, composite classes)."""
PLANTED_PLAN = {"train": 16, "val": 5, "test": 10}
"""``synth-planted``: split -> number of planted-window classes."""
PLANTED_WINDOW = 0.4
"""Fraction of a ``synth-planted`` video's frames inside its action window."""
PLANTED_MIN_FRAMES = 6
PLANTED_CLASS_ACTIONS = tuple(range(8))
"""Atomic actions that make ``synth-planted`` classes (ordered pairs of them)."""
PLANTED_BACKGROUND_ACTIONS = tuple(range(8, len(ACTIONS)))
"""Atomic actions of its background frames, shared by every class and in no class."""
KINDS = ("standard", "planted")
PATTERNS = ("diag", "rings", "checker", "gradient")


@dataclass(frozen=True)
class SynthConfig:
    """Size of the generated benchmark (the default is what ``make run`` uses)."""

    videos_per_class: int = 20
    size: int = 64
    min_frames: int = 12
    max_frames: int = 24
    codec: str = "mpeg4"  # libx264 output is not byte-reproducible run to run
    fps: int = 12


@dataclass(frozen=True)
class SynthClass:
    """One class: ``actions`` are indices into ``ACTIONS`` (order matters for temporal)."""

    name: str
    split: str
    category: str  # appearance, temporal, composite, planted
    actions: tuple[int, ...] = ()
    partner: str | None = None
    hue: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pattern: str = ""
    freq: float = 0.0

    def info(self) -> dict[str, Any]:
        d = asdict(self)
        d["action_names"] = [ACTIONS[a].name for a in self.actions]
        return d


def _scene_hues(n: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    hues = rng.permutation(n) / n
    sv = [(0.75, 0.85), (0.45, 0.6), (0.9, 0.45)]
    return [tuple(255 * c for c in colorsys.hsv_to_rgb(h, *sv[i % 3])) for i, h in enumerate(hues)]


def _sequences(n: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """``n`` action triples, distinct and none the reverse of another."""
    seen: set[tuple[int, ...]] = set()
    out = []
    while len(out) < n:
        seq = tuple(int(a) for a in rng.choice(len(ACTIONS), 3, replace=False))
        if seq in seen or seq[::-1] in seen:
            continue
        seen.add(seq)
        out.append(seq)
    return out


def _end_pairs(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    pairs = [(a, b) for a in range(len(ACTIONS)) for b in range(len(ACTIONS)) if a != b]
    return [pairs[i] for i in rng.choice(len(pairs), n, replace=False)]


def plan_classes(seed: int, kind: str = "standard") -> list[SynthClass]:
    """Every class of every split of the ``kind`` benchmark, deterministic from ``seed``."""
    if kind == "planted":
        return _plan_planted(seed)
    rng = np.random.default_rng([seed, SYNTH_VERSION, 7])
    totals = [sum(p[i] for p in SPLIT_PLAN.values()) for i in range(3)]
    hues, seqs, ends = (
        _scene_hues(totals[0], rng),
        _sequences(totals[1], rng),
        _end_pairs(totals[2], rng),
    )
    classes: list[SynthClass] = []
    counters = [0, 0, 0]
    for split, (n_app, n_pairs, n_comp) in SPLIT_PLAN.items():
        for _ in range(n_app):
            i = counters[0]
            classes.append(
                SynthClass(
                    f"scene_{i:02d}",
                    split,
                    "appearance",
                    hue=hues[i],
                    pattern=PATTERNS[i % 4],
                    freq=float(rng.uniform(4, 10)),
                )
            )
            counters[0] += 1
        for _ in range(n_pairs):
            i, seq = counters[1], seqs[counters[1]]
            fwd, rev = f"order_{i:02d}_fwd", f"order_{i:02d}_rev"
            classes.append(SynthClass(fwd, split, "temporal", seq, rev))
            classes.append(SynthClass(rev, split, "temporal", seq[::-1], fwd))
            counters[1] += 1
        for _ in range(n_comp):
            i = counters[2]
            classes.append(SynthClass(f"composite_{i:02d}", split, "composite", ends[i]))
            counters[2] += 1
    return classes


def _plan_planted(seed: int) -> list[SynthClass]:
    """Ordered pairs of the class actions, distinct across every split."""
    rng = np.random.default_rng([seed, SYNTH_VERSION, 11])
    pool = [(a, b) for a in PLANTED_CLASS_ACTIONS for b in PLANTED_CLASS_ACTIONS if a != b]
    picks = rng.choice(len(pool), sum(PLANTED_PLAN.values()), replace=False)
    classes, i = [], 0
    for split, n in PLANTED_PLAN.items():
        for _ in range(n):
            classes.append(SynthClass(f"planted_{i:02d}", split, "planted", pool[picks[i]]))
            i += 1
    return classes


def planted_window(total: int, rng: np.random.Generator) -> tuple[int, int]:
    """``[start, stop)`` of the action window of a ``total``-frame planted video."""
    if total < PLANTED_MIN_FRAMES:
        raise ValueError(
            f"synth-planted videos need at least {PLANTED_MIN_FRAMES} frames (a 4-frame window "
            f"and background around it), got {total}: raise SynthConfig.min_frames"
        )
    length = max(4, round(PLANTED_WINDOW * total))
    start = int(rng.integers(0, total - length + 1))
    return start, start + length


def _planted_segments(c: SynthClass, total: int, rng: np.random.Generator) -> list[Segment]:
    start, stop = planted_window(total, rng)
    half = (stop - start) // 2
    segments = []
    for length in (start, total - stop):  # background before and after the window
        pair = tuple(int(a) for a in rng.choice(PLANTED_BACKGROUND_ACTIONS, 2, replace=False))
        segments.append(Segment(pair, length))
    window = [Segment((c.actions[0],), half), Segment((c.actions[1],), stop - start - half)]
    return [s for s in [segments[0], *window, segments[1]] if s.length > 0]


def _lengths(total: int, weights: np.ndarray) -> list[int]:
    """Split ``total`` frames by ``weights`` with at least 2 frames per segment."""
    raw = weights / weights.sum() * (total - 2 * len(weights))
    out = np.floor(raw).astype(int) + 2
    out[np.argmax(raw - np.floor(raw))] += total - out.sum()
    return [int(x) for x in out]


def _segments(c: SynthClass, total: int, rng: np.random.Generator) -> list[Segment]:
    n = len(ACTIONS)
    if c.category == "planted":
        return _planted_segments(c, total, rng)
    if c.category == "appearance":
        acts = [int(a) for a in rng.choice(n, 2, replace=False)]
        lens = _lengths(total, rng.uniform(0.7, 1.3, 2))
        return [Segment((a,), k) for a, k in zip(acts, lens)]
    if c.category == "temporal":
        lens = _lengths(total, rng.uniform(0.7, 1.3, 3))
        return [Segment((a,), k) for a, k in zip(c.actions, lens)]
    middle = tuple(int(a) for a in rng.choice(n, 2, replace=False))
    lens = _lengths(total, np.array([1.0, 2.0, 1.0]) * rng.uniform(0.8, 1.2, 3))
    return [
        Segment((c.actions[0],), lens[0]),
        Segment(middle, lens[1]),
        Segment((c.actions[1],), lens[2]),
    ]


def render_class_video(c: SynthClass, index: int, config: SynthConfig, seed: int) -> np.ndarray:
    """Video ``index`` of class ``c``: ``uint8 [L, size, size, 3]``, L in [min, max] frames."""
    return _render(c, index, config, seed)[0]


def _render(
    c: SynthClass, index: int, config: SynthConfig, seed: int
) -> tuple[np.ndarray, list[Segment]]:
    rng = frame_rng(seed, f"synth/{c.name}", index)
    total = int(rng.integers(config.min_frames, config.max_frames + 1))
    if c.category == "appearance":
        bg = scene_background(config.size, np.asarray(c.hue), c.pattern, c.freq, rng)
    else:
        bg = neutral_background(config.size, rng)
    segments = _segments(c, total, rng)
    return render_video(bg, segments, rng), segments


def _window_of(segments: list[Segment]) -> list[int]:
    """``[start, stop)`` frames of a planted video's single-action (window) segments."""
    starts = np.cumsum([0] + [s.length for s in segments])
    inside = [i for i, s in enumerate(segments) if len(s.actions) == 1]
    return [int(starts[inside[0]]), int(starts[inside[-1] + 1])]


def write_video(path: Path, frames: np.ndarray, codec: str = "mpeg4", fps: int = 12) -> None:
    """Encode ``uint8 [L, H, W, 3]`` into an mp4 with PyAV, atomically (tmp file + rename)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = (
                {"crf": "10", "preset": "veryfast", "threads": "1"}
                if (codec == "libx264")
                else {"qscale": "2"}
            )
            for f in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
            container.mux(stream.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def default_synth_cache() -> Path:
    env = os.environ.get("FSAR_SYNTH")
    return Path(env) if env else Path(platformdirs.user_cache_dir("fsarbench")) / "synth"


def _prefix(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown synth kind {kind!r}; kinds: {', '.join(KINDS)}")
    return "synth" if kind == "standard" else f"synth-{kind}"


def synth_dir(
    cache_dir: str | Path | None, seed: int, config: SynthConfig, kind: str = "standard"
) -> Path:
    base = Path(cache_dir) if cache_dir is not None else default_synth_cache()
    spec = {"v": SYNTH_VERSION, "seed": seed, **asdict(config)}
    if kind != "standard":  # the standard benchmark's folder name predates kinds
        spec["kind"] = kind
    return base / f"{_prefix(kind)}-v{SYNTH_VERSION}-seed{seed}-{stable_hash(spec, 10)}"


def generation_workers() -> int:
    """Processes that render the benchmark: the cores this process may use (at most 8), or
    ``$FSAR_SYNTH_WORKERS``. Every video is rendered from its own seed, so the files are the
    same bytes for any number of workers."""
    from fsarbench.env_settings import env_number

    workers = env_number(
        "FSAR_SYNTH_WORKERS", None, kind=int, minimum=1, what="processes that render synth"
    )
    if workers is not None:  # 0 was taken as 1
        return int(workers)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1))


@dataclass(frozen=True)
class _VideoJob:
    """One video to render and write under ``work`` (a picklable unit of generation)."""

    work: Path
    cls: SynthClass
    index: int
    config: SynthConfig
    seed: int


def _make_video(job: _VideoJob) -> dict[str, Any]:
    """Render ``job``'s video, write it unless it exists, and return its metadata entry."""
    c, config = job.cls, job.config
    rel = Path("videos") / c.name / f"{c.name}_{job.index:03d}.mp4"
    path = job.work / rel
    frames, segments = _render(c, job.index, config, job.seed)
    if not path.exists():
        write_video(path, frames, config.codec, config.fps)
    video = {
        "video_id": path.stem,
        "class_name": c.name,
        "split": c.split,
        "path": str(rel),
        "frames": int(len(frames)),
        "md5": md5_file(path),
    }
    if c.category == "planted":
        video["window"] = _window_of(segments)
    return video


def _map_jobs(jobs: list[_VideoJob], workers: int) -> list[dict[str, Any]]:
    """``_make_video`` of every job, in order, over ``workers`` processes.

    Forked where the platform can (spawned workers would re-import torch, and re-run a
    caller's unguarded script). A forked child inherits the caller's garbage too: one that
    collected a decord reader deadlocked in its destructor (the reader's threads do not exist
    in the child), so garbage is collected here first and the rest frozen out of the
    children's collections."""
    if workers <= 1 or len(jobs) < 2:
        return [_make_video(job) for job in jobs]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    workers = min(workers, len(jobs))
    with clean_fork(), ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        chunk = max(1, len(jobs) // (8 * workers))
        return list(pool.map(_make_video, jobs, chunksize=chunk))


def _generate(
    work: Path, seed: int, config: SynthConfig, kind: str, workers: int | None = None
) -> dict[str, Any]:
    """Write every missing video under ``work``; metadata of all videos."""
    classes = plan_classes(seed, kind)
    jobs = [
        _VideoJob(work, c, i, config, seed) for c in classes for i in range(config.videos_per_class)
    ]
    videos = _map_jobs(jobs, generation_workers() if workers is None else workers)
    meta = {
        "format": 1,
        "version": SYNTH_VERSION,
        "seed": seed,
        "config": asdict(config),
        "classes": [c.info() for c in classes],
        "videos": videos,
    }
    return meta if kind == "standard" else {**meta, "kind": kind}


def ensure_synth(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    config: SynthConfig | None = None,
    kind: str = "standard",
    workers: int | None = None,
) -> Path:
    """The folder of the synthetic dataset of ``kind``, generating it first if needed.

    ``cache_dir`` defaults to ``$FSAR_SYNTH`` or ``<user cache>/fsarbench/synth``. The folder
    holds ``synth.json`` (classes, categories, videos with md5) and ``videos/<class>/*.mp4``.
    ``workers`` processes render the videos (default :func:`generation_workers`; the files
    are the same bytes for any number).
    """
    config = config or SynthConfig()
    final = synth_dir(cache_dir, seed, config, kind)
    if (final / "synth.json").is_file():
        return final
    # Concurrent first uses (DataLoader workers, torchrun ranks) wait for one generator;
    # an interrupted generation resumes from its .partial folder.
    with file_lock(final.with_name(final.name + ".lock")):
        if (final / "synth.json").is_file():
            return final
        work = final.with_name(final.name + ".partial")
        meta = _generate(work, seed, config, kind, workers)
        atomic_write_json(work / "synth.json", meta)
        os.replace(work, final)
    return final


class SynthDataset:
    """``get_dataset("synth", root=cache_dir, seed=0, config=SynthConfig())`` (and
    ``"synth-planted"``, the same with ``kind="planted"``).

    ``root`` is the cache folder (default ``$FSAR_SYNTH`` or the user cache); data are
    generated on the first call that needs videos.
    """

    flip_ok = False  # atomic actions move left/right

    def __init__(
        self,
        *,
        root: str | Path | None = None,
        seed: int = 0,
        config: SynthConfig | None = None,
        splits_dir: str | Path | None = None,
        kind: str = "standard",
    ):
        del splits_dir  # accepted for a uniform get_dataset call; synth has no split lists
        self.cache_dir, self.seed, self.config = root, seed, config or SynthConfig()
        self.kind, self.name = kind, _prefix(kind)
        self.variant = f"{self.name}-v{SYNTH_VERSION}-seed{seed}"
        self._meta: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return synth_dir(self.cache_dir, self.seed, self.config, self.kind)

    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            root = ensure_synth(self.cache_dir, self.seed, self.config, self.kind)
            self._meta = json.loads((root / "synth.json").read_text())
        return self._meta

    def available(self) -> bool:
        return (self.path / "synth.json").is_file()

    def class_names(self, split: str) -> list[str]:
        return sorted(c["name"] for c in self.meta()["classes"] if c["split"] == split)

    def class_info(self, split: str) -> dict[str, dict[str, Any]]:
        """class name -> category, actions, partner (reversed pair), scene colour."""
        return {c["name"]: c for c in self.meta()["classes"] if c["split"] == split}

    def windows(self, split: str) -> dict[str, tuple[int, int]]:
        """video id -> ``[start, stop)`` frames of its action window (``synth-planted``)."""
        return {
            v["video_id"]: tuple(v["window"])
            for v in self.meta()["videos"]
            if v["split"] == split and "window" in v
        }

    def videos(self, split: str) -> list[VideoRecord]:
        names = self.class_names(split)
        if not names:
            raise KeyError(f"{self.name} has no split {split!r}; splits: train, val, test")
        index = {c: i for i, c in enumerate(names)}
        root = self.path
        return [
            VideoRecord(v["video_id"], v["class_name"], index[v["class_name"]], root / v["path"])
            for v in self.meta()["videos"]
            if v["split"] == split
        ]

    def split_md5s(self) -> dict[str, str]:
        """split -> hash of its (video id, file md5) list."""
        out = {}
        for split in ("train", "val", "test"):
            rows = [(v["video_id"], v["md5"]) for v in self.meta()["videos"] if v["split"] == split]
            out[split] = stable_hash(rows, 32)
        return out

    def provenance(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "variant": self.variant,
            "config": asdict(self.config),
            "splits": self.split_md5s(),
        }
