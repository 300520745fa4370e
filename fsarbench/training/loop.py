"""The one training loop of both tracks: stages, gradient accumulation, validation-based
selection, atomic checkpoints and resume, written once.

A track supplies an :class:`EpisodeSource` (frozen: episodes of cached features; finetune:
episodes of decoded clips) and a ``validate(model) -> accuracy`` function (the val split
only). Episode ``i`` of a stage is a pure function of (seed, stage, ``i``); optimiser step
``s`` uses episodes ``s*n .. s*n+n-1``; rank ``r`` of ``W`` takes the contiguous ``n/W`` of
them in micro-batches, and torch is reseeded from each micro-batch's first episode index, so
a run resumed from its last checkpoint, or split over ranks, takes the same steps (to float
rounding across ranks; bit-identical on one CPU process). Dropout masks follow the
micro-batches: they are the same over any rank count only where the micro-batches are
(``micro_batch`` a divisor of ``n/W``, e.g. 1), not with ``micro_batch=0``.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from fsarbench.distributed.collectives import allreduce_sum, broadcast_buffers, broadcast_object
from fsarbench.distributed.env import barrier, is_main, world_size
from fsarbench.distributed.precision import Precision
from fsarbench.guards import check_gradients, check_losses
from fsarbench.io import atomic_write_bytes, stable_hash
from fsarbench.methods import FewShotMethod, TrainingStage
from fsarbench.progress import progress_bar
from fsarbench.provenance import StaleError, provenance_diff
from fsarbench.training.decay_groups import decay_exempt_parameters
from fsarbench.training.recipe import Recipe
from fsarbench.training.timing import StepTimer, format_step_times

__all__ = [
    "EpisodeSource",
    "LoopConfig",
    "MicroBatch",
    "RunMismatchError",
    "TrainResult",
    "load_checkpoint",
    "load_resume",
    "rank_share",
    "run_training",
    "stage_steps",
    "step_seed",
]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float | None = None
    best_step: int | None = None
    seconds: float = 0.0
    checkpoint: Path | None = None
    step_times: dict[str, float] = field(default_factory=dict)  # mean s/step by phase
    precision: str = "fp32"  # the training's autocast (Precision.name): its val numbers' too

    def summary(self) -> dict[str, Any]:
        """What a result record says of the training behind its model: steps per stage, the
        last stage's val-selected step and accuracy (``None``: no val episodes, so the last
        step's weights), the autocast precision its steps and val accuracies were computed
        in where it is not fp32 (the test's head runs in float32), and its loss trend
        (:func:`loss_trend`; absent under 10 steps)."""
        stages: dict[str, int] = {}
        for row in self.history:
            stages[row["stage"]] = stages.get(row["stage"], 0) + 1
        val = None if self.best_val is None else round(float(self.best_val), 4)
        out: dict[str, Any] = {
            "steps": stages,
            "selected_step": self.best_step,
            "val_accuracy": val,
        }
        if self.precision != "fp32":  # val accuracies under autocast pick the step
            out["precision"] = self.precision
        processes = sorted({int(row.get("processes", 1)) for row in self.history})
        if processes not in ([], [1]):  # data-parallel steps (a resume may mix counts)
            out["processes"] = processes
        trend = loss_trend(self.history)
        if trend is not None:
            stage, first, last, window = trend
            out["loss"] = {"stage": stage, "first": round(first, 6), "last": round(last, 6)}
            out["loss"]["window"] = window
        return out


@dataclass
class MicroBatch:
    """``count`` episodes from global episode index ``first`` (a track's batch type)."""

    first: int
    count: int
    batch: Any


class EpisodeSource(Protocol):
    """Where a track's training episodes come from."""

    def stage(self, name: str, first_step: int, steps: int) -> Iterator[Iterable[MicroBatch]]:
        """For each step ``first_step .. steps-1`` of stage ``name``, this rank's
        micro-batches (on the training device)."""


# On CUDA, by default one step in this many is timed (synchronised at its phase ends).
CUDA_TIMING_EVERY = 10


@dataclass
class LoopConfig:
    """How :func:`run_training` runs (everything but the model, data and validation)."""

    recipe: Recipe
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    out: Path | None = None
    resume: bool = True
    progress: bool = True
    stop_after: int | None = None
    fingerprint: dict[str, Any] | None = None
    precision: Precision = field(default_factory=Precision)
    desc: str = "train"
    # per-step time by phase (fsarbench.training.timing): True = every step; None = every
    # step on the CPU, one step in CUDA_TIMING_EVERY on CUDA (timing synchronises the
    # device at each phase end); False = off. report_every > 0 also prints it every that
    # many steps (rank 0)
    step_timing: bool | None = None
    report_every: int = 0

    def timer(self) -> StepTimer:
        sampled = self.step_timing is None and self.device.type == "cuda"
        every = CUDA_TIMING_EVERY if sampled else 1
        return StepTimer(self.step_timing is not False, self.device, every=every)


Validate = Callable[[FewShotMethod], float]


def stage_steps(stages: list[TrainingStage], steps: int) -> list[int]:
    """Optimiser steps of each stage. The last stage (the one validated and checkpointed as
    the model) trains for the recipe's ``steps``; an earlier stage runs before it for
    ``round(steps · fraction / last.fraction)`` (>= 1), so ``fraction`` is its share of all
    steps. Every variant of a method then gets the same last-stage budget, whether or not it
    has the earlier stages (SGTM's baseline and TML rows against its saliency rows)."""
    last = stages[-1].fraction
    return [max(1, round(steps * s.fraction / last)) for s in stages[:-1]] + [steps]


def step_seed(seed: int, stage: int, index: int) -> int:
    return int(stable_hash([seed, stage, index], 15), 16)


def rank_share(recipe: Recipe, rank: int, world: int) -> tuple[int, int, int]:
    """``(first offset, episodes, micro-batch size)`` of this rank within each step.

    The step's ``episodes_per_step`` must split evenly over the ranks; the last micro-batch
    of a rank may be smaller than ``micro_batch``."""
    n = recipe.episodes_per_step
    if n % world:
        raise ValueError(f"episodes_per_step={n} must be a multiple of the {world} ranks")
    per = n // world
    return rank * per, per, min(recipe.micro_batch or per, per)


def make_optimizer(
    recipe: Recipe, params: list[nn.Parameter], exempt: Collection[int] = ()
) -> torch.optim.Optimizer:
    """The recipe's optimizer. ``foreach=True`` everywhere (torch picks it on CUDA only): the
    multi-tensor update gives the same bits as the per-tensor loop (tested) in half the time
    on the CPU, where the frozen track's small models spend a tenth of a step updating.
    ``exempt``: ``id``s of parameters trained without weight decay (a second group)."""
    if exempt:
        decayed = [p for p in params if id(p) not in exempt]
        free = [p for p in params if id(p) in exempt]
        params = [{"params": decayed}, {"params": free, "weight_decay": 0.0}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            foreach=True,
        )
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay, foreach=True)


def lr_factor(recipe: Recipe, steps: int) -> Callable[[int], float]:
    """The learning-rate factor of each step of a ``steps``-step stage: a linear warm-up
    (from ``warmup_start``), then the schedule. The cosine runs over the steps after the
    warm-up (1 at its first step, no jump where the warm-up ends); multistep milestones are
    fractions of all ``steps``, each passed one multiplying by 0.1 or setting its
    ``milestone_factors`` entry."""
    warm, start = recipe.warmup_steps, recipe.warmup_start
    if warm >= steps > 1:  # e.g. a smoke test's `--recipe steps=2` on a warmed-up recipe
        end = start + (1 - start) * steps / warm
        warnings.warn(
            f"recipe.warmup_steps = {warm} is not below the stage's {steps} steps: the learning "
            f"rate ends at {end:.3g} of recipe.lr = {recipe.lr} (the record holds the "
            "recipe); lower warmup_steps to train at the recipe's rate",
            stacklevel=2,
        )

    def factor(step: int) -> float:
        if step < warm:
            return start + (1 - start) * (step + 1) / warm  # start 0: (step + 1) / warm, bit-equal
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        if recipe.schedule == "multistep":
            passed = sum(step >= m * steps for m in recipe.milestones)
            if recipe.milestone_factors:
                return recipe.milestone_factors[passed - 1] if passed else 1.0
            return 0.1**passed
        return 1.0

    return factor


def is_val_step(step: int, n_steps: int, recipe: Recipe) -> bool:
    return (step + 1) % max(1, recipe.val_every) == 0 or step + 1 == n_steps


# -- checkpoints -----------------------------------------------------------------------------
def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (corrupt, truncated, or not a state dict)."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by the loop or a state-dict file (tensors and plain data only:
    ``weights_only``).

    Raises:
        CheckpointError: naming the file, when it cannot be read as such a mapping.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # pickle, zip and EOF errors of a corrupt or foreign file
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path} cannot be read as a checkpoint ({type(err).__name__}: {detail}); it may "
            "be truncated or not a torch.save'd state dict. Do not load it with "
            "weights_only=False unless you trust where it came from; re-train or re-export it"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a checkpoint mapping")
    return data


