"""The evaluator: a method over a manifest, in batches of episodes, with a 95% CI.

Each unique video of the manifest is encoded once (``method.encode``); episodes are then
matched in batches by gathering the encoded states (``method.match``). Raw features of every
episode are never materialised at once. A pairwise head on a small pool scores every video
pair once instead (:mod:`fsarbench.pairs`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fsarbench.distributed.precision import select_precision
from fsarbench.episodes import Manifest, ManifestError
from fsarbench.features.store import FeatureStore, as_feature_store
from fsarbench.guards import (
    NONFINITE,
    check_finite_features,
    check_nonfinite_policy,
    predict_labels,
    zero_frame_videos,
    zero_frames_message,
)
from fsarbench.io import atomic_write_bytes, stable_hash
from fsarbench.methods import FewShotMethod, episode_class_names
from fsarbench.pairs import pair_table, table_logits, use_pair_table, use_pool_products
from fsarbench.progress import progress_bar
from fsarbench.registry import check_built_method, is_builtin
from fsarbench.state import (
    State,
    state_cat,
    state_class_means,
    state_gather,
    state_leaves,
    state_map,
)
from fsarbench.stats.intervals import INTERVALS, mean_and_halfwidth

__all__ = [
    "EvalResult",
    "default_batch_bytes",
    "encode_videos",
    "wanted_batch",
    "choose_batch",
    "evaluate",
    "make_predictor",
    "prepare_pool",
]

log = logging.getLogger(__name__)

RECORD_FIELDS = (
    "episode",
    "query",
    "true_label",
    "true_class",
    "predicted_label",
    "predicted_class",
    "correct",
)


@dataclass
class EvalResult:
    """Accuracy of one method on one manifest.

    Attributes:
        accuracy: mean per-episode accuracy in percent.
        ci95: 95% CI half-width in percent (see ``interval``).
        std: std of per-episode accuracy in percent (ddof as ``interval`` says).
        episode_accuracy: ``[E]`` per-episode accuracy as a fraction.
        records: per-query columns ``episode, query, true_label, true_class,
            predicted_label, predicted_class, correct`` as ``[E*Nq]`` numpy arrays.
        per_class_accuracy: global class id -> accuracy in percent over its queries.
    """

    accuracy: float
    ci95: float
    std: float
    episodes: int
    episode_accuracy: np.ndarray
    records: dict[str, np.ndarray]
    per_class_accuracy: dict[int, float]
    interval: str
    manifest_hash: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spread_name(self) -> str:
        return INTERVALS[self.interval]

    def records_frame(self):
        """Per-query records as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.records)

    def __str__(self) -> str:
        return f"{self.accuracy:.2f} ± {self.ci95:.2f} ({self.episodes} episodes)"


def device_of(method: torch.nn.Module) -> torch.device:
    for t in list(method.parameters()) + list(method.buffers()):
        return t.device
    return torch.device("cpu")


@torch.inference_mode()
def encode_videos(
    method: FewShotMethod,
    store: FeatureStore,
    indices: np.ndarray,
    *,
    chunk: int = 4096,
    device: torch.device | None = None,
    autocast: bool = False,
    zero_frames: list[int] | None = None,
) -> State:
    """Encode videos ``indices [n]`` of ``store``, ``chunk`` per ``encode`` call, into one
    state leading with ``n``. A single chunk is only made contiguous (with an in-memory store
    and a parameter-free encode it stays a view of the features: no copy of the pool).
    Features with NaN/inf raise; the videos with an all-zero frame are appended to
    ``zero_frames`` (:func:`~fsarbench.guards.zero_frame_videos`) when it is given."""
    device = device or device_of(method)
    parts = []
    for start in range(0, len(indices), chunk):
        feats = store.get(indices[start : start + chunk]).to(device)
        check_finite_features(feats, indices[start : start + chunk], store)
        if zero_frames is not None:
            zero_frames += zero_frame_videos(feats, indices[start : start + chunk]).tolist()
        with _autocast(device, autocast):
            parts.append(method.encode(feats))
    if len(parts) > 1:
        return state_cat(parts)
    # Every later gather or class mean reads whole rows of these tensors: a strided leaf (an
    # einsum or unbind output) would be copied whole at each batch instead of once here.
    return state_map(Tensor.contiguous, parts[0])


