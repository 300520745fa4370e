"""Evaluation spread over the ranks of a torchrun job, with exactly the 1-process records.

The unique videos are encoded in the same chunks as :func:`fsarbench.evaluate.evaluate`
(chunk ``k`` on rank ``k % world``) and the states gathered; episodes are matched in the same
batches (batch ``j`` on rank ``j % world``) and the predictions gathered to rank 0, which
summarises them. Every chunk and batch therefore sees the very inputs it sees in a 1-process
run, so the records are identical, not merely close.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fsarbench.distributed.collectives import broadcast_module, gather_to_main
from fsarbench.distributed.env import is_main, rank, world_size
from fsarbench.episodes import Manifest
from fsarbench.evaluate import (
    PARTIAL_SAVE_EVERY_S,
    EvalResult,
    autocast_name,
    choose_batch,
    encode_videos,
    load_partial_predictions,
    make_predictor,
    method_label,
    names_for,
    prepare_pool,
    resume_tag,
    save_partial_predictions,
    summarise_predictions,
    warn_zero_frames,
)
from fsarbench.features.store import FeatureStore
from fsarbench.io import stable_hash
from fsarbench.methods import FewShotMethod
from fsarbench.progress import progress_bar
from fsarbench.state import State, state_cat, state_map

__all__ = [
    "shard_starts",
    "encode_sharded",
    "evaluate_sharded",
    "rank_partial_path",
    "RankMismatchError",
]


def shard_starts(total: int, step: int, shard: int, shards: int) -> list[int]:
    """Starts of the blocks ``[s, s+step)`` of ``range(total)`` that shard ``shard`` owns
    (block ``j`` goes to shard ``j % shards``)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} outside 0..{shards - 1}")
    return list(range(0, total, step))[shard::shards]


def _all_gather(obj):
    """``obj`` of every rank, on every rank (rank order)."""
    import torch.distributed as dist

    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def encode_sharded(
    method: FewShotMethod,
    store: FeatureStore,
    indices: np.ndarray,
    *,
    chunk: int = 512,
    device: torch.device,
    autocast: bool = False,
    zero_frames: list[int] | None = None,
) -> State:
    """:func:`encode_videos` with its chunks spread over ranks; the full state on every rank
    (and every rank's videos with all-zero frames appended to ``zero_frames``)."""
    found: list[int] = []
    run = dict(chunk=chunk, device=device, autocast=autocast, zero_frames=found)
    if world_size() == 1:
        state = encode_videos(method, store, indices, **run)
        if zero_frames is not None:
            zero_frames += found
        return state
    mine = {
        s: state_map(Tensor.cpu, encode_videos(method, store, indices[s : s + chunk], **run))
        for s in shard_starts(len(indices), chunk, rank(), world_size())
    }
    parts: dict[int, State] = {}
    for got, zeros in _all_gather((mine, found)):
        parts.update(got)
        if zero_frames is not None:
            zero_frames += zeros
    return state_map(lambda t: t.to(device), state_cat([parts[s] for s in sorted(parts)]))


def evaluate_sharded(
    method: FewShotMethod,
    features: Tensor | FeatureStore,
    manifest: Manifest,
    *,
    batch_episodes: int | None = None,
    max_batch_bytes: int | None = None,
    encode_chunk: int = 512,
    interval: str = "normal",
    device: torch.device | str | None = None,
    autocast: bool = False,
    progress: bool = True,
    partial_path: str | Path | None = None,
    nonfinite: str = "error",
    class_names: list[str] | None = None,
    partial_tag: str = "",
    inputs: object = None,
) -> EvalResult | None:
    """:func:`fsarbench.evaluate.evaluate` over every rank: the result on rank 0, ``None``
    elsewhere. ``partial_path`` gets a per-rank suffix so each rank resumes its own batches.
    Every rank evaluates rank 0's weights and buffers (a method built without a checkpoint
    had other random weights on each rank, and the merged record mixed two models).

    ``inputs``: what the caller knows of the features' identity (a file's md5, a cache key);
    every rank must have been given the same, and the same method, hyper-parameters,
    manifest and settings, else :class:`RankMismatchError` (ranks started with other
    arguments merged into one confident record)."""
    t0 = time.perf_counter()
    settings = (batch_episodes, max_batch_bytes, encode_chunk, interval, autocast, nonfinite)
    _check_ranks_agree(method, features, manifest, (*settings, partial_tag), inputs)
    broadcast_module(method)
    store, device, unique, position = prepare_pool(method, features, manifest, device)
    zero_frames: list[int] = []
    state = encode_sharded(
        method,
        store,
        unique,
        chunk=encode_chunk,
        device=device,
        autocast=autocast,
        zero_frames=zero_frames,
    )
    if is_main():
        warn_zero_frames(sorted(zero_frames), method_label(method), store)
    batch_episodes = choose_batch(
        method, state, len(unique), manifest, device, batch_episodes, max_batch_bytes
    )
    predicted = _match_shard(
        method,
        state,
        position,
        manifest,
        batch_episodes,
        device,
        autocast,
        progress,
        rank_partial_path(partial_path),
        nonfinite,
        names_for(method, class_names),
        partial_tag,
    )
    gathered = gather_to_main(predicted)
    if gathered is None:
        return None
    merged = np.max(np.stack(gathered), axis=0)  # each slot is set (>= 0) on one rank only
    unfilled = int((merged < 0).sum())
    if unfilled:  # would be counted wrong
        raise RankMismatchError(
            f"{unfilled} query predictions were made by no rank: the ranks did not split the "
            "episodes alike; start every rank with the same arguments"
        )
    result = summarise_predictions(merged, manifest, interval, time.perf_counter() - t0)
    result.extra["nonfinite_policy"] = nonfinite
    result.extra["autocast"] = autocast_name(device, autocast)
    result.extra["batch_episodes"] = min(batch_episodes, result.episodes)  # as evaluate says
    result.extra["zero_frame_videos"] = len(zero_frames)
    return result