#: What to do about a :class:`RunMismatchError` in Python (``train``/``finetune`` calls);
#: a command replaces it with its own flags (:meth:`RunMismatchError.with_remedy`).
API_REMEDY = (
    "Resume only continues the same run: pass resume=False to start this one there (its "
    "checkpoints are replaced), or choose another out_dir."
)


class RunMismatchError(StaleError):
    """A training folder holds a run made with other settings or code (or its selected
    weights are missing, unreadable or another run's).

    ``detail`` says what was found; the message adds ``remedy``, what to do about it in the
    caller's terms: the Python API's by default, a command's flags where the command
    catches it (``train``: ``--overwrite``; ``run`` retrains the unit by itself and logs
    ``detail`` alone)."""

    def __init__(self, detail: str, remedy: str = API_REMEDY) -> None:
        super().__init__(detail, remedy)
        self.detail, self.remedy = detail, remedy

    def __str__(self) -> str:
        return f"{self.detail}\n{self.remedy}"

    def with_remedy(self, remedy: str) -> RunMismatchError:
        """The same mismatch, told with ``remedy`` instead."""
        return RunMismatchError(self.detail, remedy)


def load_resume(
    out: Path | None, resume: bool, fingerprint: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The resume point ``out/last.pt``, if resuming and one exists. With ``fingerprint``,
    a checkpoint made by another run raises :class:`RunMismatchError` naming every field
    that differs (never a silent resume of another run)."""
    if out is None or not resume or not (out / "last.pt").exists():
        return None
    try:
        ckpt = load_checkpoint(out / "last.pt")
    except CheckpointError as err:
        raise RunMismatchError(f"the resume point cannot be resumed: {err}") from None
    if fingerprint is not None:
        diff = provenance_diff(ckpt.get("fingerprint") or {}, fingerprint)
        if diff:
            raise RunMismatchError(
                f"{out} holds a training run made with other settings; differing fields:\n  "
                + "\n  ".join(diff)
            )
    return ckpt


def _check_checkpoint_paths(out: Path | None) -> None:
    """Refuse, before any step, a folder in the place of a checkpoint this run writes: a
    ``best.pt`` folder was reported as unreadable weights, the model trained again from
    scratch, and the run failed at its first save."""
    if out is None:
        return
    for name in ("last.pt", "best.pt", PENDING_BEST):
        if (out / name).is_dir():
            raise CheckpointError(
                f"{out / name} is a folder where this run writes its checkpoint: move it away "
                "and run again"
            )


def _save_main(out: Path | None, name: str, payload: dict[str, Any]) -> None:
    """Rank 0 writes ``out/name`` atomically; every rank waits for it."""
    if out is not None and is_main():
        save_checkpoint(out / name, payload)
    barrier()


class only_trainable:
    """Within a stage, parameters outside ``params`` do not require grad (frozen)."""

    def __init__(self, method: nn.Module, params: list[nn.Parameter]) -> None:
        self.method, self.keep = method, {id(p) for p in params}

    def __enter__(self):
        self.saved = [(p, p.requires_grad) for p in self.method.parameters()]
        for p, _ in self.saved:
            p.requires_grad_(id(p) in self.keep)

    def __exit__(self, *exc):
        for p, flag in self.saved:
            p.requires_grad_(flag)


# -- the loop --------------------------------------------------------------------------------
@dataclass
class _Run:
    model: FewShotMethod
    source: EpisodeSource
    validate: Validate | None
    cfg: LoopConfig
    result: TrainResult
    best_state: dict[str, Tensor]
    timer: StepTimer
    done: int = 0


def run_training(
    model: FewShotMethod,
    source: EpisodeSource,
    validate: Validate | None,
    cfg: LoopConfig,
) -> TrainResult:
    """Train ``model`` stage by stage on ``source``'s episodes; with ``validate``, keep the
    weights of the best val accuracy (``out/best.pt``) and leave the model holding them.

    ``out/last.pt`` is the resume point (written at validation steps and stage ends); a
    resume of another run's folder raises :class:`RunMismatchError`. ``stop_after`` stops
    (as if interrupted) after that many steps in total — for tests.
    """
    t0 = time.perf_counter()
    _check_checkpoint_paths(cfg.out)
    model.to(cfg.device)
    ckpt = load_resume(cfg.out, cfg.resume, cfg.fingerprint) if is_main() else None
    ckpt = broadcast_object(ckpt)
    result = TrainResult(
        history=list(ckpt["history"]) if ckpt else [],
        best_val=ckpt.get("best_val") if ckpt else None,
        best_step=ckpt.get("best_step") if ckpt else None,
        precision=cfg.precision.name,
    )
    # the selected weights are checked before any weights are loaded: a run refused here is
    # trained again from scratch on this model object (tracks._retrain_on_mismatch), which
    # then started from the refused run's last weights
    best = _resume_best(cfg.out, ckpt, cfg.fingerprint)
    if ckpt:
        model.load_state_dict(ckpt["method"])
    state = best or copy.deepcopy(model.state_dict())
    initial = state if best is None and not ckpt else None  # the untrained weights
    run = _Run(model, source, validate, cfg, result, state, cfg.timer())
    stages = model.training_stages()
    if ckpt and is_main():  # a resumed run said nothing of it
        _say_resumed(cfg.out, ckpt, len(stages))
        _warn_if_other_processes(result.history, cfg.out)
    if cfg.recipe.early_stage_lr and len(stages) == 1 and is_main():
        log.warning(
            "recipe.early_stage_lr = %g: this method trains one stage, so it applies to "
            "nothing (its records still name it)",
            cfg.recipe.early_stage_lr,
        )
    counts = stage_steps(stages, cfg.recipe.steps)
    for si, (stage, n_steps) in enumerate(zip(stages, counts)):
        if ckpt and si < ckpt["stage"]:
            continue
        start = ckpt if ckpt and si == ckpt["stage"] else None
        if not _run_stage(run, si, stage, n_steps, si == len(stages) - 1, start):
            _save_main(cfg.out, "last.pt", _stage_end(run, si))
        ckpt = None
    where = str(cfg.out) if cfg.out is not None else "training"
    if initial is not None and _same_weights(initial, model.state_dict()):
        log.warning(
            "%s: training changed no weight (the updates were zero or underflowed: lr %g): "
            "the model is the untrained one; check the recipe's lr and optimizer (--recipe)",
            where,
            cfg.recipe.lr,
        )
    if validate is not None:
        model.load_state_dict(run.best_state)
    else:  # nothing to select on: best.pt holds the last step's weights, and says so
        _save_main(cfg.out, "best.pt", _selected(run, None, None, model.state_dict()))
    model.eval()
    _warn_if_not_learning(result.history, where)
    result.seconds = time.perf_counter() - t0
    result.step_times = run.timer.per_step()
    out = cfg.out
    result.checkpoint = out / "best.pt" if out is not None and (out / "best.pt").exists() else None
    return result


#: Fewest steps of a stage over which :func:`loss_trend` judges whether its loss went down.
TREND_MIN_STEPS = 10


def _say_resumed(out: Path | None, ckpt: dict[str, Any], stages: int) -> None:
    """Log where a run resumes (a finished one said "stage 2, 0 step(s) of it done" of a
    one-stage method)."""
    if ckpt["stage"] >= stages:
        log.info("reloading %s: its training is finished", Path(out or ".") / "last.pt")
    else:
        log.info(
            "resuming from %s: stage %d, %d step(s) of it done",
            Path(out or ".") / "last.pt",
            ckpt["stage"] + 1,
            ckpt["step"],
        )


def _warn_if_other_processes(history: list[dict[str, Any]], out: Path | None) -> None:
    """Say when a run resumes under another number of processes than its steps so far ran
    on: with BatchNorm in train mode the running statistics rank 0 keeps saw its share of
    each step's episodes, so the model is a mix of both (its record's ``training.processes``
    lists them)."""
    before = sorted({int(row.get("processes", 1)) for row in history})
    now = world_size()
    if before and before != [now]:
        log.warning(
            "%s: resumed under %d process(es); its first %d step(s) ran under %s. Under "
            "bn: train, rank 0's BatchNorm running statistics follow its share of each "
            "step's episodes, so the model mixes both; the record's training.processes "
            "lists them. Re-run with --overwrite under one count for a model of one.",
            out,
            now,
            len(history),
            "/".join(map(str, before)),
        )


#: The keys of a history row that are not loss terms (``processes``: the DDP world size).
NOT_LOSS_TERMS = frozenset({"stage", "step", "val_accuracy", "processes"})


def loss_trend(history: list[dict[str, Any]]) -> tuple[str, float, float, int] | None:
    """``(stage, first, last, window)``: the mean summed training loss over the first and
    the last ``window`` steps (a fifth) of the last stage in ``history``; ``None`` when that
    stage has fewer than :data:`TREND_MIN_STEPS` steps or none."""
    if not history:
        return None
    stage = history[-1]["stage"]
    totals = [
        sum(v for k, v in row.items() if k not in NOT_LOSS_TERMS)
        for row in history
        if row["stage"] == stage
    ]
    if len(totals) < TREND_MIN_STEPS:
        return None
    window = len(totals) // 5
    return stage, sum(totals[:window]) / window, sum(totals[-window:]) / window, window


def _same_weights(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _warn_if_not_learning(history: list[dict[str, Any]], where: str) -> None:
    """Warn when the last stage's loss ended no lower than it began: a learning rate too
    small to move the weights (``lr=1e-300``) or one that collapsed them to chance was
    reported as an ordinary trained model."""
    trend = loss_trend(history)
    if trend is None or trend[2] < trend[1]:
        return
    stage, first, last, window = trend
    log.warning(
        "%s: the %s stage's training loss did not go down (%.4g over its first %d steps, "
        "%.4g over its last %d): the model may not have learned; check the recipe's lr, "
        "optimizer and steps (--recipe)",
        where,
        stage,
        first,
        window,
        last,
        window,
    )


def _run_stage(
    run: _Run,
    si: int,
    stage: TrainingStage,
    n_steps: int,
    last_stage: bool,
    ckpt: dict[str, Any] | None,
) -> bool:
    """Steps of one stage from the checkpoint's step (or 0); returns whether its last step
    ran here (and wrote the stage-end resume point)."""
    cfg, r = run.cfg, run.cfg.recipe
    params = list(stage.parameters())
    staged = r.for_stage(last_stage)
    exempt = decay_exempt_parameters(run.model, staged.decay_exempt)
    opt = make_optimizer(staged, params, exempt) if params else None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(staged, n_steps)) if opt else None
    scaler = cfg.precision.grad_scaler()
    start = ckpt["step"] if ckpt else 0
    if ckpt and opt is not None and ckpt["optimizer"]:
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
    bar = progress_bar(
        total=n_steps,
        initial=start,
        desc=f"{cfg.desc} {stage.name}",
        unit="step",
        disable=not (cfg.progress and is_main()),
    )
    steps = run.source.stage(stage.name, start, n_steps)
    ended = False
    with only_trainable(run.model, params):
        ddp = _ddp(run.model, stage) if params and world_size() > 1 else None
        for step, micro in zip(range(start, n_steps), steps):
            run.timer.start_step()
            run.model.train()
            terms = _step(run, si, stage, step, micro, opt, scaler, params, ddp)
            if sched is not None:
                _advance(sched)
            row = {"stage": stage.name, "step": step + 1, **terms}
            if ddp is not None:  # rank 0's BatchNorm statistics saw its share of the episodes
                row["processes"] = world_size()
            val_step = is_val_step(step, n_steps, r)
            if val_step or step + 1 == n_steps:  # one model to validate, save and resume
                broadcast_buffers(run.model)
            if last_stage and val_step and run.validate is not None:
                row["val_accuracy"] = _validate(run, step + 1)
            run.result.history.append(row)
            bar.update(1)
            run.done += 1
            ended = step + 1 == n_steps
            if ended:  # the stage's end: no optimizer state to resume
                _save_main(cfg.out, "last.pt", _stage_end(run, si))
            elif val_step:
                _save_main(cfg.out, "last.pt", _payload(run, opt, sched, scaler, si, step + 1))
            _promote_best(cfg.out)
            run.timer.end_step()
            _report_times(run)
            if cfg.stop_after is not None and run.done >= cfg.stop_after:
                bar.close()
                raise KeyboardInterrupt(f"stopped after {run.done} steps")
    bar.close()
    return ended


def _advance(sched: torch.optim.lr_scheduler.LRScheduler) -> None:
    """One scheduler step per training step. The learning rate follows the step count, also
    after a step the fp16 GradScaler skipped (inf/NaN gradients), which torch warns about as
    if the calls were out of order."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        sched.step()


