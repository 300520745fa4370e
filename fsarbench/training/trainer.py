"""Episodic trainer on a feature store: stages, accumulation, validation, atomic resume.

Every training episode is derived from (seed, stage, episode index) like test episodes, and
every step reseeds torch from (seed, stage, step), so a run resumed from its last checkpoint
reaches bit-identical weights on the CPU. Checkpoints are selected on the val split only.
"""

from __future__ import annotations

import copy
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fsarbench.episodes import EpisodeSpec, class_pools, make_episode, make_manifest
from fsarbench.evaluate import evaluate
from fsarbench.features.store import FeatureStore
from fsarbench.guards import check_losses
from fsarbench.io import atomic_write_bytes, stable_hash
from fsarbench.methods import EpisodeBatch, FewShotMethod, TrainingStage
from fsarbench.progress import progress_bar
from fsarbench.provenance import StaleError, provenance_diff
from fsarbench.training.recipe import Recipe

__all__ = [
    "SplitFeatures",
    "TrainResult",
    "RunMismatchError",
    "train",
    "load_checkpoint",
    "stage_steps",
]


@dataclass
class SplitFeatures:
    """Features of one split and the class id of each video (``0..C-1`` within the split)."""

    store: FeatureStore
    classes: np.ndarray
    dataset: str = ""

    @property
    def num_classes(self) -> int:
        return int(self.classes.max()) + 1


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float | None = None
    best_step: int | None = None
    seconds: float = 0.0
    checkpoint: Path | None = None


def stage_steps(stages: list[TrainingStage], total: int) -> list[int]:
    """Optimiser steps of each stage: ``total`` split by the stages' fractions (>= 1 each)."""
    weight = sum(s.fraction for s in stages)
    return [max(1, round(total * s.fraction / weight)) for s in stages]


