"""Clip data of the finetune track: split listings, decoded-clip stores for evaluation and
the seeded training episodes of clips (episode ``i`` a pure function of seed, stage, ``i``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from fsarbench.data.clips import ClipDataset, ClipOptions, collate_clips
from fsarbench.data.datasets import VideoRecord
from fsarbench.data.forking import start_workers
from fsarbench.data.probe_cache import ProbeCache
from fsarbench.data.transforms import ClipTransform, get_transform
from fsarbench.data.workers import default_workers
from fsarbench.distributed.env import local_world_size, rank, world_size
from fsarbench.episodes import EpisodeDrawer, EpisodeSpec, check_feasible, class_pools
from fsarbench.training.finetune_recipe import FinetuneOptions, FinetuneRecipe
from fsarbench.training.video_method import ClipEpisodes

__all__ = [
    "ClipSplit",
    "ClipStore",
    "decode_workers",
    "TrainEpisodes",
    "to_clip_episodes",
    "usable_split",
    "UnusableSplitError",
]


class UnusableSplitError(ValueError):
    """Too few readable videos are left in a split to serve its episodes."""


def usable_split(
    records: list[VideoRecord],
    split: str,
    *,
    dataset: str,
    flip_ok: bool,
    way: int,
    shot: int,
    queries: int,
    on_bad: str = "skip",
    min_frames: int = 1,
    jobs: int = 2,
    probes: ProbeCache | None = None,
) -> tuple[ClipSplit, list[str]]:
    """The readable videos of ``split`` with at least ``min_frames`` frames, and
    ``"<split>/<video id>: <cause>"`` for each video left out (missing, unreadable or too
    short; every file is opened once). Under ``on_bad="error"`` a missing or unreadable
    video is an error (a too-short one is the clip policy's recorded choice); under
    ``"skip"`` it is recorded. A split whose remaining videos cannot serve ``way``-way
    ``shot``-shot episodes with ``queries`` queries raises :class:`UnusableSplitError`
    either way — never an accuracy. ``probes``: earlier probe results to reuse for
    unchanged files."""
    from fsarbench.data.health import check_split, protocol_problems

    if on_bad not in ("skip", "error"):
        raise ValueError(f"bad-video policy must be 'skip' or 'error', not {on_bad!r}")
    health = check_split(records, split, frames=min_frames, jobs=jobs, probes=probes)
    skipped = [f"{split}/{v}: missing" for h in health for v in h.missing]
    skipped += [f"{split}/{v}: {cause}" for h in health for v, cause in h.unreadable.items()]
    skipped += [
        f"{split}/{v}: no decodable frame" for h in health for v, n in h.too_short.items() if n < 1
    ]
    if skipped and on_bad == "error":
        raise UnusableSplitError(
            f"{len(skipped)} unreadable or missing videos in {dataset}/{split} (policy 'error'): "
            + "; ".join(skipped[:5])
            + ("" if len(skipped) <= 5 else " ...")
        )
    skipped += [
        f"{split}/{v}: too short: {n} frames, clips need {min_frames}"
        for h in health
        for v, n in h.too_short.items()
        if n >= 1
    ]
    problems = protocol_problems(health, way=way, shot=shot, queries=queries, policy="drop")
    if problems:
        raise UnusableSplitError(
            f"{dataset}/{split} cannot serve {way}-way {shot}-shot episodes after leaving out "
            f"{_left_out_summary(health, min_frames)}: " + "; ".join(problems)
        )
    bad = {v for h in health for v in [*h.missing, *h.unreadable, *h.too_short]}
    kept = [r for r in records if r.video_id not in bad]
    return ClipSplit(kept, dataset, flip_ok), skipped


def _left_out_summary(health, min_frames: int) -> str:
    """``"3 missing, 1 unreadable and 480 too short videos (at most 16 frames; clips need
    100: lower --option frames, or --option short=repeat)"``: what ``usable_split`` left
    out, by cause (a clip length above every video's read as "missing, unreadable or too
    short" without saying which)."""
    missing = sum(len(h.missing) for h in health)
    unreadable = sum(len(h.unreadable) for h in health)
    lengths = [n for h in health for n in h.too_short.values()]
    parts = [f"{n} {what}" for n, what in ((missing, "missing"), (unreadable, "unreadable")) if n]
    if lengths:
        parts.append(f"{len(lengths)} too short")
    text = (
        ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)
    ) or "0"
    text += " video" + ("" if missing + unreadable + len(lengths) == 1 else "s")
    if lengths:
        text += (
            f" (at most {max(lengths)} frames; clips need {min_frames}: lower --option frames, "
            "or --option short=repeat)"
        )
    return text