def _step(
    run: _Run,
    si: int,
    stage: TrainingStage,
    step: int,
    micro: Iterable[MicroBatch],
    opt: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler,
    params: list[nn.Parameter],
    ddp: nn.parallel.DistributedDataParallel | None = None,
) -> dict[str, float]:
    """One optimiser step over this rank's share of the step's episodes: each micro-batch's
    loss is weighted by its share of the step's episodes and back-propagated (under DDP,
    gradients are all-reduced once, in the last micro-batch's backward: ``no_sync`` before
    it); the summed loss terms of every rank are checked (a NaN of any rank stops every
    rank) before the optimiser steps."""
    cfg = run.cfg
    n = cfg.recipe.episodes_per_step
    world = world_size() if ddp is not None else 1  # DDP averages; the step sums episodes
    timer = run.timer
    terms: list[tuple[str, Tensor, int]] = []  # read once per step: one device sync
    for mb, last in _with_last(timer.wrap(micro)):
        torch.manual_seed(step_seed(cfg.seed, si, mb.first))
        sync = contextlib.nullcontext() if ddp is None or last else ddp.no_sync()
        with sync:
            with timer.phase("forward"):
                with cfg.precision.autocast():
                    losses = ddp(mb.batch) if ddp is not None else stage.loss(mb.batch)
                loss = sum(v.float() for v in losses.values()) * (mb.count * world / n)
            if opt is not None:
                with timer.phase("backward"):
                    scaler.scale(loss).backward()
        terms += [(k, v.detach(), mb.count) for k, v in losses.items()]
    values = torch.stack([v.double() for _, v, _ in terms]).tolist() if terms else []
    totals: dict[str, float] = {}
    for (k, _, count), v in zip(terms, values, strict=True):
        totals[k] = totals.get(k, 0.0) + v * count / n
    totals = allreduce_sum(totals, cfg.device)
    check_losses(totals, stage=stage.name, step=step)
    if opt is None:
        return totals
    with timer.phase("optimizer"):
        if cfg.recipe.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, cfg.recipe.grad_clip)
        if not scaler.is_enabled():  # an enabled scaler skips such a step itself
            check_gradients(params, stage=stage.name, step=step)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    return totals