def autocast_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The dtype evaluation autocasts to: bf16 (fp16 where the GPU lacks it) on CUDA when
    ``enabled``; ``None`` (float32) otherwise, also on the CPU, where ``--amp`` does nothing."""
    return select_precision(torch.device(device), amp=enabled, channels_last=False).dtype


def autocast_name(device: torch.device, enabled: bool) -> str:
    """``"bfloat16"``/``"float16"``/``"off"``: what a record says evaluation ran under."""
    dtype = autocast_dtype(device, enabled)
    return "off" if dtype is None else str(dtype).removeprefix("torch.")


def _autocast(device: torch.device, enabled: bool):
    dtype = autocast_dtype(device, enabled)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def default_batch_bytes(device: torch.device) -> int:
    """Budget for one batch's gathered states: 64 MiB on CPU, where batches that stay near
    cache size matched 15-25% faster than 1 GiB ones in ``make bench``; 1 GiB on GPUs,
    where larger batches amortise kernel launches."""
    return (1 << 30) if torch.device(device).type == "cuda" else (64 << 20)


DEFAULT_BATCH_EPISODES = 500


def wanted_batch(
    method: FewShotMethod, device: torch.device, manifest: Manifest, batch_episodes: int | None
) -> int:
    """The episodes per batch asked for: ``batch_episodes`` when given, else the head's
    measured best on this device type and shot (:meth:`FewShotMethod.preferred_episode_batch`),
    else :data:`DEFAULT_BATCH_EPISODES`; :func:`fit_batch` then bounds it by memory."""
    if batch_episodes is not None:
        if batch_episodes < 1:
            raise ValueError(f"batch_episodes must be >= 1, got {batch_episodes}")
        return batch_episodes
    hint = method.preferred_episode_batch(torch.device(device).type, manifest.spec.shot)
    return hint or DEFAULT_BATCH_EPISODES


def fit_batch(
    state: State,
    n_videos: int,
    manifest: Manifest,
    wanted: int,
    budget: int,
    support_means: bool = False,
) -> int:
    """Episodes per batch whose gathered support+query states fit in ``budget`` bytes
    (with ``support_means``, a batch holds one class mean per label, not every support)."""
    per_video = sum(t.element_size() * t.numel() for t in state_leaves(state)) / max(1, n_videos)
    support_slots = manifest.way if support_means else manifest.support.shape[1]
    slots = support_slots + manifest.query.shape[1]
    return int(max(1, min(wanted, budget // max(1.0, per_video * slots))))


def choose_batch(
    method: FewShotMethod,
    state: State,
    n_videos: int,
    manifest: Manifest,
    device: torch.device,
    batch_episodes: int | None,
    max_batch_bytes: int | None,
) -> int:
    """Episodes per batch of an evaluator: :func:`wanted_batch` bounded by :func:`fit_batch`
    to ``max_batch_bytes`` (default :func:`default_batch_bytes` of ``device``). Episodes
    matched from pool products gather no states: the head bounds its own temporaries."""
    wanted = wanted_batch(method, device, manifest, batch_episodes)
    if use_pool_products(method, manifest, n_videos):
        return wanted
    return fit_batch(
        state,
        n_videos,
        manifest,
        wanted,
        max_batch_bytes or default_batch_bytes(device),
        method.support_means,
    )


def load_partial_predictions(path: Path | None, manifest: Manifest, tag: str) -> np.ndarray | None:
    if path is None or not path.exists():
        return None
    try:
        data = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
        if str(data["tag"]) != tag:
            return None
        predicted = np.asarray(data["predicted"])
    except Exception as err:  # truncated or foreign file: evaluate from the start
        log.warning("discarding unreadable partial evaluation %s (%s)", path, err)
        return None
    if predicted.shape[0] != manifest.episodes:
        return None
    done = int((predicted >= 0).all(1).sum())
    if done:  # a resumed evaluation said nothing of it
        log.info("resuming %s: %d of %d episodes already evaluated", path, done, len(predicted))
    return predicted


#: Seconds between saves of an evaluation's finished episodes (resumed by the next run).
PARTIAL_SAVE_EVERY_S = 60.0


def save_partial_predictions(path: Path | None, predicted: np.ndarray, tag: str) -> None:
    """Keep the finished batches at ``path`` for a resume. A failed write (a full disk) is
    warned about and the evaluation goes on: it threw away a finished evaluation's number."""
    if path is None:
        return
    buf = io.BytesIO()
    np.savez(buf, predicted=predicted, tag=np.array(tag))
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as err:
        log.warning(
            "could not keep the finished episodes at %s (%s): the evaluation goes on, but "
            "if it is interrupted a re-run starts it over",
            path,
            err,
        )


