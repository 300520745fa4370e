"""Refusals on the numeric path: non-finite input features, logits at evaluation and training
losses; input frames whose features are all zero are counted (:func:`zero_frame_videos`).

A NaN logit has no argmax; ``argmax`` still returns an index (often 0), which would turn a
broken method into an ordinary-looking accuracy. Here such queries are an error naming the
method, episodes and queries, or, by the opt-in ``count_wrong`` policy, predictions marked
:data:`NONFINITE` that count as wrong and are recorded as such.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "NONFINITE",
    "NONFINITE_POLICIES",
    "NonFiniteLogitsError",
    "ConstantLogitsError",
    "NonFiniteLossError",
    "NonFiniteFeaturesError",
    "LogitsShapeError",
    "check_finite_features",
    "zero_frame_videos",
    "zero_frames_message",
    "check_nonfinite_policy",
    "predict_labels",
    "check_losses",
]

#: Prediction of a query whose logits were not finite (``count_wrong`` policy). Larger than any
#: label, so it never equals a true label, survives the sharded evaluator's max-merge of ranks
#: and is never mistaken for an unfinished slot (``-1``).
NONFINITE = np.iinfo(np.int32).max

NONFINITE_POLICIES = ("error", "count_wrong")


class NonFiniteLogitsError(FloatingPointError):
    """A method returned NaN or infinite logits for some queries; ``where`` names the
    method, episodes and queries without the advice (callers give their own)."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.where = where or message


class LogitsShapeError(ValueError):
    """A method returned logits that are not ``[episodes, queries, way]`` real scores (numpy
    would broadcast or index them into an ordinary-looking accuracy; complex or bool ones
    crashed in torch's argmax)."""


class NonFiniteLossError(FloatingPointError):
    """A training loss term was NaN or infinite."""


class NonFiniteGradientError(NonFiniteLossError):
    """A training step's loss was finite but a gradient held NaN or inf (a ``sqrt`` at 0, a
    norm of a zero vector): stepping would write it into the weights."""


class NonFiniteFeaturesError(FloatingPointError):
    """Input features of some videos hold NaN or infinite values (a data problem, not the
    method's: no policy counts such videos' queries as wrong)."""


def check_finite_features(features: torch.Tensor, indices: np.ndarray, store=None) -> None:
    """Raise :class:`NonFiniteFeaturesError` naming the pool videos of ``features [n, ...]``
    (``indices [n]``: their positions in the pool) that are not all finite; with ``store``
    a feature cache, by their video ids and the cache's folder too.

    A finite sum proves every value finite (one inf or NaN makes any sum inf or NaN) in one
    read of the features, about 30x faster than testing each value; only a sum that is not
    finite (a bad value, or finite values overflowing it) looks at the videos one by one."""
    half = features.dtype in (torch.float16, torch.bfloat16)
    if bool(torch.isfinite(features.sum(dtype=torch.float32 if half else None))):
        return
    finite = torch.isfinite(features).flatten(1).all(1)
    if bool(finite.all()):
        return
    bad = np.asarray(indices)[np.flatnonzero(~finite.cpu().numpy())]
    bad = bad[np.sort(np.unique(bad, return_index=True)[1])]  # a video drawn twice, once
    raise NonFiniteFeaturesError(
        f"the features of {len(bad)} video(s) hold NaN or inf ({_videos_text(bad, store)}): "
        "re-extract them (delete their feature cache) or leave those videos out"
    )


def _videos_text(bad: np.ndarray, store) -> str:
    """``"pool indices 5, 9"``, or with a feature cache ``"scene_10_005, ... (pool indices
    5, 9) of the cache /c/features/synth/test/ab12"``: the index alone did not say which
    file or cache to look at."""
    from fsarbench.features.cache import FeatureCache

    more = ", ..." if len(bad) > 5 else ""
    shown = ("pool index " if len(bad) == 1 else "pool indices ") + ", ".join(
        map(str, bad[:5].tolist())
    )
    if not isinstance(store, FeatureCache):
        return shown + more
    ids = ", ".join(store.video_ids[int(i)] for i in bad[:5])
    return f"{ids}{more} ({shown}{more}) of the cache {store.path}"


def zero_frame_videos(features: torch.Tensor, indices: np.ndarray) -> np.ndarray:
    """Pool indices (``indices [n]``) of the videos of ``features [n, ..., D]`` that hold a
    frame of ``D`` zeros. A zero row is one whose maximum and minimum are both 0: two
    reductions, no temporary of the features' size."""
    if features.numel() == 0:
        return np.zeros(0, dtype=np.int64)
    zero = (features.amax(-1) == 0) & (features.amin(-1) == 0)  # [n, ...]
    if not bool(zero.any()):
        return np.zeros(0, dtype=np.int64)
    rows = np.flatnonzero(zero.reshape(len(zero), -1).any(1).cpu().numpy())
    return np.asarray(indices, dtype=np.int64)[rows]


def zero_frames_message(videos: np.ndarray | list[int], where: str) -> str:
    """The warning for ``videos`` (pool indices) with an all-zero frame, evaluated ``where``."""
    videos = np.asarray(videos)
    shown = ", ".join(map(str, videos[:5].tolist())) + (", ..." if len(videos) > 5 else "")
    return (
        f"{where}: {len(videos)} video(s) have frames whose features are all zero (pool "
        f"indices {shown}): padding, an extraction that wrote nothing, a fine-tuned backbone "
        "whose outputs died, or black frames through random weights (weights=none)? A zero "
        "frame has no direction: every cosine with it is 0, and a query alike for every "
        "class is scored at chance (argmax takes label 0). Counted in the record "
        "(zero_frame_videos); repeat a short video's real frames instead of padding"
    )