def _report_times(run: _Run) -> None:
    """Every ``report_every`` steps, rank 0 prints the step-time breakdown so far."""
    every, timer = run.cfg.report_every, run.timer
    if every > 0 and timer.seen % every == 0 and timer.steps and is_main():
        print(f"{run.cfg.desc}: {format_step_times(timer.per_step(), timer.steps)}", flush=True)


class _StageLoss(nn.Module):
    """A stage's loss as a module's forward, so DistributedDataParallel can wrap it (its
    hooks fire on the parameters that require grad in this stage)."""

    def __init__(self, model: nn.Module, stage: TrainingStage) -> None:
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, batch: Any) -> dict[str, Tensor]:
        return self.stage.loss(batch)


def _ddp(model: nn.Module, stage: TrainingStage) -> nn.parallel.DistributedDataParallel:
    """``stage``'s loss under DDP over the stage's trainable parameters (set by
    :class:`only_trainable` before wrapping); ``find_unused_parameters`` because a stage's
    loss need not touch every one of them (e.g. a branch unused at this shot)."""
    return nn.parallel.DistributedDataParallel(
        _StageLoss(model, stage), find_unused_parameters=True, **_NO_FORWARD_BUFFER_SYNC
    )


# Buffers are not synced at each forward (ranks start equal, broadcast_module, and take rank
# 0's at each validation and checkpoint, broadcast_buffers); newer torch renames the option
# and warns at every wrap about the old name
_NO_FORWARD_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers"
    in inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