def check_evaluable(manifest: Manifest) -> None:
    """Refuse a manifest that cannot give a meaningful accuracy: malformed or leaking
    episodes (:meth:`Manifest.validate`), no queries to score, or one class per episode
    (always right).

    Raises:
        ManifestError: naming what is wrong.
    """
    manifest.validate()
    if manifest.spec.queries < 1:
        raise ManifestError("the manifest has no queries (queries=0): there is nothing to score")
    if manifest.spec.way < 2:
        raise ManifestError(
            f"{manifest.spec.way}-way episodes cannot be scored: with one class every query is "
            "right; use way >= 2"
        )


class FeatureShapeError(ValueError):
    """Features of another ``[T, D]`` than the method was built for."""


def check_feature_shape(method: FewShotMethod, shape: tuple[int, int]) -> None:
    """Refuse features whose ``(T, D)`` is not the method's ``(seq_len, feature_dim)``:
    ``[N, D, T]`` features given to a head built for ``[T, D]`` printed 24.30 (92.20 in the
    right layout), and T=16 frames to a head built for 8 passed the same way. A user's
    method (a built-in one maps what it is given itself)."""
    if is_builtin(type(method)):  # wrappers (a frame adapter, a finetuned backbone) map
        return  # their input features to the head's own size
    t, d = (int(x) for x in shape)
    if (t, d) != (method.seq_len, method.feature_dim):
        name = getattr(method, "method_name", None) or type(method).__name__
        raise FeatureShapeError(
            f"{name} was built for features of T={method.seq_len} frames x "
            f"D={method.feature_dim} dims, and these are T={t} x D={d} (features are "
            "[videos, frames, dims]): transpose them if they are [videos, dims, frames], or "
            f"build the method with seq_len={t}, feature_dim={d}"
        )


def prepare_pool(method: FewShotMethod, features, manifest: Manifest, device):
    """Checks and index maps shared by every evaluator: the feature store, the device, the
    manifest's unique videos ``[U]`` and each video's position among them ``[N]`` (-1: unused).
    Puts ``method`` in ``eval()``."""
    check_evaluable(manifest)
    store = as_feature_store(features)
    if len(store) != manifest.num_videos:
        # a larger store is no better: its positions are another pool's (e.g. before its
        # unreadable videos were left out), so every index would name a shifted video
        raise ValueError(
            f"manifest was drawn over a pool of {manifest.num_videos} videos but the feature "
            f"store holds {len(store)}: they describe different test pools"
        )
    check_feature_shape(method, store.feature_shape)
    method.eval()
    device = torch.device(device) if device is not None else device_of(method)
    unique = manifest.unique_videos()
    position = np.full(manifest.num_videos, -1, dtype=np.int64)
    position[unique] = np.arange(len(unique))
    return store, device, unique, position