class RankMismatchError(RuntimeError):
    """The ranks of one sharded evaluation were given different inputs or settings."""


def _check_ranks_agree(
    method: FewShotMethod, features, manifest: Manifest, settings: tuple, inputs: object
) -> None:
    """Refuse on every rank when any rank's method, hyper-parameters, manifest, features
    (pool shape and the caller's ``inputs``) or ``settings`` differ from rank 0's."""
    if world_size() == 1:
        return
    shape = tuple(features.shape) if isinstance(features, Tensor) else (len(features),)
    mine = {
        "method": f"{type(method).__module__}.{type(method).__qualname__}",
        "hyper-parameters": stable_hash(method.hparams),
        "manifest": manifest.hash,
        "features": stable_hash([list(shape), repr(inputs)]),
        "settings": stable_hash(repr(settings)),
    }
    every = _all_gather(mine)
    for other, theirs in enumerate(every[1:], start=1):
        differ = [key for key in mine if theirs[key] != every[0][key]]
        if differ:
            raise RankMismatchError(
                f"rank {other} of this torchrun job was given another {', '.join(differ)} "
                "than rank 0 (batch size, interval and precision are settings): start every "
                "rank with the same arguments"
            )


def rank_partial_path(path: str | Path | None) -> Path | None:
    """This rank's own file of the partial evaluation ``path`` (``path`` itself in a plain
    process): each rank saves and resumes only the batches it evaluates."""
    if path is None:
        return None
    path = Path(path)
    if world_size() == 1:
        return path
    return path.with_name(f"{path.stem}.rank{rank()}of{world_size()}{path.suffix}")


def _own_rows(
    resumed: np.ndarray | None, starts: list[int], step: int, shape: tuple[int, int]
) -> np.ndarray:
    """``[E, Nq]`` predictions to resume: the rows of this rank's batches ``[s, s + step)``
    taken from the partial ``resumed`` (``[E, Nq]`` or ``None``), every other row ``-1``.

    A partial saved under another batch size (or ``--max-batch-bytes``) holds rows that are
    now another rank's; kept, both ranks' values reached the merge, which takes each row from
    one rank only (``np.max``: the higher label won wherever they differed)."""
    own = np.full(shape, -1, dtype=np.int64)
    if resumed is not None:
        for start in starts:
            own[start : start + step] = resumed[start : start + step]
    return own


def _match_shard(
    method,
    state,
    position,
    manifest: Manifest,
    batch_episodes: int,
    device,
    autocast: bool,
    progress: bool,
    partial: Path | None,
    nonfinite: str = "error",
    class_names: list[str] | None = None,
    partial_tag: str = "",
) -> np.ndarray:
    """``[E, Nq]`` predictions of this rank's batches; other rows stay ``-1``."""
    e, nq = manifest.query.shape
    tag = resume_tag(manifest.hash, method, nonfinite, partial_tag) if partial else ""
    starts = shard_starts(e, batch_episodes, rank(), world_size())
    resumed = load_partial_predictions(partial, manifest, tag)
    predicted = _own_rows(resumed, starts, batch_episodes, (e, nq))
    todo = [s for s in starts if (predicted[s : s + batch_episodes] < 0).any()]
    # before the bar: a pair table built in it was counted into the first batch's rate
    predict = make_predictor(
        method,
        state,
        position,
        manifest,
        device,
        autocast,
        nonfinite=nonfinite,
        class_names=class_names,
        progress=progress,
    )
    bar = progress_bar(
        total=len(starts),
        initial=len(starts) - len(todo),
        unit="batch",
        desc=f"evaluate (rank {rank()})",
        disable=not progress,
    )
    saved = time.monotonic()
    try:
        for start in todo:
            predicted[start : start + batch_episodes] = predict(
                start, min(start + batch_episodes, e)
            )
            bar.update(1)
            if partial is not None and time.monotonic() - saved > PARTIAL_SAVE_EVERY_S:
                save_partial_predictions(partial, predicted, tag)  # survives a SIGKILL
                saved = time.monotonic()
    except BaseException:  # Ctrl-C, SystemExit (a preempted SLURM job), an error mid-way
        save_partial_predictions(partial, predicted, tag)
        raise
    finally:
        bar.close()
    save_partial_predictions(partial, predicted, tag)
    return predicted
