"""The finetune track: a backbone and a few-shot head trained end to end on decoded clips.

``VideoMethod`` is a :class:`FewShotMethod` whose per-video ``encode`` takes clips
``[N, T, 3, H, W]``: the backbone maps every frame to ``D`` features (in chunks, optionally
under activation checkpointing) and the head's own ``encode`` follows, so the evaluator, the
sharded evaluator and the head's training stages work unchanged.

Training runs the head's stages in order. Episode ``i`` of a stage is a pure function of
(seed, stage, i); optimiser step ``s`` uses episodes ``s*n .. s*n+n-1`` (``n`` =
``episodes_per_step``), rank ``r`` of ``W`` takes the contiguous ``n/W`` of them and walks
them in micro-batches, each reseeded from its first episode index. Gradients are summed over
ranks once per step, so a W-process run takes the same steps as a 1-process run with
``micro_batch = n/W`` (to float rounding). Checkpoints are selected on the val split only.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint
from torch.utils.data import DataLoader, Dataset

from fsarbench.config import build_config, config_to_dict
from fsarbench.data.clips import ClipDataset, ClipOptions, collate_clips
from fsarbench.data.datasets import VideoRecord
from fsarbench.data.transforms import ClipTransform, get_transform
from fsarbench.distributed.collectives import (
    allreduce_gradients,
    allreduce_sum,
    broadcast_module,
    broadcast_object,
)
from fsarbench.distributed.env import barrier, is_main, rank, world_size
from fsarbench.distributed.precision import Precision, select_precision
from fsarbench.distributed.sharded_eval import evaluate_sharded
from fsarbench.episodes import EpisodeSpec, class_pools, make_episode
from fsarbench.methods import EpisodeBatch, FewShotMethod, MethodOutput, TrainingStage
from fsarbench.progress import progress_bar
from fsarbench.state import State
from fsarbench.training.recipe import Recipe
from fsarbench.training.trainer import (
    TrainResult,
    is_val_step,
    load_checkpoint,
    load_resume,
    lr_factor,
    make_optimizer,
    only_trainable,
    save_checkpoint,
    stage_steps,
    step_seed,
    val_manifest_for,
)

__all__ = [
    "FinetuneOptions",
    "FinetuneRecipe",
    "finetune_recipe",
    "VideoMethod",
    "ClipSplit",
    "ClipStore",
    "ClipEpisodes",
    "build_video_method",
    "finetune",
    "FINETUNE_RECIPES_FILE",
]

FINETUNE_RECIPES_FILE = "finetune_recipes.yaml"


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FinetuneOptions:
    """What the finetune track adds to an episodic :class:`Recipe`.

    Attributes:
        backbone, weights: ``create_backbone`` arguments (``weights="none"``: seeded random).
        frames: T, frames per clip; ``train_sampler``/``test_sampler``: names of
            ``fsarbench.data.sampling.SAMPLERS``.
        train_transform, test_transform: presets of ``fsarbench.data.transforms``;
            ``resize``/``crop`` override their sizes (0 keeps the preset's); ``flip`` is
            also turned off for datasets whose labels contain left/right.
        bn: ``frozen`` keeps the backbone's BatchNorm statistics (eval mode), ``train``
            updates them per micro-batch.
        train_backbone: ``last`` trains the backbone in the last stage only (earlier
            stages, e.g. SGTM's saliency classifier, train the head's parameters alone);
            ``all`` trains it in every stage.
        amp, channels_last: mixed precision (bf16, else fp16 + scaler) and channels-last
            memory format; both apply on CUDA only.
        checkpoint_backbone: recompute backbone activations in backward (less memory).
        frame_chunk: frames per backbone call (0 = all frames of the batch at once).
        eval_chunk: videos decoded and encoded together at evaluation.
        workers: decoding processes per rank.
    """

    backbone: str = "resnet50"
    weights: str = "imagenet"
    frames: int = 8
    train_sampler: str = "tsn"
    test_sampler: str = "tsn"
    train_transform: str = "seed-train"
    test_transform: str = "seed-test"
    resize: int = 0
    crop: int = 0
    flip: bool = True
    bn: Literal["frozen", "train"] = "frozen"
    train_backbone: Literal["last", "all"] = "last"
    amp: bool = True
    channels_last: bool = True
    checkpoint_backbone: bool = False
    frame_chunk: int = 0
    eval_chunk: int = 64
    workers: int = 2


@dataclass(frozen=True)
class FinetuneRecipe:
    """An episodic :class:`Recipe` (optimiser, steps, episodes) plus :class:`FinetuneOptions`."""

    recipe: Recipe = field(default_factory=Recipe)
    options: FinetuneOptions = field(default_factory=FinetuneOptions)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def _merge(base: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in (extra or {}).items():
        out.setdefault(section, {}).update(values or {})
    return out


def finetune_recipe(
    method: str, dataset: str, overrides: dict[str, dict[str, Any]] | None = None
) -> FinetuneRecipe:
    """The finetune recipe of ``method`` on ``dataset``: the file's ``default``, then
    ``methods.<family>``, ``methods.<method>``, ``methods."<family>@<dataset>"``,
    ``methods."<method>@<dataset>"``, then ``overrides`` (``{"recipe": {...}, "options":
    {...}}``). ``family`` is the name before its first ``-`` (``sgtm-otam`` -> ``sgtm``)."""
    text = resources.files("fsarbench.training").joinpath(FINETUNE_RECIPES_FILE).read_text()
    table = yaml.safe_load(text)
    values = _merge({"recipe": {}, "options": {}}, table.get("default"))
    family = method.split("-")[0]
    per_method = table.get("methods", {})
    keys = dict.fromkeys([family, method, f"{family}@{dataset}", f"{method}@{dataset}"])
    for key in keys:
        values = _merge(values, per_method.get(key))
    values = _merge(values, overrides)
    return build_config(
        FinetuneRecipe, values, where=f"finetune recipe of {method!r} on {dataset!r}"
    )


# -- the model -------------------------------------------------------------------------------
@dataclass
class ClipEpisodes:
    """A batch of ``B`` episodes of clips: ``support [B, Ns, T, 3, H, W]``, ``query
    [B, Nq, T, 3, H, W]``, labels ``[B, Ns]``/``[B, Nq]`` and global classes alike."""

    support: Tensor
    support_labels: Tensor
    query: Tensor
    query_labels: Tensor
    support_classes: Tensor
    query_classes: Tensor
    way: int

    def to(self, device: torch.device) -> ClipEpisodes:
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=True)
            for f in dataclasses.fields(self)
            if f.name != "way"
        }
        return ClipEpisodes(**moved, way=self.way)


class VideoMethod(FewShotMethod):
    """``backbone`` on every frame, then ``method``: ``encode(clips [N, T, 3, H, W])``."""

    def __init__(
        self,
        backbone: nn.Module,
        method: FewShotMethod,
        options: FinetuneOptions,
        precision: Precision | None = None,
    ) -> None:
        super().__init__(
            feature_dim=int(backbone.feature_dim),
            seq_len=method.seq_len,
            num_train_classes=method.num_train_classes,
            config=method.config,
        )
        self.backbone, self.inner, self.options = backbone, method, options
        self.precision = precision or Precision()
        self.method_name = getattr(method, "method_name", type(method).__name__)
        if self.precision.channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    def features(self, clips: Tensor) -> Tensor:
        """``clips [N, T, 3, H, W]`` -> float32 frame features ``[N, T, D]``."""
        n, t = clips.shape[:2]
        frames = clips.flatten(0, 1)
        if self.precision.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        chunk = self.options.frame_chunk or len(frames)
        outs = [self._backbone(frames[s : s + chunk]) for s in range(0, len(frames), chunk)]
        return torch.cat(outs).float().reshape(n, t, -1)

    def _backbone(self, frames: Tensor) -> Tensor:
        if self.options.checkpoint_backbone and torch.is_grad_enabled():
            return activation_checkpoint(self.backbone, frames, use_reentrant=False)
        return self.backbone(frames)

    def encode(self, features: Tensor) -> State:
        return self.inner.encode(self.features(features))

    def match(self, support, support_labels, query, way, **kw) -> MethodOutput:
        return self.inner.match(support, support_labels, query, way, **kw)

    def train(self, mode: bool = True) -> VideoMethod:
        super().train(mode)
        if self.options.bn == "frozen":
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def episode_features(self, batch: ClipEpisodes) -> EpisodeBatch:
        """Clips through the backbone: the :class:`EpisodeBatch` the head's stages take."""
        b, ns = batch.support.shape[:2]
        feats = self.features(torch.cat([batch.support.flatten(0, 1), batch.query.flatten(0, 1)]))
        support, query = feats[: b * ns], feats[b * ns :]
        return EpisodeBatch(
            support.reshape(b, ns, *feats.shape[1:]),
            batch.support_labels,
            query.reshape(b, -1, *feats.shape[1:]),
            batch.query_labels,
            batch.support_classes,
            batch.query_classes,
            batch.way,
        )

    def training_stages(self) -> list[TrainingStage]:
        stages = self.inner.training_stages()
        return [
            self._wrap(s, self.options.train_backbone == "all" or i == len(stages) - 1)
            for i, s in enumerate(stages)
        ]

    def _wrap(self, stage: TrainingStage, with_backbone: bool) -> TrainingStage:
        def parameters():
            own = list(self.backbone.parameters()) if with_backbone else []
            return [*own, *stage.parameters()]

        def loss(batch: ClipEpisodes) -> dict[str, Tensor]:
            return stage.loss(self.episode_features(batch))

        return TrainingStage(stage.name, parameters, loss, stage.fraction, stage.needs_classes)

    @property
    def hparams(self) -> dict[str, Any]:
        return self.inner.hparams


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


def _transform(options: FinetuneOptions, train: bool, flip_ok: bool) -> ClipTransform:
    name = options.train_transform if train else options.test_transform
    over: dict[str, Any] = {
        k: getattr(options, k) for k in ("resize", "crop") if getattr(options, k) > 0
    }
    if train:
        over["flip"] = options.flip and flip_ok
    return get_transform(name, **over)


class ClipStore:
    """A feature store of decoded test-mode clips: ``get(indices) -> [n, T, 3, H, W]``.

    ``feature_shape`` is ``(T, 3*H*W)``; clips are deterministic (test sampling and the
    centre crop), so every rank and every run sees the same pixels.
    """

    def __init__(self, split: ClipSplit, options: FinetuneOptions, seed: int = 0) -> None:
        self.split, self.workers = split, options.workers
        self.transform = _transform(options, False, split.flip_ok)
        self.clip_options = ClipOptions(
            frames=options.frames,
            sampler=options.test_sampler,
            train=False,
            seed=seed,
            short="repeat",
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
        return torch.cat([b["clip"] for b in loader])


class _TrainEpisodes(Dataset):
    """Item ``k``: the ``k``-th episode this rank trains on from ``first_step`` on.

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
        self.spec = EpisodeSpec(r.way, r.shot, r.queries, seed, split.dataset, f"train/{stage}")
        self.pools = class_pools(split.classes)
        self.class_ids = np.array(sorted(self.pools))
        self.transform = _transform(o, True, split.flip_ok)
        self.clip_options = ClipOptions(
            frames=o.frames, sampler=o.train_sampler, train=True, seed=seed, short="repeat"
        )

    def __len__(self) -> int:
        return (self.steps - self.first_step) * self.per

    def episode_index(self, k: int) -> int:
        step, j = divmod(k, self.per)
        return (self.first_step + step) * self.n + self.rank * self.per + j

    def __getitem__(self, k: int) -> dict[str, Any]:
        index = self.episode_index(k)
        classes, support, query = make_episode(self.pools, self.class_ids, self.spec, index)
        records = [self.split.records[int(v)] for v in np.concatenate([support, query])]
        data = ClipDataset(
            records, self.transform, dataclasses.replace(self.clip_options, epoch=index)
        )
        clips = torch.stack([data[i]["clip"] for i in range(len(data))])
        return {"clips": clips, "classes": torch.as_tensor(classes), "episode": index}


def _clip_episodes(item: dict[str, Any], spec: EpisodeSpec) -> ClipEpisodes:
    clips, classes = item["clips"], item["classes"]
    ns = spec.way * spec.shot
    lab = torch.as_tensor(
        np.concatenate(
            [
                np.repeat(np.arange(spec.way), spec.shot),
                np.repeat(np.arange(spec.way), spec.queries),
            ]
        )
    )
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
    )


def _check_split(recipe: Recipe) -> int:
    """Micro-batch size of this rank; the global batch must split evenly."""
    n, world = recipe.episodes_per_step, world_size()
    if n % world:
        raise ValueError(f"episodes_per_step={n} must be a multiple of the {world} ranks")
    per = n // world
    micro = recipe.micro_batch or per
    if per % micro:
        raise ValueError(f"micro_batch={micro} must divide the {per} episodes of each rank")
    return micro


# -- the trainer -----------------------------------------------------------------------------
@dataclass
class _Run:
    """What one training run carries between its helpers."""

    model: VideoMethod
    train: ClipSplit
    recipe: FinetuneRecipe
    micro: int
    seed: int
    device: torch.device
    out: Path | None
    val: ClipStore | None
    val_manifest: Any
    result: TrainResult
    best_state: dict[str, Tensor]
    progress: bool


def build_video_method(
    method: str,
    options: FinetuneOptions,
    device: torch.device,
    *,
    seed: int = 0,
    num_train_classes: int | None = None,
    hparams: dict[str, Any] | None = None,
) -> VideoMethod:
    """``create_backbone(options.backbone)`` in front of registered head ``method``, both
    drawn from ``seed``, on ``device``; every rank then holds rank 0's initial weights."""
    from fsarbench.features.backbones import create_backbone
    from fsarbench.registry import create_method

    backbone = create_backbone(options.backbone, weights=options.weights, seed=seed)
    torch.manual_seed(seed)
    head = create_method(
        method,
        feature_dim=backbone.feature_dim,
        seq_len=options.frames,
        num_train_classes=num_train_classes,
        **(hparams or {}),
    )
    precision = select_precision(device, amp=options.amp, channels_last=options.channels_last)
    model = VideoMethod(backbone, head, options, precision).to(device)
    broadcast_module(model)
    return model


def finetune(
    model: VideoMethod,
    train_split: ClipSplit,
    val_split: ClipSplit | None,
    recipe: FinetuneRecipe,
    *,
    seed: int = 0,
    out_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``model`` end to end, stage by stage, on every rank of the job.

    Args:
        model: a :class:`VideoMethod` (identical on every rank: see
            :func:`build_video_method`); it is left holding the best weights by val accuracy.
        out_dir: ``last.pt`` (resume point) and ``best.pt`` go there (rank 0 writes; the
            folder must be shared by the ranks of a multi-node job for resuming).
        stop_after: stop (as if interrupted) after this many steps in total — for tests.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    micro = _check_split(recipe.recipe)
    model.to(device)
    out = Path(out_dir) if out_dir is not None else None
    ckpt = broadcast_object(load_resume(out, resume) if is_main() else None)
    result = TrainResult(
        history=list(ckpt["history"]) if ckpt else [],
        best_val=ckpt.get("best_val") if ckpt else None,
        best_step=ckpt.get("best_step") if ckpt else None,
    )
    if ckpt:
        model.load_state_dict(ckpt["method"])
    best_state = _resume_best(out, ckpt) or copy.deepcopy(model.state_dict())
    val = ClipStore(val_split, recipe.options, seed) if val_split is not None else None
    run = _Run(
        model,
        train_split,
        recipe,
        micro,
        seed,
        device,
        out,
        val,
        val_manifest_for(val_split, recipe.recipe, seed),
        result,
        best_state,
        progress,
    )
    stages = model.training_stages()
    counts = stage_steps(stages, recipe.recipe.steps)
    done = 0
    for si, (stage, n_steps) in enumerate(zip(stages, counts)):
        if ckpt and si < ckpt["stage"]:
            continue
        start_ckpt = ckpt if ckpt and si == ckpt["stage"] else None
        done = _run_stage(run, si, stage, n_steps, len(stages), start_ckpt, done, stop_after)
        _save_main(out, "last.pt", _payload(run, None, None, None, si + 1, 0))
        ckpt = None
    if run.val_manifest is not None:
        model.load_state_dict(run.best_state)
    model.eval()
    result.seconds = time.perf_counter() - t0
    result.checkpoint = out / "best.pt" if out is not None and (out / "best.pt").exists() else None
    return result


def _run_stage(
    run: _Run,
    si: int,
    stage: TrainingStage,
    n_steps: int,
    n_stages: int,
    ckpt: dict[str, Any] | None,
    done: int,
    stop_after: int | None,
) -> int:
    """Steps of one stage from the checkpoint's step (or 0); total steps done so far."""
    r = run.recipe.recipe
    params = list(stage.parameters())
    opt = make_optimizer(r, params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(r, n_steps))
    scaler = run.model.precision.grad_scaler()
    start = ckpt["step"] if ckpt else 0
    if ckpt and ckpt["optimizer"]:
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
    data = _TrainEpisodes(run.train, run.recipe, run.seed, stage.name, start, n_steps)
    loader = iter(
        DataLoader(
            data,
            batch_size=run.micro,
            num_workers=run.recipe.options.workers,
            collate_fn=collate_clips,
            pin_memory=run.device.type == "cuda",
        )
    )
    bar = progress_bar(
        total=n_steps,
        initial=start,
        desc=f"finetune {stage.name}",
        unit="step",
        disable=not (run.progress and is_main()),
    )
    with only_trainable(run.model, params):
        for step in range(start, n_steps):
            run.model.train()
            terms = _step(run, si, stage, step, loader, data, opt, scaler, params)
            sched.step()
            row = {"stage": stage.name, "step": step + 1, **terms}
            val_step = is_val_step(step, n_steps, r)
            if si == n_stages - 1 and val_step and run.val_manifest is not None:
                row["val_accuracy"] = _validate(run, step + 1)
            run.result.history.append(row)
            bar.update(1)
            done += 1
            if val_step:
                _save_main(run.out, "last.pt", _payload(run, opt, sched, scaler, si, step + 1))
            if stop_after is not None and done >= stop_after:
                bar.close()
                raise KeyboardInterrupt(f"stopped after {done} steps")
    bar.close()
    return done


def _step(
    run: _Run,
    si: int,
    stage: TrainingStage,
    step: int,
    loader,
    data: _TrainEpisodes,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    params: list[nn.Parameter],
) -> dict[str, float]:
    """One optimiser step over this rank's share of the step's episodes."""
    n = data.n
    totals: dict[str, float] = {}
    for _ in range(data.per // run.micro):
        item = next(loader)
        torch.manual_seed(step_seed(run.seed, si, int(item["episode"][0])))
        batch = _clip_episodes(item, data.spec).to(run.device)
        count = batch.support.shape[0]
        with run.model.precision.autocast():
            losses = stage.loss(batch)
        loss = sum(v.float() for v in losses.values()) * (count / n)
        scaler.scale(loss).backward()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) * count / n
    allreduce_gradients(params, average=False)
    if run.recipe.recipe.grad_clip > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, run.recipe.recipe.grad_clip)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return allreduce_sum(totals, run.device)


def _validate(run: _Run, step: int) -> float:
    """Val accuracy (sharded over ranks, the same on every rank); keeps the best weights."""
    res = evaluate_sharded(
        run.model,
        run.val,
        run.val_manifest,
        device=run.device,
        encode_chunk=run.recipe.options.eval_chunk,
        progress=False,
        autocast=run.model.precision.dtype is not None,
    )
    acc = broadcast_object(res.accuracy if res is not None else None)
    if run.result.best_val is None or acc > run.result.best_val:
        run.result.best_val, run.result.best_step = acc, step
        run.best_state = copy.deepcopy(run.model.state_dict())
        _save_main(
            run.out,
            "best.pt",
            {
                "method": run.best_state,
                "val_accuracy": acc,
                "step": step,
                "recipe": run.recipe.to_dict(),
            },
        )
    return acc


def _payload(run: _Run, opt, sched, scaler, stage: int, step: int) -> dict[str, Any]:
    return {
        "method": run.model.state_dict(),
        "optimizer": opt.state_dict() if opt is not None else {},
        "scheduler": sched.state_dict() if sched is not None else {},
        "scaler": scaler.state_dict() if scaler is not None else {},
        "stage": stage,
        "step": step,
        "history": run.result.history,
        "best_val": run.result.best_val,
        "best_step": run.result.best_step,
        "recipe": run.recipe.to_dict(),
    }


def _resume_best(out: Path | None, ckpt: dict[str, Any] | None) -> dict[str, Tensor] | None:
    """The weights of ``out/best.pt`` when resuming (read by rank 0, sent to every rank)."""
    path = out / "best.pt" if out is not None else None
    found = ckpt is not None and path is not None and is_main() and path.exists()
    return broadcast_object(load_checkpoint(path)["method"] if found else None)


def _save_main(out: Path | None, name: str, payload: dict[str, Any]) -> None:
    """Rank 0 writes ``out/name`` atomically; every rank waits for it."""
    if out is not None and is_main():
        save_checkpoint(out / name, payload)
    barrier()
