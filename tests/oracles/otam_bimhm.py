"""Literal oracles for OTAM, Bi-MHM and ProtoNet, written loop by loop from HEADS.md.

Everything here is deliberately slow: Python loops over episodes, queries, classes, support
videos, frames and DP cells, on 0-d tensors (so autograd gives reference gradients too).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsarbench import EpisodeBatch


def softmin_literal(values: list[Tensor], lam: float) -> Tensor:
    """``-λ log Σ exp(-x/λ)`` exactly as written (no stabilisation)."""
    return -lam * torch.log(sum(torch.exp(-v / lam) for v in values))


def otam_literal(d: Tensor, lam: float) -> Tensor:
    """One-direction OTAM of one ``[L, M]`` distance matrix, cell by cell (HEADS.md)."""
    rows, cols = d.shape
    zero = d.new_zeros(())
    pad = [[zero] + [d[l, m] for m in range(cols)] + [zero] for l in range(rows)]
    c = [[zero for _ in range(cols + 2)] for _ in range(rows)]
    for m in range(1, cols + 2):
        c[0][m] = pad[0][m] + c[0][m - 1]
    for l in range(1, rows):
        c[l][1] = pad[l][1] + softmin_literal([c[l - 1][0], c[l - 1][1], c[l][0]], lam)
        for m in range(2, cols + 1):
            c[l][m] = pad[l][m] + softmin_literal([c[l - 1][m - 1], c[l][m - 1]], lam)
        last = cols + 1
        c[l][last] = softmin_literal([c[l - 1][last - 1], c[l - 1][last], c[l][last - 1]], lam)
    return c[rows - 1][cols + 1]


def otam_reference_formula(d: Tensor, lam: float) -> Tensor:
    """The reference's vectorised, non-stabilised recursion over ``[N, L, M]`` in ``d.dtype``.

    Mirrors what the TRX-library function computes (float32 there): padded columns, the
    soft-min as ``-λ log(Σ exp(-x/λ))``. Returns ``+inf`` where every exp underflows.
    """
    n, rows, cols = d.shape
    padded = torch.nn.functional.pad(d, (1, 1))
    c = torch.zeros_like(padded)

    def sm(*xs: Tensor) -> Tensor:
        return -lam * torch.log(sum(torch.exp(-x / lam) for x in xs))

    for m in range(1, cols + 2):
        c[:, 0, m] = padded[:, 0, m] + c[:, 0, m - 1]
    for l in range(1, rows):
        c[:, l, 1] = padded[:, l, 1] + sm(c[:, l - 1, 0], c[:, l - 1, 1], c[:, l, 0])
        for m in range(2, cols + 1):
            c[:, l, m] = padded[:, l, m] + sm(c[:, l - 1, m - 1], c[:, l, m - 1])
        c[:, l, -1] = padded[:, l, -1] + sm(c[:, l - 1, -2], c[:, l - 1, -1], c[:, l, -2])
    return c[:, -1, -1]


def otam_cosine_literal(x: Tensor, y: Tensor, eps: float) -> Tensor:
    """``[Tx, D]``, ``[Ty, D]`` -> ``[Tx, Ty]`` of ``1 - <x,y>/(|x||y| + eps)``, frame by frame."""
    rows = []
    for i in range(x.shape[0]):
        row = []
        for j in range(y.shape[0]):
            denom = torch.linalg.vector_norm(x[i]) * torch.linalg.vector_norm(y[j]) + eps
            row.append(1 - torch.dot(x[i], y[j]) / denom)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def unit_cosine_literal(x: Tensor, y: Tensor) -> Tensor:
    """``1 - cos`` with ``F.normalize`` semantics (``x / max(|x|, 1e-12)``), frame by frame."""
    rows = []
    for i in range(x.shape[0]):
        xi = x[i] / torch.clamp(torch.linalg.vector_norm(x[i]), min=1e-12)
        row = []
        for j in range(y.shape[0]):
            yj = y[j] / torch.clamp(torch.linalg.vector_norm(y[j]), min=1e-12)
            row.append(1 - torch.dot(xi, yj))
        rows.append(torch.stack(row))
    return torch.stack(rows)


def bimhm_literal(d: Tensor) -> Tensor:
    """``Σ_ts min_tq d + Σ_tq min_ts d`` for one ``[Tq, Ts]`` matrix, by loops."""
    tq, ts = d.shape
    total = d.new_zeros(())
    for j in range(ts):
        total = total + min((d[i, j] for i in range(tq)), key=lambda v: float(v.detach()))
    for i in range(tq):
        total = total + min((d[i, j] for j in range(ts)), key=lambda v: float(v.detach()))
    return total


def _class_members(batch: EpisodeBatch, b: int, c: int) -> list[int]:
    return [j for j in range(batch.support.shape[1]) if int(batch.support_labels[b, j]) == c]


def _episode_logits(batch: EpisodeBatch, pair_distance) -> Tensor:
    """``-mean_{support j of class c} pair_distance(query, support_j)``, ``[B, Nq, way]``."""
    out = []
    for b in range(batch.batch_size):
        per_query = []
        for i in range(batch.query.shape[1]):
            row = []
            for c in range(batch.way):
                members = _class_members(batch, b, c)
                dists = [pair_distance(batch.query[b, i], batch.support[b, j]) for j in members]
                row.append(-sum(dists) / len(dists))
            per_query.append(torch.stack(row))
        out.append(torch.stack(per_query))
    return torch.stack(out)


def otam_logits_literal(
    batch: EpisodeBatch, lam: float = 0.1, eps: float = 0.01, bidirectional: bool = True
) -> Tensor:
    """OTAM logits ``[B, Nq, way]`` by loops."""

    def pair(q: Tensor, s: Tensor) -> Tensor:
        d = otam_cosine_literal(q, s, eps)
        forward = otam_literal(d, lam)
        return forward + otam_literal(d.T, lam) if bidirectional else forward

    return _episode_logits(batch, pair)


def bimhm_logits_literal(batch: EpisodeBatch, prototype: bool = False) -> Tensor:
    """Bi-MHM logits ``[B, Nq, way]`` by loops (per support video, or class-mean prototypes)."""
    if not prototype:
        return _episode_logits(batch, lambda q, s: bimhm_literal(unit_cosine_literal(q, s)))
    out = []
    for b in range(batch.batch_size):
        protos = [
            sum(batch.support[b, j] for j in members) / len(members)
            for members in (_class_members(batch, b, c) for c in range(batch.way))
        ]
        out.append(
            torch.stack(
                [
                    torch.stack([-bimhm_literal(unit_cosine_literal(q, p)) for p in protos])
                    for q in batch.query[b]
                ]
            )
        )
    return torch.stack(out)


def protonet_logits_literal(batch: EpisodeBatch, metric: str, temperature: float) -> Tensor:
    """ProtoNet logits ``[B, Nq, way]``: temporal mean, class mean, cosine or -squared L2."""
    out = []
    for b in range(batch.batch_size):
        protos = []
        for c in range(batch.way):
            members = _class_members(batch, b, c)
            protos.append(sum(batch.support[b, j].mean(0) for j in members) / len(members))
        rows = []
        for i in range(batch.query.shape[1]):
            q = batch.query[b, i].mean(0)
            row = []
            for p in protos:
                if metric == "cosine":
                    cos = torch.dot(q, p) / (
                        torch.clamp(torch.linalg.vector_norm(q), min=1e-12)
                        * torch.clamp(torch.linalg.vector_norm(p), min=1e-12)
                    )
                    row.append(temperature * cos)
                else:
                    row.append(-sum((q[k] - p[k]) ** 2 for k in range(q.shape[0])))
            rows.append(torch.stack(row))
        out.append(torch.stack(rows))
    return torch.stack(out)


def random_episodes(
    *,
    batch: int = 2,
    way: int = 3,
    shot: int = 2,
    queries: int = 1,
    frames: int = 8,
    dim: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> EpisodeBatch:
    """Episodes of non-negative uniform features with a shuffled (not class-major) support."""
    g = torch.Generator().manual_seed(seed)
    ns, nq = way * shot, way * queries
    support = torch.rand(batch, ns, frames, dim, generator=g, dtype=dtype)
    query = torch.rand(batch, nq, frames, dim, generator=g, dtype=dtype)
    labels = torch.arange(way).repeat_interleave(shot)
    s_lab = torch.stack([labels[torch.randperm(ns, generator=g)] for _ in range(batch)])
    q_lab = torch.arange(way).repeat_interleave(queries).expand(batch, nq).clone()
    return EpisodeBatch(support, s_lab, query, q_lab, way=way)


def with_grad(batch: EpisodeBatch) -> EpisodeBatch:
    """A copy of ``batch`` whose support and query features require gradients."""
    return EpisodeBatch(
        batch.support.clone().requires_grad_(),
        batch.support_labels,
        batch.query.clone().requires_grad_(),
        batch.query_labels,
        way=batch.way,
    )


def logits_and_grads(batch: EpisodeBatch, logits_fn) -> tuple[Tensor, Tensor, Tensor]:
    """Logits of ``logits_fn(batch)`` and the gradients of a fixed random weighting of them
    w.r.t. support and query features."""
    b = with_grad(batch)
    logits = logits_fn(b)
    weights = torch.linspace(-1.0, 2.0, logits.numel(), dtype=logits.dtype).view_as(logits)
    (logits * weights).sum().backward()
    return logits.detach(), b.support.grad, b.query.grad