def evaluate(
    method: FewShotMethod,
    features: Tensor | FeatureStore,
    manifest: Manifest,
    *,
    batch_episodes: int | None = None,
    max_batch_bytes: int | None = None,
    encode_chunk: int = 4096,
    interval: str = "normal",
    device: torch.device | str | None = None,
    autocast: bool = False,
    progress: bool = True,
    partial_path: str | Path | None = None,
    desc: str | None = None,
    pair_tables: dict | None = None,
    nonfinite: str = "error",
    partial_tag: str = "",
    class_names: Sequence[str] | None = None,
    manifest_hash: str | None = None,
) -> EvalResult:
    """Accuracy ± 95% CI of ``method`` on every episode of ``manifest``.

    Args:
        method: a few-shot head (put in ``eval()`` here).
        features: ``[N, T, D]`` tensor or a feature store indexed by the manifest's videos.
        manifest: the episodes.
        batch_episodes: episodes matched per call (fewer when the gathered states of that
            many episodes would exceed ``max_batch_bytes``; default
            :func:`default_batch_bytes` of the device); ``None``: the head's measured best
            (:func:`wanted_batch`). The batch used is in ``result.extra["batch_episodes"]``.
        interval: ``"normal"`` (TRX convention) or ``"t"``.
        partial_path: where finished episodes are saved, so an interrupted evaluation
            resumes from there (and gives the same result as an uninterrupted one).
        pair_tables: a dict the caller keeps for one (trained method, feature store): pair
            tables built here are kept in it and reused by later manifests over the same
            videos (e.g. the 5- to 10-way cells of one model).
        nonfinite: ``"error"`` (a NaN/inf logit raises
            :class:`~fsarbench.guards.NonFiniteLogitsError`) or ``"count_wrong"`` (such
            queries count as wrong; their number is in ``result.extra``).
        partial_tag: what else must match for ``partial_path`` to be resumed (e.g. a
            provenance key: a partial evaluation of other code or weights is discarded).
        class_names: the pool's class names (class id of ``manifest.classes`` -> name);
            required by, and passed only to, methods with ``uses_class_names``.
        manifest_hash: ``manifest.hash`` when the caller knows it already (hashing a
            10,000-episode manifest's canonical JSON takes tens of milliseconds).
    """
    t0 = time.perf_counter()
    check_nonfinite_policy(nonfinite)
    check_built_method(method)
    store, device, unique, position = prepare_pool(method, features, manifest, device)
    zero_frames: list[int] = []
    state = encode_videos(
        method,
        store,
        unique,
        chunk=encode_chunk,
        device=device,
        autocast=autocast,
        zero_frames=zero_frames,
    )
    warn_zero_frames(zero_frames, desc or method_label(method), store)

    e, nq = manifest.query.shape
    batch_episodes = choose_batch(
        method, state, len(unique), manifest, device, batch_episodes, max_batch_bytes
    )
    partial_path = Path(partial_path) if partial_path is not None else None
    manifest_hash = manifest_hash or manifest.hash  # canonical JSON of every episode: once
    tag = resume_tag(manifest_hash, method, nonfinite, partial_tag) if partial_path else ""
    predicted = load_partial_predictions(partial_path, manifest, tag)
    if predicted is None:
        predicted = np.full((e, nq), -1, dtype=np.int64)
    todo = [s for s in range(0, e, batch_episodes) if (predicted[s : s + batch_episodes] < 0).any()]
    # before the bar: a pair table built in it was counted into the first batch's rate
    predict = make_predictor(
        method,
        state,
        position,
        manifest,
        device,
        autocast,
        pair_tables,
        unique,
        nonfinite,
        names_for(method, class_names),
        progress=progress,
    )
    bar = progress_bar(
        total=e,
        initial=e - sum(min(batch_episodes, e - s) for s in todo),
        desc=desc or "evaluate",
        unit="episode",
        disable=not progress,
    )
    saved = time.monotonic()
    try:
        for start in todo:
            stop = min(start + batch_episodes, e)
            predicted[start:stop] = predict(start, stop)
            bar.update(stop - start)
            if partial_path is not None and time.monotonic() - saved > PARTIAL_SAVE_EVERY_S:
                save_partial_predictions(partial_path, predicted, tag)  # survives a SIGKILL
                saved = time.monotonic()
    except BaseException:  # Ctrl-C, SystemExit (a preempted SLURM job), an error mid-way
        save_partial_predictions(partial_path, predicted, tag)
        raise
    finally:
        bar.close()
    save_partial_predictions(partial_path, predicted, tag)
    seconds = time.perf_counter() - t0
    result = summarise_predictions(predicted, manifest, interval, seconds, manifest_hash)
    result.extra["nonfinite_policy"] = nonfinite
    result.extra["batch_episodes"] = min(batch_episodes, e)
    result.extra["autocast"] = autocast_name(device, autocast)
    result.extra["zero_frame_videos"] = len(zero_frames)
    return result


_ZERO_FRAMES_WARNED: set[tuple[int, int, tuple[int, ...]]] = set()


def warn_zero_frames(videos: list[int], where: str, store: object) -> None:
    """Log that pool ``videos`` of ``store`` hold all-zero frames, once per store and videos:
    a run's cells of one pool would repeat it for every cell (each record counts them)."""
    key = (id(store), len(videos), tuple(videos[:5]))
    if videos and key not in _ZERO_FRAMES_WARNED:
        _ZERO_FRAMES_WARNED.add(key)
        log.warning("%s", zero_frames_message(videos, where))


class ClassNamesError(ValueError):
    """A method that uses class names evaluated without them."""


def names_for(method: FewShotMethod, class_names: Sequence[str] | None) -> list[str] | None:
    """The class names the evaluator passes ``method``: ``class_names`` for methods with
    ``uses_class_names`` (an error when missing), None for every other method."""
    if not method.uses_class_names:
        return None
    if class_names is None:
        raise ClassNamesError(
            f"{method_label(method)} uses class names: pass class_names= (the evaluated "
            "split's class names, indexed by the manifest's class ids)"
        )
    return list(class_names)