def make_optimizer(recipe: Recipe, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def lr_factor(recipe: Recipe, steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
        if recipe.schedule == "multistep":
            return 0.1 ** sum(step >= m * steps for m in recipe.milestones)
        return 1.0

    return factor


class EpisodeSampler:
    """Training episodes of one stage, each a pure function of its index."""

    def __init__(self, data: SplitFeatures, recipe: Recipe, seed: int, stage: str) -> None:
        self.data = data
        self.spec = EpisodeSpec(
            recipe.way, recipe.shot, recipe.queries, seed, data.dataset, f"train/{stage}"
        )
        self.pools = class_pools(np.asarray(data.classes))
        self.class_ids = np.array(sorted(self.pools))
        self.views = int(getattr(data.store, "num_views", 1))
        self.view_key = EpisodeSpec(
            recipe.way, recipe.shot, recipe.queries, seed, data.dataset, f"views/{stage}"
        ).key()

    def batch(self, first: int, count: int, device: torch.device) -> EpisodeBatch:
        eps = [
            make_episode(self.pools, self.class_ids, self.spec, i)
            for i in range(first, first + count)
        ]
        classes = np.stack([e[0] for e in eps])
        videos = np.stack([np.concatenate([e[1], e[2]]) for e in eps])  # [B, Ns+Nq]
        feats = self._features(videos, first).to(device)
        sp = self.spec
        ns = sp.way * sp.shot
        s_lab = np.repeat(np.arange(sp.way), sp.shot)
        q_lab = np.repeat(np.arange(sp.way), sp.queries)
        lab = torch.as_tensor(np.concatenate([s_lab, q_lab]), device=device).expand(count, -1)
        glob = torch.as_tensor(classes, device=device).gather(1, lab)
        return EpisodeBatch(
            feats[:, :ns],
            lab[:, :ns].clone(),
            feats[:, ns:],
            lab[:, ns:].clone(),
            glob[:, :ns],
            glob[:, ns:],
            sp.way,
        )

    def _features(self, videos: np.ndarray, first: int) -> torch.Tensor:
        flat = videos.reshape(-1)
        if self.views > 1:
            rngs = [
                np.random.Generator(np.random.Philox(key=self.view_key, counter=(first + b) << 128))
                for b in range(videos.shape[0])
            ]
            views = np.concatenate([r.integers(self.views, size=videos.shape[1]) for r in rngs])
            feats = self.data.store.get(flat, views)
        else:
            feats = self.data.store.get(flat)
        return feats.reshape(*videos.shape, *feats.shape[1:])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train` (tensors and plain data only: weights_only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def step_seed(seed: int, stage: int, step: int) -> int:
    return int(stable_hash([seed, stage, step], 15), 16)


def train(
    method: FewShotMethod,
    train_data: SplitFeatures,
    val_data: SplitFeatures | None,
    recipe: Recipe,
    *,
    seed: int = 0,
    out_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``method`` stage by stage on episodes of ``train_data``.

    Args:
        method: the (possibly adapter-wrapped) method; it is left holding the best weights.
        val_data: validation split; the best checkpoint by val accuracy is kept.
        out_dir: where ``last.pt`` (resume point) and ``best.pt`` go; ``None`` keeps nothing.
        stop_after: stop (as if interrupted) after this many steps in total — for tests.
        fingerprint: what makes this run (hyper-parameters, recipe, seed, data, code),
            stored in the checkpoints; resuming from ``out_dir`` with another one raises
            :class:`RunMismatchError` naming the differing fields.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    method.to(device)
    out = Path(out_dir) if out_dir is not None else None
    ckpt = load_resume(out, resume, fingerprint)
    result = TrainResult(
        history=list(ckpt.get("history", [])) if ckpt else [],
        best_val=ckpt.get("best_val") if ckpt else None,
        best_step=ckpt.get("best_step") if ckpt else None,
    )
    if ckpt:
        method.load_state_dict(ckpt["method"])
    best_state = copy.deepcopy(method.state_dict())
    if out is not None and (out / "best.pt").exists() and ckpt:
        best_state = load_checkpoint(out / "best.pt")["method"]
    stages = method.training_stages()
    counts = stage_steps(stages, recipe.steps)
    val_manifest = val_manifest_for(val_data, recipe, seed)
    done_total = 0
    bar = progress_bar(total=sum(counts), desc="train", unit="step", disable=not progress)
    for si, (stage, n_steps) in enumerate(zip(stages, counts)):
        start = 0
        if ckpt and si < ckpt["stage"]:
            bar.update(n_steps)
            continue
        params = list(stage.parameters())
        opt = make_optimizer(recipe, params) if params else None
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(recipe, n_steps)) if opt else None
        if ckpt and si == ckpt["stage"]:
            start = ckpt["step"]
            if opt is not None and ckpt["optimizer"]:
                opt.load_state_dict(ckpt["optimizer"])
                sched.load_state_dict(ckpt["scheduler"])
            bar.update(start)
        sampler = EpisodeSampler(train_data, recipe, seed, stage.name)
        last_stage = si == len(stages) - 1
        with only_trainable(method, params):
            for step in range(start, n_steps):
                method.train()
                torch.manual_seed(step_seed(seed, si, step))
                terms = train_step(method, stage, sampler, opt, recipe, step, device)
                sched.step() if sched else None
                row = {"stage": stage.name, "step": step + 1, **terms}
                if last_stage and val_manifest is not None and is_val_step(step, n_steps, recipe):
                    acc = evaluate(method, val_data.store, val_manifest, progress=False).accuracy
                    row["val_accuracy"] = acc
                    if result.best_val is None or acc > result.best_val:
                        result.best_val, result.best_step = acc, step + 1
                        best_state = copy.deepcopy(method.state_dict())
                        if out is not None:
                            save_checkpoint(
                                out / "best.pt",
                                {
                                    "method": best_state,
                                    "val_accuracy": acc,
                                    "step": step + 1,
                                    "recipe": recipe.to_dict(),
                                    "hparams": method.hparams,
                                    "fingerprint": fingerprint,
                                },
                            )
                result.history.append(row)
                bar.update(1)
                done_total += 1
                if out is not None and (is_val_step(step, n_steps, recipe) or step + 1 == n_steps):
                    save_checkpoint(
                        out / "last.pt",
                        resume_payload(method, opt, sched, si, step + 1, result, fingerprint),
                    )
                if stop_after is not None and done_total >= stop_after:
                    bar.close()
                    raise KeyboardInterrupt(f"stopped after {done_total} steps")
        if out is not None:
            save_checkpoint(
                out / "last.pt",
                resume_payload(method, None, None, si + 1, 0, result, fingerprint),
            )
        ckpt = None
    bar.close()
    if val_manifest is not None:
        method.load_state_dict(best_state)
    method.eval()
    result.seconds = time.perf_counter() - t0
    result.checkpoint = out / "best.pt" if out is not None and (out / "best.pt").exists() else None
    return result


def is_val_step(step: int, n_steps: int, recipe: Recipe) -> bool:
    return (step + 1) % max(1, recipe.val_every) == 0 or step + 1 == n_steps


def train_step(method, stage, sampler, opt, recipe, step, device) -> dict[str, float]:
    n = recipe.episodes_per_step
    micro = recipe.micro_batch or n
    totals: dict[str, float] = {}
    for first in range(0, n, micro):
        count = min(micro, n - first)
        batch = sampler.batch(step * n + first, count, device)
        losses = stage.loss(batch)
        check_losses(losses, stage=stage.name, step=step)
        loss = sum(losses.values()) * (count / n)
        if opt is not None:
            loss.backward()
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) * count / n
    if opt is not None:
        if recipe.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for g in opt.param_groups for p in g["params"]], recipe.grad_clip
            )
        opt.step()
        opt.zero_grad(set_to_none=True)
    return totals


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


def val_manifest_for(val_data: SplitFeatures | None, recipe: Recipe, seed: int):
    if val_data is None or recipe.val_episodes <= 0:
        return None
    return make_manifest(
        val_data.classes,
        way=min(recipe.way, val_data.num_classes),
        shot=recipe.val_shot,
        queries=1,
        episodes=recipe.val_episodes,
        seed=seed,
        dataset=val_data.dataset,
        split="val",
    )


def resume_payload(
    method, opt, sched, stage, step, result: TrainResult, fingerprint: dict | None = None
) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint,
        "method": method.state_dict(),
        "optimizer": opt.state_dict() if opt is not None else {},
        "scheduler": sched.state_dict() if sched is not None else {},
        "stage": stage,
        "step": step,
        "history": result.history,
        "best_val": result.best_val,
        "best_step": result.best_step,
    }


class RunMismatchError(StaleError):
    """A training folder holds a run made with other settings or code."""


def load_resume(
    out: Path | None, resume: bool, fingerprint: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The resume point ``out/last.pt``, if resuming and one exists. With ``fingerprint``,
    a checkpoint made by another run raises :class:`RunMismatchError` naming every field
    that differs (never a silent resume of another run)."""
    if out is None or not resume or not (out / "last.pt").exists():
        return None
    ckpt = load_checkpoint(out / "last.pt")
    if fingerprint is not None:
        stored = ckpt.get("fingerprint") or {}
        diff = provenance_diff(stored, fingerprint)
        if diff:
            raise RunMismatchError(
                f"{out} holds a training run made with other settings; differing fields:\n  "
                + "\n  ".join(diff)
                + "\nResume only continues the same run: pass --overwrite to start this one "
                "there (the old checkpoints are replaced), or choose another --out."
            )
    return ckpt