def _with_last(items: Iterable[MicroBatch]) -> Iterator[tuple[MicroBatch, bool]]:
    """``(item, is_last)`` pairs, reading one item ahead (micro-batches stay lazy)."""
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


def _validate(run: _Run, step: int) -> float:
    """Val accuracy (the same on every rank); keeps and saves the best weights."""
    acc = broadcast_object(run.validate(run.model))
    result = run.result
    if result.best_val is None or acc > result.best_val:
        result.best_val, result.best_step = acc, step
        run.best_state = copy.deepcopy(run.model.state_dict())
        # promoted to best.pt once last.pt names this step (_promote_best): stopped between
        # the two writes, best.pt and last.pt disagreed and the folder could not be resumed
        _save_main(run.cfg.out, PENDING_BEST, _selected(run, acc, step, run.best_state))
    return acc


def _selected(
    run: _Run, acc: float | None, step: int | None, state: dict[str, Tensor]
) -> dict[str, Any]:
    """The ``best.pt`` payload; ``acc=None``: no validation ran, the weights are the last."""
    return {
        "method": state,
        "val_accuracy": acc,
        "step": step,
        "selection": "val accuracy" if acc is not None else "none: the last step (no val episodes)",
        "recipe": _recipe_dict(run),
        "hparams": run.model.hparams,
        "num_train_classes": run.model.num_train_classes,
        "fingerprint": run.cfg.fingerprint,
    }