def method_label(method: torch.nn.Module) -> str:
    """The name errors and partial files give ``method``."""
    return str(getattr(method, "method_name", type(method).__name__))


def resume_tag(manifest_hash: str, method: FewShotMethod, nonfinite: str, extra: str) -> str:
    """What a partial evaluation must have been made with to be resumed: the episodes, the
    method, its hyper-parameters, a digest of its weights and buffers and of the code that
    computes it, the non-finite policy, and ``extra`` (the caller's own, e.g. ``run``'s
    provenance). The method's name alone resumed another model's predictions, and a
    count_wrong run's under ``nonfinite="error"``; without the hyper-parameters a head
    without weights resumed another configuration's, without the code digest an
    interrupted evaluation resumed under new code mixed the two versions' predictions."""
    from fsarbench.provenance import code_digest

    digest = hashlib.md5()
    for key, value in method.state_dict().items():
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    made = f"{stable_hash(method.hparams)}:{digest.hexdigest()}:{code_digest(method)}"
    return f"{manifest_hash}:{method_label(method)}:{made}:{nonfinite}:{extra}"


def make_predictor(
    method: FewShotMethod,
    state: State,
    position: np.ndarray,
    manifest: Manifest,
    device: torch.device,
    autocast: bool,
    pair_tables: dict | None = None,
    unique: np.ndarray | None = None,
    nonfinite: str = "error",
    class_names: list[str] | None = None,
    progress: bool = False,
) -> Callable[[int, int], np.ndarray]:
    """``predict(start, stop) -> [stop-start, Nq]`` predicted labels of those episodes.

    Looks the episodes up in a pair table when the head is pairwise at this shot and the
    pool is small enough (:func:`fsarbench.pairs.use_pair_table`), else matches them. With
    ``pair_tables`` (and ``unique``, the encoded videos' ids), a table built for the same
    videos before is reused. Non-finite logits follow ``nonfinite``
    (:func:`fsarbench.guards.predict_labels`). ``class_names`` (methods with
    ``uses_class_names``) reach ``match`` per episode, never through a pair table.
    ``progress``: a bar while a large pool's pair table is built (:func:`pair_table`).
    """
    name = method_label(method)
    labels = torch.as_tensor(np.array(manifest.support_labels, copy=True), device=device)
    n_videos = len(state_leaves(state)[0])
    if class_names is None and use_pair_table(method, manifest, n_videos):
        key = None if unique is None else hashlib.sha1(unique.tobytes()).hexdigest()
        table = None if pair_tables is None else pair_tables.get(key)
        if table is None:
            with _autocast(device, autocast):
                table = pair_table(method, state, progress=progress)
            if pair_tables is not None and key is not None:
                pair_tables[key] = table

        def lookup(start: int, stop: int) -> np.ndarray:
            query = torch.as_tensor(position[manifest.query[start:stop]], device=device)
            support = torch.as_tensor(position[manifest.support[start:stop]], device=device)
            logits = table_logits(table, query, support, labels[start:stop], manifest.way)
            return _episode_labels(logits, manifest, start, stop, nonfinite, name)

        return lookup
    if class_names is None and use_pool_products(method, manifest, n_videos):
        return _pool_predictor(
            method,
            state,
            position,
            manifest,
            device,
            autocast,
            labels,
            pair_tables,
            unique,
            nonfinite,
        )
    buffers: dict = {}

    def match(start: int, stop: int) -> np.ndarray:
        logits = match_batch(
            method,
            state,
            position,
            manifest,
            start,
            stop,
            labels,
            device,
            autocast,
            buffers,
            class_names,
        )
        return _episode_labels(logits, manifest, start, stop, nonfinite, name)

    return match


def _episode_labels(
    logits: Tensor, manifest: Manifest, start: int, stop: int, nonfinite: str, name: str
) -> np.ndarray:
    """:func:`~fsarbench.guards.predict_labels` of episodes ``start..stop``, refusing logits
    that are not ``[episodes, queries, way]``."""
    shape = (stop - start, manifest.query.shape[1], manifest.way)
    return predict_labels(logits, first_episode=start, policy=nonfinite, method=name, shape=shape)


#: Keys of pool products in an evaluation's ``pair_tables`` dict (beside pair tables).
POOL_KEY_PREFIX = "pool:"