# -- data ------------------------------------------------------------------------------------
@dataclass
class ClipSplit:
    """The videos of one split and the class of each (``0..C-1`` within the split)."""

    records: list[VideoRecord]
    dataset: str = ""
    flip_ok: bool = True

    @property
    def classes(self) -> np.ndarray:
        return np.array([r.class_index for r in self.records], dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return int(self.classes.max()) + 1

    @property
    def class_names(self) -> list[str]:
        """Class id -> name (for methods with ``uses_class_names``)."""
        names = {r.class_index: r.class_name for r in self.records}
        return [names.get(c, str(c)) for c in range(self.num_classes)]


ROLES = ("support", "query")


def _jittered(options: FinetuneOptions, role: str) -> bool:
    """Whether training clips of ``role`` are colour-jittered."""
    return options.color_jitter is True or (options.color_jitter == "query" and role == "query")


def _transform(options: FinetuneOptions, train: bool, role: str = "query") -> ClipTransform:
    """The clip transform of training (``role``: ``"support"`` or ``"query"`` clips) or test
    clips; ``options.flip`` is the protocol's per-dataset choice (or ``--option flip``)."""
    name = options.train_transform if train else options.test_transform
    over: dict[str, Any] = {
        k: getattr(options, k) for k in ("resize", "crop") if getattr(options, k) > 0
    }
    if train:
        over["flip"] = options.flip is True or (options.flip == "query" and role == "query")
    return get_transform(name, norm=options.norm, **over)


def decode_workers(options: FinetuneOptions, device: torch.device | str) -> int:
    """``options.workers``, else the default for ``device`` and this node's ranks."""
    if options.workers is not None:
        return options.workers
    return default_workers(device, local_world_size())


class ClipStore:
    """A feature store of decoded test-mode clips: ``get(indices) -> [n, T, 3, H, W]``
    (``uint8`` pixels under ``pixels``, which a :class:`VideoMethod` normalises itself).

    ``feature_shape`` is ``(T, 3*H*W)``; clips are deterministic (test sampling and the
    centre crop), so every rank and every run sees the same pixels.
    """

    def __init__(
        self,
        split: ClipSplit,
        options: FinetuneOptions,
        seed: int = 0,
        *,
        pixels: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        self.split, self.workers = split, decode_workers(options, device)
        self.transform = _transform(options, False)
        self.clip_options = ClipOptions(
            frames=options.frames,
            sampler=options.test_sampler,
            train=False,
            seed=seed,
            short=options.short,
            on_error="raise",  # probed by usable_split: a failure now is an error, not zeros
            pixels=pixels,
        )

    def __len__(self) -> int:
        return len(self.split.records)

    @property
    def feature_shape(self) -> tuple[int, int]:
        crop = self.transform.config.crop
        return (self.clip_options.frames, 3 * crop * crop)

    def get(self, indices: np.ndarray | Tensor) -> Tensor:
        records = [self.split.records[int(i)] for i in np.asarray(indices)]
        data = ClipDataset(records, self.transform, self.clip_options)
        if self.workers == 0 or len(records) < 2:
            return torch.stack([data[i]["clip"] for i in range(len(data))])
        loader = DataLoader(
            data,
            batch_size=max(1, len(records) // self.workers),
            num_workers=self.workers,
            collate_fn=collate_clips,
        )
        return torch.cat([b["clip"] for b in start_workers(loader)])


class TrainEpisodes(Dataset):
    """Item ``k``: the ``k``-th episode this rank trains on from ``first_step`` on, as
    ``uint8`` clips (the :class:`VideoMethod` normalises them on its device) and, for the
    roles ``options.color_jitter`` jitters, their colour jitter rows (``"support_jitter"``,
    ``"query_jitter"``: ``float64 [n, 10]``, applied on the device).

    Episode index of item ``k``: ``step * n + rank * per + k % per`` with ``step =
    first_step + k // per``; clips are augmented with the episode index as epoch.
    """

    def __init__(
        self,
        split: ClipSplit,
        recipe: FinetuneRecipe,
        seed: int,
        stage: str,
        first_step: int,
        steps: int,
    ) -> None:
        r, o = recipe.recipe, recipe.options
        self.split, self.n = split, r.episodes_per_step
        self.first_step, self.steps = first_step, steps
        self.per = self.n // world_size()
        self.rank = rank()  # captured here: DataLoader workers hold no process group
        self.spec = EpisodeSpec(
            r.way, r.episode_shot, r.queries, seed, split.dataset, f"train/{stage}"
        )
        self.pools = class_pools(split.classes)
        check_feasible(self.pools, self.spec, split.class_names)  # before the first step
        self.class_ids = np.array(sorted(self.pools))
        self.draw = EpisodeDrawer(self.pools, self.class_ids, self.spec)
        self.transforms = {role: _transform(o, True, role) for role in ROLES}
        self.jittered = [role for role in ROLES if _jittered(o, role)]
        self.clip_options = ClipOptions(
            frames=o.frames,
            sampler=o.train_sampler,
            train=True,
            seed=seed,
            short=o.short,
            on_error="raise",
            pixels=True,  # normalised on the device: a quarter of the bytes to copy
        )

    def __len__(self) -> int:
        return (self.steps - self.first_step) * self.per

    def episode_index(self, k: int) -> int:
        step, j = divmod(k, self.per)
        return (self.first_step + step) * self.n + self.rank * self.per + j

    def __getitem__(self, k: int) -> dict[str, Any]:
        index = self.episode_index(k)
        classes, support, query = self.draw(index)
        clips, item = [], {"classes": torch.as_tensor(classes), "episode": index}
        for role, videos in zip(ROLES, (support, query)):
            records = [self.split.records[int(v)] for v in videos]
            options = dataclasses.replace(
                self.clip_options, epoch=index, color_jitter=role in self.jittered
            )
            data = ClipDataset(records, self.transforms[role], options)
            loaded = [data[i] for i in range(len(data))]
            clips += [x["clip"] for x in loaded]
            if role in self.jittered:
                item[f"{role}_jitter"] = torch.stack([x["jitter"] for x in loaded])
        return {"clips": torch.stack(clips), **item}


def to_clip_episodes(item: dict[str, Any], spec: EpisodeSpec) -> ClipEpisodes:
    """A loader micro-batch (``clips [B, N, T, 3, H, W]``, ``classes [B, way]``; support
    first, class-major; colour jitter rows ``[B, n, 10]`` where a role has them) as
    episodes, on the device of ``classes`` (the jitter rows stay where they are: the host)."""
    clips, classes = item["clips"], item["classes"]
    ns = spec.way * spec.shot
    # made on the device: a copy from host memory would block the prefetcher's copy stream
    ways = torch.arange(spec.way, device=classes.device)
    lab = torch.cat([ways.repeat_interleave(spec.shot), ways.repeat_interleave(spec.queries)])
    lab = lab.expand(clips.shape[0], -1)
    glob = classes.gather(1, lab)
    return ClipEpisodes(
        clips[:, :ns],
        lab[:, :ns].clone(),
        clips[:, ns:],
        lab[:, ns:].clone(),
        glob[:, :ns],
        glob[:, ns:],
        spec.way,
        item.get("support_jitter"),
        item.get("query_jitter"),
    )
