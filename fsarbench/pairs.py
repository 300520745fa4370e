"""Pair tables: score each (query, support) video pair of a pool once, reuse it per episode.

For a pairwise head (:meth:`FewShotMethod.pairwise`), an episode's logits are the mean over
each class's support videos of a score that depends on the two videos only. A test pool of
``U`` videos has ``U²`` ordered pairs, while ``E`` episodes visit ``E·Nq·Ns`` (query,
support) slots: 10,000 5-way 1-shot episodes of a 280-video pool visit 250,000 slots but only
78,400 distinct pairs. When ``U² <= E·Nq·Ns`` the evaluator scores the whole pool once and
every episode becomes a lookup; otherwise it matches episode by episode. The choice depends
on the manifest and the pool only, so a rerun or a resumed run takes the same path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fsarbench.autocast import float32_region, upcast
from fsarbench.episodes import Manifest
from fsarbench.progress import progress_bar
from fsarbench.state import State, state_leaves, state_map

__all__ = [
    "class_mean",
    "one_hot_weights",
    "pair_table",
    "table_logits",
    "use_pair_table",
    "use_pool_products",
]

#: Largest pool products (bytes) the evaluator builds (:func:`use_pool_products`). A fixed
#: number, not the machine's memory, so the same pool always takes the same path.
POOL_PRODUCTS_BYTES = 1 << 30

# Pairs scored per ``pair_logits`` call when building a table (bounds the head's temporaries).
PAIRS_PER_CALL = 1024


def one_hot_weights(labels: Tensor, way: int, dtype: torch.dtype) -> Tensor:
    """``[B, Ns]`` labels -> ``[B, way, Ns]`` weights averaging each class's support videos."""
    onehot = F.one_hot(labels, way).to(dtype).transpose(1, 2)
    return onehot / onehot.sum(-1, keepdim=True).clamp_min(1)


def class_mean(values: Tensor, labels: Tensor, way: int) -> Tensor:
    """Mean over each class's support entries.

    Args:
        values: ``[B, ..., Ns]`` per-support values (support on the last axis).
        labels: ``[B, Ns]`` episode labels.

    Returns:
        ``[B, ..., way]``, float32 for half-precision ``values`` (and never computed by an
        autocast product: bf16 class means tie).
    """
    values = upcast(values)
    with float32_region(values.device):
        w = one_hot_weights(labels, way, values.dtype)  # [B, way, Ns]
        lead = values.shape[1:-1]
        flat = values.reshape(values.shape[0], -1, values.shape[-1])  # [B, M, Ns]
        out = torch.bmm(flat, w.transpose(1, 2))  # [B, M, way]
    return out.reshape(values.shape[0], *lead, way)


def use_pair_table(method, manifest: Manifest, n_videos: int) -> bool:
    """Score the pool's ``n_videos²`` pairs once instead of ``E·Nq·Ns`` episode slots?"""
    e, nq = manifest.query.shape
    ns = manifest.support.shape[1]
    return bool(method.pairwise(manifest.spec.shot)) and n_videos**2 <= e * nq * ns


def use_pool_products(method, manifest: Manifest, n_videos: int) -> bool:
    """Build the head's pool products (:meth:`FewShotMethod.pool_products`) for this pool?

    Yes when the head has them at this shot, they fit :data:`POOL_PRODUCTS_BYTES`, and the
    episodes visit at least as many (query, support) slots as the pool has ordered pairs.
    """
    size = method.pool_products_bytes(n_videos, manifest.spec.shot)
    if size is None or size > POOL_PRODUCTS_BYTES:
        return False
    e, nq = manifest.query.shape
    return n_videos**2 <= e * nq * manifest.support.shape[1]


#: Pools from this many videos up show a progress bar while their pair table is built (a
#: real test pool's took minutes in silence; ``synth``'s take well under a second).
PAIR_TABLE_PROGRESS_MIN = 1000


@torch.inference_mode()
def pair_table(
    method, state: State, *, pairs_per_call: int = PAIRS_PER_CALL, progress: bool = False
) -> Tensor:
    """``method.pair_logits`` of every ordered pair of the encoded pool; with ``progress``,
    a bar over its query videos for pools of :data:`PAIR_TABLE_PROGRESS_MIN` videos or more.

    Args:
        state: encoded videos, tensors leading with ``[U]``.

    Returns:
        ``[U, U]`` float32 (row: query video, column: support video).
    """
    n = _leading(state)
    rows = max(1, pairs_per_call // max(n, 1))
    support = state_map(lambda t: t.unsqueeze(0), state)
    parts = []
    shown = progress and n >= PAIR_TABLE_PROGRESS_MIN
    bar = progress_bar(total=n, desc="pair table", unit="video", disable=not shown)
    try:
        for lo in range(0, n, rows):
            query = state_map(lambda t, lo=lo: t[lo : lo + rows].unsqueeze(0), state)
            parts.append(method.pair_logits(query, support)[0].float())
            bar.update(min(rows, n - lo))
    finally:
        bar.close()
    return torch.cat(parts)


def table_logits(table: Tensor, query: Tensor, support: Tensor, labels: Tensor, way: int) -> Tensor:
    """Episode logits from a pair table.

    Args:
        table: ``[U, U]`` pair scores.
        query: ``[B, Nq]`` pool positions of the queries.
        support: ``[B, Ns]`` pool positions of the support videos.
        labels: ``[B, Ns]`` support episode labels.

    Returns:
        ``[B, Nq, way]``: the mean pair score over each class's support videos.
    """
    scores = table[query.unsqueeze(-1), support.unsqueeze(1)]  # [B, Nq, Ns]
    return class_mean(scores, labels, way)


def _leading(state: State) -> int:
    return int(state_leaves(state)[0].shape[0])