def _pool_predictor(
    method: FewShotMethod,
    state: State,
    position: np.ndarray,
    manifest: Manifest,
    device: torch.device,
    autocast: bool,
    labels: Tensor,
    pair_tables: dict | None,
    unique: np.ndarray | None,
    nonfinite: str,
) -> Callable[[int, int], np.ndarray]:
    """``predict(start, stop)`` through the head's pool products (built once per pool and
    kept in ``pair_tables`` beside the pair tables)."""
    key = None if unique is None else POOL_KEY_PREFIX + hashlib.sha1(unique.tobytes()).hexdigest()
    products = None if pair_tables is None else pair_tables.get(key)
    if products is None:
        with torch.inference_mode(), _autocast(device, autocast):
            products = method.pool_products(state)
        if pair_tables is not None and key is not None:
            pair_tables[key] = products
    name = method_label(method)

    @torch.inference_mode()
    def pooled(start: int, stop: int) -> np.ndarray:
        query = torch.as_tensor(position[manifest.query[start:stop]], device=device)
        support = torch.as_tensor(position[manifest.support[start:stop]], device=device)
        with _autocast(device, autocast):
            out = method.match_pool(
                state, products, support, labels[start:stop], query, manifest.way
            )
        return _episode_labels(out.logits, manifest, start, stop, nonfinite, name)

    return pooled


@torch.inference_mode()
def match_batch(
    method,
    state,
    position,
    manifest,
    start,
    stop,
    support_labels,
    device,
    autocast,
    buffers: dict | None = None,
    class_names: list[str] | None = None,
):
    """Logits ``[stop-start, Nq, way]`` of episodes ``start..stop`` of ``manifest``; heads
    that gather their episodes themselves get pool positions (``match_indexed``);
    ``buffers`` (kept by the caller) makes the state gathers reuse their memory;
    ``class_names`` (class id -> name) become the episodes' ``class_names=``."""
    s_idx = torch.as_tensor(position[manifest.support[start:stop]], device=device)
    q_idx = torch.as_tensor(position[manifest.query[start:stop]], device=device)
    labels = support_labels[start:stop]
    if method.gathers_episodes and class_names is None:
        with _autocast(device, autocast):
            return method.match_indexed(state, s_idx, labels, q_idx, manifest.way).logits
    if method.support_means:  # the manifest's support is class-major, `shot` per class
        support = state_class_means(state, s_idx.view(len(s_idx), manifest.way, -1))
        labels = torch.arange(manifest.way, device=device).expand(len(s_idx), -1)
    else:
        support = state_gather(state, s_idx, buffers, "support")
    extra = {}
    if class_names is not None:
        extra["class_names"] = episode_class_names(manifest.classes[start:stop], class_names)
    with _autocast(device, autocast):
        out = method.match(
            support, labels, state_gather(state, q_idx, buffers, "query"), manifest.way, **extra
        )
    return out.logits


def summarise_predictions(
    predicted: np.ndarray,
    manifest: Manifest,
    interval: str,
    seconds: float,
    manifest_hash: str | None = None,
) -> EvalResult:
    e, nq = predicted.shape
    true = np.ascontiguousarray(manifest.query_labels)
    nonfinite = predicted == NONFINITE
    predicted = np.where(nonfinite, -1, predicted)  # recorded as no prediction
    correct = (predicted == true) & ~nonfinite
    episode_acc = correct.mean(1) if nq else np.zeros(e)
    mean, half, std = mean_and_halfwidth(episode_acc, interval)
    rows = np.arange(e)[:, None]
    true_class = manifest.classes[rows, true]
    records = {
        "episode": np.repeat(np.arange(e), nq),
        "query": np.tile(np.arange(nq), e),
        "true_label": true.ravel(),
        "true_class": true_class.ravel(),
        "predicted_label": predicted.ravel(),
        "predicted_class": np.where(
            nonfinite, -1, manifest.classes[rows, np.maximum(predicted, 0)]
        ).ravel(),
        "correct": correct.ravel(),
    }
    classes, inverse = np.unique(records["true_class"], return_inverse=True)
    hits = np.bincount(inverse, weights=records["correct"].astype(np.float64))
    totals = np.bincount(inverse)
    per_class = {int(c): float(100 * h / n) for c, h, n in zip(classes, hits, totals)}
    return EvalResult(
        accuracy=100 * mean,
        ci95=100 * half,
        std=100 * std,
        episodes=e,
        episode_accuracy=episode_acc,
        records=records,
        per_class_accuracy=per_class,
        interval=interval,
        manifest_hash=manifest_hash or manifest.hash,
        seconds=seconds,
        extra={"nonfinite_queries": int(nonfinite.sum())},
    )
