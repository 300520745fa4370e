"""Feature extraction: clips -> backbone -> ``[T, D]`` float16 per video and view, cached.

Clips are decoded in DataLoader workers (pinned memory on CUDA, at a lower CPU priority)
while the main process runs the backbone in ``torch.inference_mode`` (channels-last + float16
autocast on CUDA by default: ``precision``, part of the cache key) and a writer thread stores
the features behind it; the frames of ``batch_size`` videos go through one forward.
Extraction resumes after an interruption: done entries are skipped, and the cache's done
mask is flushed every ``flush_every_s`` seconds.

The clip dataset (``fsarbench.data.clips.ClipDataset`` or any ``torch.utils.data.Dataset``)
yields dicts ``{"clip": float [T, 3, H, W], "index": int, "view": int, "ok": bool,
"error": str | None}``; position ``p`` of a dataset with ``V`` views holds video ``p // V``,
view ``p % V``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from fsarbench.config import check_range
from fsarbench.data.decode import JPEG_SUFFIXES, VideoDecodeError
from fsarbench.data.forking import start_workers
from fsarbench.data.sampling import TooShortError, get_sampler
from fsarbench.data.transforms import get_transform
from fsarbench.data.workers import default_workers
from fsarbench.features.backbones import Backbone, create_backbone
from fsarbench.features.cache import CacheKey, FeatureCache, cache_folder
from fsarbench.features.made_with import extraction_environment, reused
from fsarbench.features.writer import CacheWriter
from fsarbench.io import stable_hash
from fsarbench.progress import progress_bar
from fsarbench.provenance import pipeline_digest

if TYPE_CHECKING:
    from fsarbench.data.clips import ClipDataset

# uint8 clips [..., 3, H, W] -> the backbone's float input (a transform's pixel_norm())
Normalise = Callable[[Tensor], Tensor]

# How much lower than the forward's the decode workers' CPU priority is (``os.nice``): the
# lowest, so decoding fills the cores' idle moments instead of preempting one of the
# forward's intra-op threads (which stalls the others at the next barrier). Decoding is ~8x
# faster than the forward, so it keeps up (docs/speed.md: 0.76 -> 0.83 of forward-only).
DECODE_NICENESS = 19

__all__ = [
    "ClipBatch",
    "ExtractStats",
    "SplitExtractConfig",
    "collate_clips",
    "PRECISIONS",
    "encode_clips",
    "resolve_precision",
    "exclusive",
    "extract_features",
    "extract_split",
    "video_rows",
    "find_split_cache",
    "clip_dataset",
    "open_or_create",
    "split_cache_key",
]


@dataclass
class ClipBatch:
    """Readable clips ``clips [B, T, 3, H, W]`` of entries ``(index [B], view [B])``, and the
    entries that could not be read as ``(index, view, error)``."""

    clips: Tensor
    index: Tensor
    view: Tensor
    failed: list[tuple[int, int, str]] = field(default_factory=list)

    def pin_memory(self) -> ClipBatch:
        """Called by the DataLoader's pin-memory thread."""
        return ClipBatch(self.clips.pin_memory(), self.index, self.view, self.failed)


@dataclass
class ExtractStats:
    """What one extraction run did."""

    entries: int  # videos x views in the cache
    already_done: int  # skipped because a previous run stored them
    written: int
    failed: int
    frames: int  # frames through the backbone in this run
    seconds: float
    errors: dict[str, str] = field(default_factory=dict)  # "index/view" -> message, this run
    wait_seconds: float = 0.0  # blocked waiting for decoded clips (decoding not hidden)
    forward_seconds: float = 0.0  # in the backbone (on CUDA: launching it, unless synced)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _Entries(Dataset):
    """The dataset positions still to extract; a clip that raises becomes a failed item, and
    an item naming another entry than its position is an error."""

    def __init__(self, dataset: Dataset, positions: np.ndarray, num_views: int) -> None:
        self.dataset = dataset
        self.positions = positions
        self.num_views = num_views

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        p = int(self.positions[i])
        index, view = divmod(p, self.num_views)
        try:
            item = self.dataset[p]
        except (VideoDecodeError, TooShortError, OSError) as err:
            # a broken file must not end a long extraction; anything else is a bug that would
            # quietly drop every video it hits from every split, so it stops the extraction
            return {
                "clip": None,
                "index": index,
                "view": view,
                "ok": False,
                "error": f"{type(err).__name__}: {err}",
            }
        if (int(item["index"]), int(item["view"])) != (index, view):
            raise ValueError(
                f"dataset position {p} yielded video {item['index']} view "
                f"{item['view']}; expected video {index} view {view} "
                f"(position = index * views + view, views={self.num_views})"
            )
        return item