def _recipe_dict(run: _Run) -> dict[str, Any]:
    full = getattr(run.source, "recipe_dict", None)
    return full() if full is not None else run.cfg.recipe.to_dict()


def _payload(run: _Run, opt, sched, scaler, stage: int, step: int) -> dict[str, Any]:
    return {
        "fingerprint": run.cfg.fingerprint,
        "method": run.model.state_dict(),
        "optimizer": opt.state_dict() if opt is not None else {},
        "scheduler": sched.state_dict() if sched is not None else {},
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
        "stage": stage,
        "step": step,
        "history": run.result.history,
        "best_val": run.result.best_val,
        "best_step": run.result.best_step,
        "recipe": _recipe_dict(run),
        "hparams": run.model.hparams,
        "num_train_classes": run.model.num_train_classes,
    }


def _stage_end(run: _Run, stage: int) -> dict[str, Any]:
    """The resume point after stage ``stage``: the next stage from its first step."""
    return _payload(run, None, None, None, stage + 1, 0)


#: A new selection, written before ``last.pt`` names its step, then renamed to ``best.pt``.
PENDING_BEST = "best.pending.pt"


def _promote_best(out: Path | None) -> None:
    """Rank 0 makes a pending selection ``best.pt``, once ``last.pt`` names its step."""
    if out is not None and is_main() and (out / PENDING_BEST).exists():
        os.replace(out / PENDING_BEST, out / "best.pt")


