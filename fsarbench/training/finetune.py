"""The finetune track: a backbone and a few-shot head trained end to end on decoded clips.

The model is :class:`~fsarbench.training.video_method.VideoMethod` (its per-video ``encode``
takes clips, so the evaluator, the sharded evaluator and the head's training stages work
unchanged), the data come from :mod:`fsarbench.training.clip_data`, the settings from
:mod:`fsarbench.training.finetune_recipe`; this module runs the training.

Training runs the head's stages in order. Episode ``i`` of a stage is a pure function of
(seed, stage, i); optimiser step ``s`` uses episodes ``s*n .. s*n+n-1`` (``n`` =
``episodes_per_step``), rank ``r`` of ``W`` takes the contiguous ``n/W`` of them and walks
them in micro-batches, each reseeded from its first episode index. Gradients are summed over
ranks once per step, so a W-process run takes the same steps as a 1-process run with
``micro_batch = n/W`` (to float rounding). Checkpoints are selected on the val split only.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from fsarbench.data.clips import collate_clips
from fsarbench.distributed.collectives import (
    allreduce_gradients,
    allreduce_sum,
    broadcast_module,
    broadcast_object,
)
from fsarbench.distributed.env import barrier, is_main, world_size
from fsarbench.distributed.precision import select_precision
from fsarbench.distributed.sharded_eval import evaluate_sharded
from fsarbench.guards import check_losses
from fsarbench.methods import TrainingStage
from fsarbench.progress import progress_bar
from fsarbench.training.clip_data import ClipSplit, ClipStore, TrainEpisodes, to_clip_episodes
from fsarbench.training.finetune_recipe import (
    FINETUNE_RECIPES_FILE,
    FinetuneOptions,
    FinetuneRecipe,
    finetune_recipe,
)
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
from fsarbench.training.video_method import ClipEpisodes, VideoMethod

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
    fingerprint: dict[str, Any] | None = None


def build_video_method(
    method: str,
    options: FinetuneOptions,
    device: torch.device,
    *,
    seed: int = 0,
    num_train_classes: int | None = None,
    hparams: dict[str, Any] | None = None,
    dataset: str | None = None,
) -> VideoMethod:
    """``create_backbone(options.backbone)`` in front of registered head ``method``, both
    drawn from ``seed``, on ``device`` (with the head's presets for ``dataset``); every rank
    then holds rank 0's initial weights."""
    from fsarbench.features.backbones import create_backbone
    from fsarbench.registry import create_method

    backbone = create_backbone(options.backbone, weights=options.weights, seed=seed)
    torch.manual_seed(seed)
    head = create_method(
        method,
        feature_dim=backbone.feature_dim,
        seq_len=options.frames,
        num_train_classes=num_train_classes,
        dataset=dataset,
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
    fingerprint: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` end to end, stage by stage, on every rank of the job.

    Args:
        model: a :class:`VideoMethod` (identical on every rank: see
            :func:`build_video_method`); it is left holding the best weights by val accuracy.
        out_dir: ``last.pt`` (resume point) and ``best.pt`` go there (rank 0 writes; the
            folder must be shared by the ranks of a multi-node job for resuming).
        stop_after: stop (as if interrupted) after this many steps in total — for tests.
        fingerprint: what makes this run; resuming another run's folder raises
            :class:`~fsarbench.training.trainer.RunMismatchError` (see the frozen trainer).
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    micro = _check_split(recipe.recipe)
    model.to(device)
    out = Path(out_dir) if out_dir is not None else None
    ckpt = broadcast_object(load_resume(out, resume, fingerprint) if is_main() else None)
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
        fingerprint,
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
    data = TrainEpisodes(run.train, run.recipe, run.seed, stage.name, start, n_steps)
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
    data: TrainEpisodes,
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
        batch = to_clip_episodes(item, data.spec).to(run.device)
        count = batch.support.shape[0]
        with run.model.precision.autocast():
            losses = stage.loss(batch)
        loss = sum(v.float() for v in losses.values()) * (count / n)
        scaler.scale(loss).backward()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) * count / n
    totals = allreduce_sum(totals, run.device)  # every rank sees a NaN of any rank
    check_losses(totals, stage=stage.name, step=step)
    allreduce_gradients(params, average=False)
    if run.recipe.recipe.grad_clip > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, run.recipe.recipe.grad_clip)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return totals


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
                "hparams": run.model.hparams,
                "fingerprint": run.fingerprint,
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
        "fingerprint": run.fingerprint,
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