def collate_clips(items: list[dict[str, Any]]) -> ClipBatch:
    """Stack the readable clips of ``items``; list the others with their errors."""
    ok = [it for it in items if it["ok"]]
    failed = [
        (int(it["index"]), int(it["view"]), str(it["error"] or "unreadable"))
        for it in items
        if not it["ok"]
    ]
    if not ok:
        return ClipBatch(
            torch.empty(0),
            torch.empty(0, dtype=torch.long),
            torch.empty(0, dtype=torch.long),
            failed,
        )
    shapes = {tuple(it["clip"].shape) for it in ok}
    if len(shapes) > 1:
        raise ValueError(f"clips of one extraction must share one shape [T, 3, H, W], got {shapes}")
    clips = torch.stack([_clip_tensor(it["clip"]) for it in ok])
    index = torch.tensor([int(it["index"]) for it in ok])
    view = torch.tensor([int(it["view"]) for it in ok])
    return ClipBatch(clips, index, view, failed)


def _clip_tensor(clip: Any) -> Tensor:
    """A clip as uint8 pixels (kept: normalised on the device) or float32."""
    clip = torch.as_tensor(clip)
    return clip if clip.dtype == torch.uint8 else clip.float()


def open_or_create(
    cache_dir: str | Path,
    *,
    video_ids: Sequence[str],
    num_views: int,
    num_frames: int,
    feature_dim: int,
    classes: list[str] | None = None,
    class_indices: list[int] | None = None,
    key: CacheKey | None = None,
) -> FeatureCache:
    """Open the cache at ``cache_dir`` to resume it (checking it fits), or create it."""
    path = Path(cache_dir)
    if not (path / "index.json").exists():
        return FeatureCache.create(
            path,
            video_ids=list(video_ids),
            num_views=num_views,
            num_frames=num_frames,
            feature_dim=feature_dim,
            classes=classes,
            class_indices=class_indices,
            key=key,
        )
    cache = FeatureCache.open(path, writable=True)
    expected = (len(video_ids), num_views, num_frames, feature_dim)
    have = (len(cache), cache.num_views, *cache.feature_shape)
    if have != expected or cache.video_ids != list(video_ids):
        raise ValueError(
            f"{path} holds a cache of [N, V, T, D] = {list(have)} for other videos "
            f"or settings than asked ({list(expected)}); use another cache folder"
        )
    if key is not None and cache.key != key.digest():
        raise ValueError(f"{path} has key {cache.key}, not {key.digest()}; use another folder")
    return cache