def _settle_pending(out: Path, ckpt: dict[str, Any] | None) -> None:
    """A pending selection left by a stop: promoted when the resume point ``ckpt`` names its
    step (stopped after ``last.pt``), else removed (a step the resumed run does again)."""
    pending = out / PENDING_BEST
    if not pending.exists():
        return
    try:
        step = load_checkpoint(pending).get("step")
    except CheckpointError:
        step = None
    if ckpt is not None and step is not None and step == ckpt.get("best_step"):
        os.replace(pending, out / "best.pt")
    else:
        pending.unlink()


def _resume_best(
    out: Path | None, ckpt: dict[str, Any] | None, fingerprint: dict[str, Any] | None
) -> dict[str, Tensor] | None:
    """The weights of ``out/best.pt`` when resuming a run that has selected a step (read by
    rank 0, sent to every rank); ``None`` when nothing was selected yet."""
    if out is not None and is_main():
        _settle_pending(out, ckpt)
    selected = ckpt is not None and out is not None and ckpt.get("best_step") is not None
    best = _selected_weights(out / "best.pt", ckpt, fingerprint) if selected and is_main() else None
    return broadcast_object(best)


def _selected_weights(
    path: Path, ckpt: dict[str, Any], fingerprint: dict[str, Any] | None
) -> dict[str, Tensor]:
    """``best.pt``'s weights, checked against the resume point ``ckpt`` that selected them:
    a missing, unreadable or replaced file raises :class:`RunMismatchError` (the last step's
    weights, or another run's, were evaluated as the selected ones)."""
    step = ckpt["best_step"]
    if not path.exists():
        raise RunMismatchError(f"{path} is missing, but its run selected step {step}")
    try:
        best = load_checkpoint(path)
    except CheckpointError as err:
        raise RunMismatchError(f"the selected weights cannot be read: {err}") from None
    diff = (
        [] if fingerprint is None else provenance_diff(best.get("fingerprint") or {}, fingerprint)
    )
    if diff or best.get("step") != step:
        raise RunMismatchError(
            f"{path} is not the step {step} its run selected (it holds step "
            f"{best.get('step')}" + (f"; differing fields: {', '.join(diff)}" if diff else "") + ")"
        )
    return best["method"]