def check_nonfinite_policy(policy: str) -> str:
    if policy not in NONFINITE_POLICIES:
        raise ValueError(
            f"non-finite policy {policy!r} is not one of {list(NONFINITE_POLICIES)}: 'error' "
            "stops at the first NaN/inf logit, 'count_wrong' counts such queries as wrong and "
            "records how many"
        )
    return policy


def predict_labels(
    logits: Tensor,
    *,
    first_episode: int,
    policy: str = "error",
    method: str = "method",
    shape: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Predicted labels ``[B, Nq]`` of ``logits [B, Nq, way]`` for episodes starting at
    ``first_episode``; queries with a non-finite logit raise or become :data:`NONFINITE`.
    With ``shape`` (``(B, Nq, way)``), logits of any other shape raise
    :class:`LogitsShapeError`."""
    if shape is not None and tuple(logits.shape) != tuple(shape):
        b, nq, way = shape
        raise LogitsShapeError(
            f"{method} returned logits of shape {list(logits.shape)} for {b} episode(s) of "
            f"{nq} queries and {way} classes (episodes {first_episode}..{first_episode + b - 1})"
            f": match must return [episodes, queries, way], one score per class in the "
            "episode's label order (average per-support scores over each class's shots)"
        )
    if logits.dtype.is_complex or logits.dtype == torch.bool:
        raise LogitsShapeError(
            f"{method} returned {logits.dtype} logits (episodes {first_episode}..): match must "
            "return real scores (float or int), one per class"
        )
    bad = ~torch.isfinite(logits).all(-1)
    # every class scored alike, among finite rows (inf == inf made all-inf rows "alike", so
    # overflowed logits were refused as constant, past --nonfinite count_wrong)
    flat = (logits.amax(-1) == logits.amin(-1)) & ~bad
    # labels and the two masks in one copy to the host (each copy waits for the GPU)
    host = torch.stack([logits.argmax(-1), bad.long(), flat.long()]).cpu().numpy()
    predicted, bad_np = host[0].astype(np.int64), host[1].astype(bool)
    flat_np = host[2].astype(bool)
    # per episode, not per batch: whether a number was printed depended on --batch-episodes
    alike = np.flatnonzero(flat_np.any(1) & (flat_np | bad_np).all(1))
    if len(alike) and logits.shape[-1] > 1:
        shown = ", ".join(str(first_episode + int(i)) for i in alike[:5])
        more = f" and {len(alike) - 5} more of these" if len(alike) > 5 else ""
        raise ConstantLogitsError(
            f"{method} scored every class alike for every query of episode(s) {shown}{more}: "
            "argmax would pick label 0 each time and count chance accuracy into the result. "
            "Its features carry nothing it can use there (all zero, or so large that the "
            "similarity overflowed?): check them, and the method ('python -m fsarbench "
            "check-method NAME')"
        )
    if not bad_np.any():
        return predicted
    if policy == "error":
        where = _where(bad_np, first_episode, method)
        raise NonFiniteLogitsError(
            f"{where}; no accuracy is computed from them. Check the features' magnitude "
            "(finite values large enough that the method's products overflow give inf: "
            "rescale them) and the method (fsarbench.testing.contract checks a method's "
            "outputs); or pass --nonfinite count_wrong to count such queries as wrong "
            "(recorded with the result).",
            where,
        )
    predicted[bad_np] = NONFINITE
    return predicted


class ConstantLogitsError(FloatingPointError):
    """Every query of an episode got the same logit for every class: no prediction exists."""


def _where(bad: np.ndarray, first_episode: int, method: str, show: int = 5) -> str:
    episodes, queries = np.nonzero(bad)
    pairs = ", ".join(
        f"episode {first_episode + int(e)} query {int(q)}"
        for e, q in zip(episodes[:show], queries[:show])
    )
    more = f" and {len(episodes) - show} more" if len(episodes) > show else ""
    return f"{method} returned NaN/inf logits for {len(episodes)} queries ({pairs}{more})"


def check_gradients(params: Sequence[Tensor], *, stage: str, step: int) -> None:
    """Raise :class:`NonFiniteGradientError` naming ``stage`` and ``step`` (0-based) when a
    gradient of ``params`` holds NaN or inf (their largest magnitudes, one device sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    largest = torch.stack(torch._foreach_norm(grads, float("inf")))
    if bool(torch.isfinite(largest).all()):
        return
    names = [i for i, v in enumerate(largest.tolist()) if not math.isfinite(v)]
    raise NonFiniteGradientError(
        f"non-finite gradient at stage {stage!r} step {step + 1} (a finite loss; "
        f"{len(names)} of {len(grads)} parameter tensors, e.g. #{names[0]}): the step was not "
        "taken and training stopped (the last good checkpoint is kept). A sqrt or norm at "
        "zero, or a division by a vanishing value, in the method's loss is the usual cause; "
        "lower the learning rate or enable grad_clip if the weights diverged."
    )


def check_losses(losses: Mapping[str, Tensor | float], *, stage: str, step: int) -> None:
    """Raise :class:`NonFiniteLossError` naming ``stage``, ``step`` (0-based) and every
    non-finite term of ``losses`` (scalar tensors or floats)."""
    values = {
        k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in losses.items()
    }
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        terms = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteLossError(
            f"non-finite training loss at stage {stage!r} step {step + 1}: {terms}. Training "
            "stopped (the last good checkpoint is kept); lower the learning rate, enable "
            "grad_clip, or check the inputs for NaN."
        )