def extract_features(
    dataset: Dataset,
    backbone: Backbone,
    *,
    cache_dir: str | Path,
    num_frames: int,
    video_ids: Sequence[str] | None = None,
    num_views: int = 1,
    classes: list[str] | None = None,
    class_indices: list[int] | None = None,
    key: CacheKey | None = None,
    batch_size: int = 8,
    num_workers: int = 2,
    device: str | torch.device = "cpu",
    flush_every_s: float = 30.0,
    retry_failed: bool = True,
    progress: bool = True,
    normalise: Normalise | None = None,
    precision: str = "auto",
) -> tuple[FeatureCache, ExtractStats]:
    """Extract ``[T, D]`` features of every (video, view) of ``dataset`` into ``cache_dir``.

    ``dataset`` has ``len(video_ids) * num_views`` positions (``video_ids`` defaults to
    ``"0".."N-1"``); ``batch_size`` videos (``batch_size * T`` frames) go through one forward.
    Entries already stored are skipped; failed ones are retried when ``retry_failed``.
    ``normalise``: for a dataset of ``uint8`` clips (``ClipOptions(pixels=True)``), its
    transform's ``pixel_norm()``, applied on ``device`` after the copy. ``precision``: one
    of :data:`PRECISIONS` (a ``key`` names the resolved one).
    Returns the cache (writable) and what this run did.
    """
    if key is not None and key.precision != resolve_precision(precision, device):
        raise ValueError(
            f"cache key says precision {key.precision!r}, the extraction would run in "
            f"{resolve_precision(precision, device)!r} on {device}"
        )
    if len(dataset) % num_views:
        raise ValueError(f"dataset length {len(dataset)} is not a multiple of views={num_views}")
    ids = [str(i) for i in range(len(dataset) // num_views)] if video_ids is None else video_ids
    if len(ids) * num_views != len(dataset):
        raise ValueError(
            f"dataset has {len(dataset)} positions, expected {len(ids)} videos x {num_views} views"
        )
    with exclusive(cache_dir):
        cache = open_or_create(
            cache_dir,
            video_ids=ids,
            num_views=num_views,
            num_frames=num_frames,
            feature_dim=backbone.feature_dim,
            classes=classes,
            class_indices=class_indices,
            key=key,
        )
        todo = ~cache.done_mask if retry_failed else ~(cache.done_mask | cache.failed_mask)
        positions = np.flatnonzero(todo.reshape(-1))
        env, noted = extraction_environment(device), False
        if positions.size:  # noted before writing: a killed run's features are credited
            cache.note_earlier_features()
            noted = cache.note_extraction(env)
        stats = ExtractStats(
            entries=todo.size,
            already_done=int(cache.done_mask.sum()),
            written=0,
            failed=0,
            frames=0,
            seconds=0.0,
        )
        loader = _loader(_Entries(dataset, positions, num_views), batch_size, num_workers, device)
        encoder = _Encoder(backbone, torch.device(device), normalise, precision)
        try:
            _run(loader, encoder, cache, stats, flush_every_s, progress)
        finally:  # an extraction that stored nothing (every video failed, or the writer
            # refused its first batch: `written` counts batches handed over) made nothing
            if noted and int(cache.done_mask.sum()) == stats.already_done:
                cache.forget_extraction(env)
    return cache, stats


@contextmanager
def exclusive(cache_dir: str | Path) -> Iterator[None]:
    """Hold ``cache_dir``'s lock (created if needed): two extractions never write one cache
    at once; a second one waits for the first (saying who holds it) and then finds its work
    done (a killed holder releases the lock with its process)."""
    from fsarbench.locks import held

    path = Path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    with held(path / ".lock", what=f"feature cache {path}"):
        yield


def _loader(
    entries: _Entries, batch_size: int, num_workers: int, device: str | torch.device
) -> DataLoader:
    return DataLoader(
        entries,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_clips,
        pin_memory=torch.device(device).type == "cuda",
        prefetch_factor=4 if num_workers > 0 else None,
        worker_init_fn=_lower_priority if num_workers > 0 else None,
    )


def _run(
    loader: DataLoader,
    encoder: _Encoder,
    cache: FeatureCache,
    stats: ExtractStats,
    flush_every_s: float,
    progress: bool,
) -> None:
    """The extraction loop: the loader's workers decode ahead, this thread runs the
    backbone, a :class:`~fsarbench.features.writer.CacheWriter` stores and flushes behind
    it; everything handed to the writer is stored and the cache flushed on any exit."""
    start = time.perf_counter()
    batches = start_workers(loader)  # workers start decoding while the model is prepared
    encoder.prepare()
    bar = progress_bar(total=len(loader.dataset), unit="clip", desc="extract", disable=not progress)
    try:
        with CacheWriter(cache, flush_every_s) as writer:
            for batch in _timed(batches, stats):
                _count_failed(stats, batch.failed)
                writer.mark_failed(batch.failed)
                if batch.clips.numel():
                    t0 = time.perf_counter()
                    feats = encoder(batch.clips)
                    stats.forward_seconds += time.perf_counter() - t0
                    writer.write(batch.index.numpy(), batch.view.numpy(), feats)
                    stats.written += len(batch.index)
                    stats.frames += batch.clips.shape[0] * batch.clips.shape[1]
                bar.update(len(batch.index) + len(batch.failed))
                bar.set_postfix(failed=stats.failed, refresh=False)
    finally:
        cache.flush()
        bar.close()
        stats.seconds = time.perf_counter() - start


def _timed(batches: Iterator[ClipBatch], stats: ExtractStats) -> Iterator[ClipBatch]:
    """``batches``, the time blocked on each added to ``stats.wait_seconds``."""
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        finally:
            stats.wait_seconds += time.perf_counter() - t0
        yield batch


def _count_failed(stats: ExtractStats, failed: list[tuple[int, int, str]]) -> None:
    for index, view, error in failed:
        stats.errors[f"{index}/{view}"] = error
        stats.failed += 1


def _lower_priority(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: decode at a lower CPU priority than the forward, so
    on busy cores decoding fills the forward's gaps instead of preempting its threads (a
    preempted intra-op thread stalls every other one at the next barrier)."""
    with contextlib.suppress(OSError):
        os.nice(DECODE_NICENESS)


def _prepare(backbone: Backbone, device: torch.device) -> Backbone:
    model = backbone.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def encode_clips(
    backbone: Backbone,
    clips: Tensor,
    device: torch.device,
    normalise: Normalise | None = None,
    precision: str = "auto",
) -> Tensor:
    """``clips [B, T, 3, H, W]`` -> float16 CPU features ``[B, T, D]`` in one forward."""
    return _forward(backbone, clips, device, normalise, precision).to("cpu", torch.float16)


class _Encoder:
    """The backbone of one extraction on its device: ``clips [B, T, 3, H, W]`` -> features
    ``[B, T, D]`` on the device (``uint8`` clips normalised there by ``normalise``)."""

    def __init__(
        self,
        model: Backbone,
        device: torch.device,
        normalise: Normalise | None,
        precision: str = "auto",
    ):
        self.model, self.device, self.normalise = model, device, normalise
        self.precision = precision

    def prepare(self) -> None:
        self.model = _prepare(self.model, self.device)

    def __call__(self, clips: Tensor) -> Tensor:
        return _forward(self.model, clips, self.device, self.normalise, self.precision)


#: What the backbone may compute in: "auto" is float16 autocast on CUDA and float32
#: elsewhere; "fp16"/"bf16" autocast on any device; "fp32" none.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``precision`` (one of :data:`PRECISIONS`) on ``device`` -> "fp32", "fp16" or "bf16"."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown extraction precision {precision!r}; known: {PRECISIONS}")
    if precision == "auto":
        return "fp16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def _forward(
    backbone: Backbone,
    clips: Tensor,
    device: torch.device,
    normalise: Normalise | None = None,
    precision: str = "auto",
) -> Tensor:
    """``clips [B, T, 3, H, W]`` -> features ``[B, T, D]`` on ``device`` in one forward, in
    ``precision`` (:func:`resolve_precision`: "auto" is float16 autocast on CUDA, the
    backbone's dtype elsewhere); copying them to the host is left to the caller (the cache
    writer's thread in :func:`extract_features`). ``uint8`` clips are normalised by
    ``normalise`` after the copy to ``device``."""
    if (clips.dtype == torch.uint8) != (normalise is not None):
        raise TypeError(
            f"{clips.dtype} clips with normalise={normalise!r}: uint8 clips "
            "(ClipOptions(pixels=True)) need their transform's pixel_norm(), float clips none"
        )
    b, t = clips.shape[:2]
    frames = clips.reshape(b * t, *clips.shape[2:]).to(device, non_blocking=True)
    with torch.inference_mode():
        if normalise is not None:
            frames = normalise(frames)
        if device.type == "cuda":
            frames = frames.contiguous(memory_format=torch.channels_last)
        dtype = _AUTOCAST.get(resolve_precision(precision, device))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = backbone(frames)
    return out.reshape(b, t, -1)


@dataclass(frozen=True)
class SplitExtractConfig:
    """Settings of :func:`extract_split`; all but the last five decide the numbers (cache
    key; ``device`` only through ``precision="auto"``).

    ``train=None`` means train-mode sampling and augmentation for the ``train`` split only;
    ``transform=None`` picks ``seed-train``/``seed-test`` (256x256, crop, ImageNet statistics)
    by mode. ``resolution`` is the crop side; the resize step scales with it.
    """

    backbone: str = "resnet50"
    weights: str = "imagenet"  # "imagenet", "none" or a checkpoint path
    frames: str = "tsn"  # sampler of fsarbench.data.sampling
    transform: str | None = None  # preset of fsarbench.data.transforms
    train: bool | None = None
    num_frames: int = 8
    resolution: int = 224
    views: int = 1
    seed: int = 0
    flip: bool | None = None  # train-mode flip; None: the dataset's default (off for SSv2)
    norm: str | None = None  # pixel normalisation; None: the backbone's, else the preset's
    resize: int | None = None  # resize target; None: the preset's, scaled with resolution
    short: str = "drop"  # videos shorter than num_frames: "drop" (failed) or "repeat"
    precision: str = "auto"  # PRECISIONS: "auto" = fp16 autocast on CUDA, fp32 elsewhere
    tiny: bool = False  # ViT presets: the test-only tiny random architecture (weights none)
    batch_size: int = 8
    workers: int | None = None  # decode workers; None: default_workers(device)
    device: str = "cpu"
    flush_every_s: float = 30.0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"decode workers must be >= 0 (or None: auto), got {self.workers}")
        for name in ("num_frames", "resolution", "views", "batch_size"):
            check_range("extraction", name, getattr(self, name), 1)
        if self.resize is not None:
            check_range("extraction", "resize", self.resize, 1)
        # unknown names fail here, not once per video as 'unreadable' in a new cache folder
        get_sampler(self.frames)
        resolve_precision(self.precision, self.device)
        if self.transform is not None:
            get_transform(self.transform)

    def resolved(self, split: str) -> SplitExtractConfig:
        """This config with ``train`` and ``transform`` filled in for ``split``."""
        train = split == "train" if self.train is None else self.train
        preset = self.transform or ("seed-train" if train else "seed-test")
        return dataclasses.replace(self, train=train, transform=preset)


def split_cache_key(
    dataset_name: str,
    split: str,
    videos: Sequence[Any],
    weights_id: str,
    config: SplitExtractConfig,
    data: str = "",
) -> CacheKey:
    """The cache key of one split's features (``config`` resolved); the split is hashed by
    its (video id, class) list, so an edited split list gets a new cache, and ``data``
    (:func:`data_identity`) names the videos behind the list."""
    listing = [[v.video_id, v.class_name] for v in videos]
    mode = "train" if config.train else "test"
    return CacheKey(
        dataset=dataset_name,
        split=split,
        split_md5=stable_hash(listing, n=32),
        frames=f"{config.frames}:{mode}" + ("" if config.short == "drop" else f":{config.short}"),
        transform=_transform_id(config),
        backbone=config.backbone,
        weights_id=weights_id,
        num_frames=config.num_frames,
        resolution=config.resolution,
        views=config.views,
        seed=config.seed,
        code=pipeline_digest(),
        data=data,
        precision=resolve_precision(config.precision, config.device),
    )


def data_identity(dataset: Any, split: str, videos: Sequence[Any]) -> str:
    """``"<variant>:<split md5>:<files>"`` of an opened dataset: what tells its videos apart
    from another dataset's with the same (video id, class) listing (a synth of another seed or
    size, a modified copy of a split list), and ``videos``' files as :func:`files_stamp`
    finds them (another root, a replaced or missing file: other features; a generated
    dataset's split md5 holds the md5s it wrote, not what is on disk now)."""
    return f"{dataset.variant}:{dataset.split_md5s()[split]}:{files_stamp(videos)}"


def files_stamp(videos: Sequence[Any]) -> str:
    """A hash of :func:`video_rows`, so a cache is never served for files other than those
    it was made of."""
    return stable_hash(video_rows(videos), n=16)


def video_rows(videos: Sequence[Any]) -> list[list[Any]]:
    """Every video's ``[id, size, modification time in ns]`` as found on disk (a folder of
    frames: the id followed by :func:`_folder_stamp`'s items; a missing file: ``[id, None]``),
    in JSON's types (lists, ints, strings), so rows read back from a JSON file compare equal."""
    rows: list[list[Any]] = []
    for v in videos:
        try:
            st = Path(v.path).stat()
            if S_ISDIR(st.st_mode):
                rows.append([v.video_id, *_folder_stamp(Path(v.path))])
            else:
                rows.append([v.video_id, st.st_size, st.st_mtime_ns])
        except OSError:
            rows.append([v.video_id, None])
    return rows


def _folder_stamp(folder: Path) -> list[Any]:
    """A frame folder's JPEG count and its first and last frames' sizes and modification
    times. The folder's own time changes only when frames are added or removed: frames
    re-extracted in place (``ffmpeg -y``, another size or quality) kept the old features.
    Two ``stat`` calls per folder, not one per frame (millions on a frame dataset)."""
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.name.lower().endswith(JPEG_SUFFIXES))
    if not names:
        return ["dir", 0]
    ends = [(folder / name).stat() for name in (names[0], names[-1])]
    return ["dir", len(names), *[[st.st_size, st.st_mtime_ns] for st in ends]]


def _transform_id(config: SplitExtractConfig) -> str:
    """The resolved transform as the cache key names it (suffixes only for deviations from
    the preset, so keys of the default pipeline stay as they were)."""
    from fsarbench.data.transforms import PRESETS

    text = str(config.transform)
    if config.resize is not None:
        text += f"+resize={config.resize}"
    if config.train and config.flip is False:
        text += "+noflip"
    preset = PRESETS.get(str(config.transform))
    if config.norm is not None and preset is not None and config.norm != preset.norm:
        text += f"+norm={config.norm}"
    return text


def extract_split(
    dataset_name: str,
    split: str,
    *,
    root: str | Path | None = None,
    splits_dir: str | Path | None = None,
    config: SplitExtractConfig | None = None,
    cache_root: str | Path | None = None,
    dataset: Any = None,
    retry_failed: bool = True,
) -> tuple[FeatureCache, ExtractStats | None]:
    """Extract (or reuse) the features of ``split`` of dataset ``dataset_name`` under
    ``<cache_root>/features/<dataset>/<split>/<key>/`` (``root``: videos; ``splits_dir``:
    split lists of published datasets); returns the cache and the run's
    stats (None when a complete cache already existed). ``dataset``: an opened dataset
    object to use instead of ``get_dataset(dataset_name, ...)``. ``retry_failed=False``
    takes the videos an earlier extraction could not read as failed (processes reading a
    cache one of them made must see the same videos)."""
    from fsarbench.data.datasets import get_dataset

    options = {"root": root} if splits_dir is None else {"root": root, "splits_dir": splits_dir}
    if dataset is None:
        dataset = get_dataset(dataset_name, **options)
    config, videos, backbone, key = _resolve_split(dataset_name, split, dataset, config)
    folder = cache_folder(key, cache_root)
    complete = complete_cache(folder, key)
    if complete is not None:
        return reused(complete), None
    clips = clip_dataset(videos, config, pixels=True)
    return extract_features(
        clips,
        backbone,
        cache_dir=folder,
        num_frames=config.num_frames,
        video_ids=[v.video_id for v in videos],
        num_views=config.views,
        classes=[v.class_name for v in videos],
        class_indices=[v.class_index for v in videos],
        key=key,
        batch_size=config.batch_size,
        num_workers=default_workers(config.device) if config.workers is None else config.workers,
        device=config.device,
        flush_every_s=config.flush_every_s,
        progress=config.progress,
        normalise=clips.transform.pixel_norm(),
        precision=config.precision,
        retry_failed=retry_failed,
    )


def find_split_cache(
    dataset_name: str,
    split: str,
    *,
    dataset: Any,
    config: SplitExtractConfig | None = None,
    cache_root: str | Path | None = None,
) -> FeatureCache | None:
    """The complete cache :func:`extract_split` would reuse for these arguments, or ``None``
    (nothing is decoded or extracted; the backbone is built for its weights' identity)."""
    _, _, _, key = _resolve_split(dataset_name, split, dataset, config)
    cache = complete_cache(cache_folder(key, cache_root), key)
    return None if cache is None else reused(cache)


def complete_cache(folder: Path, key: CacheKey) -> FeatureCache | None:
    """The complete cache at ``folder`` (``key``'s folder), or ``None``.

    Raises:
        ValueError: its index holds another key (a cache copied or renamed by hand onto
            this key's folder was served as this key's features).
    """
    if not (folder / "index.json").exists():
        return None
    cache = FeatureCache.open(folder)
    if cache.key is not None and cache.key != key.digest():
        raise ValueError(
            f"{folder} holds the cache of key {cache.key}, not {key.digest()} (copied or "
            "renamed by hand?): its features were made with other settings or files; move it "
            "back to its own folder, or delete it and extract again"
        )
    return cache if cache.is_complete else None


def _resolve_split(
    dataset_name: str, split: str, dataset: Any, config: SplitExtractConfig | None
) -> tuple[SplitExtractConfig, list[Any], Backbone, CacheKey]:
    """The resolved config, the split's videos, the backbone and the cache key."""
    config = (config or SplitExtractConfig()).resolved(split)
    videos = dataset.videos(split)
    if config.flip is None:
        config = dataclasses.replace(config, flip=bool(getattr(dataset, "flip_ok", True)))
    backbone = _split_backbone(config.backbone, config.weights, config.seed, config.tiny)
    if config.norm is None and backbone.norm is not None:  # e.g. CLIP statistics
        config = dataclasses.replace(config, norm=backbone.norm)
    key = split_cache_key(
        dataset_name,
        split,
        videos,
        backbone.weights_id,
        config,
        data_identity(dataset, split, videos),
    )
    return config, videos, backbone, key


def _split_backbone(name: str, weights: str | Path, seed: int, tiny: bool) -> Backbone:
    """``create_backbone``, reusing the last one built with the same arguments (and, for a
    checkpoint path, the same file size and modification time): a dataset's three splits
    need the backbone's weights id and normalisation even when their caches are complete."""
    path = Path(weights)
    stamp = (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else None
    key = (name, str(weights), stamp, seed, tiny)
    if _LAST_BACKBONE.get("key") != key:
        _LAST_BACKBONE.clear()
        _LAST_BACKBONE.update(
            key=key, backbone=create_backbone(name, weights=weights, seed=seed, tiny=tiny)
        )
    return _LAST_BACKBONE["backbone"]


_LAST_BACKBONE: dict[str, Any] = {}


def clip_dataset(
    videos: Sequence[Any], config: SplitExtractConfig, *, pixels: bool = False
) -> ClipDataset:
    """fsarbench.data's ClipDataset for a resolved ``config``: the preset's resize scales
    with ``resolution`` (e.g. 256 -> 128 for a 112 crop); unreadable videos are skipped.
    ``pixels``: ``uint8`` clips, for ``extract_features(normalise=ds.transform.pixel_norm())``."""
    from fsarbench.data.clips import ClipDataset, ClipOptions
    from fsarbench.data.transforms import PRESETS, get_transform

    base = PRESETS[str(config.transform)]
    resize = round(base.resize * config.resolution / base.crop) if base.crop else base.resize
    if config.resize is not None:
        resize = config.resize
    over: dict[str, Any] = {"crop": config.resolution, "resize": resize}
    over["flip"] = base.flip and config.flip is not False
    if config.norm is not None:
        over["norm"] = config.norm
    transform = get_transform(str(config.transform), **over)
    options = ClipOptions(
        frames=config.num_frames,
        sampler=config.frames,
        train=bool(config.train),
        views=config.views,
        seed=config.seed,
        short=config.short,
        on_error="skip",
        pixels=pixels,
    )
    return ClipDataset(videos, transform, options)
