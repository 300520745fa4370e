"""Frame-similarity pieces shared by the OTAM and Bi-MHM heads.

Both heads compare every query frame with every support frame of an episode. The dominant
cost is that inner-product GEMM, done here as one ``bmm`` per batch of episodes on features
already prepared per video (norms or unit vectors computed once in ``encode``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DOT_CHUNK", "frame_dots", "indexed_frame_dots", "pairs_last"]

#: Episodes per gather-and-multiply step of :func:`indexed_frame_dots` on the CPU: their
#: frames (8 x 30 videos x 8 frames x 2048 floats at 5-shot, about 16 MB) are multiplied while
#: the copy is still in cache, instead of gathering a whole batch to memory first.
DOT_CHUNK = 8


def frame_dots(query: Tensor, support: Tensor) -> Tensor:
    """Inner products of every query frame with every support frame, per episode.

    Args:
        query: ``[B, Nq, Tq, D]``.
        support: ``[B, Ns, Ts, D]``.

    Returns:
        ``[B, Nq, Tq, Ns, Ts]``: one ``[Nq*Tq, D] x [D, Ns*Ts]`` product per episode.
    """
    b, nq, tq, dim = query.shape
    ns, ts = support.shape[1:3]
    flat_q = query.reshape(b, nq * tq, dim)
    flat_s = support.reshape(b, ns * ts, dim)
    return flat_q.bmm(flat_s.transpose(1, 2)).view(b, nq, tq, ns, ts)


def indexed_frame_dots(
    frames: Tensor, query_index: Tensor, support_index: Tensor, chunk: int = DOT_CHUNK
) -> Tensor:
    """:func:`frame_dots` of ``frames[query_index]`` and ``frames[support_index]``, gathered
    and multiplied ``chunk`` episodes at a time into one output (on the CPU; elsewhere the
    whole batch at once). Each episode's product is the same ``bmm`` on the same operands,
    so the values are bit-identical to gathering first.

    Args:
        frames: ``[U, T, D]`` the pool's frames.
        query_index: ``[B, Nq]`` pool positions; support_index: ``[B, Ns]``.

    Returns:
        ``[B, Nq, T, Ns, T]``.
    """
    b, nq = query_index.shape
    ns = support_index.shape[1]
    t, dim = frames.shape[1:]
    if frames.device.type != "cpu":
        chunk = b
    out = torch.empty(b, nq * t, ns * t, dtype=frames.dtype, device=frames.device)
    q_buf = frames.new_empty(min(chunk, b) * nq, t, dim)
    s_buf = frames.new_empty(min(chunk, b) * ns, t, dim)
    for start in range(0, b, chunk):
        n = min(chunk, b - start)
        q = torch.index_select(
            frames, 0, query_index[start : start + n].reshape(-1), out=q_buf[: n * nq]
        )
        s = torch.index_select(
            frames, 0, support_index[start : start + n].reshape(-1), out=s_buf[: n * ns]
        )
        torch.bmm(
            q.view(n, nq * t, dim),
            s.view(n, ns * t, dim).transpose(1, 2),
            out=out[start : start + n],
        )
    return out.view(b, nq, t, ns, t)


def pairs_last(x: Tensor) -> Tensor:
    """``[..., L, M]`` -> contiguous ``[L, M, P]`` with every leading index flattened into P.

    The OTAM dynamic programme walks the ``L x M`` grid; with the pairs last, each step is
    one vectorised operation over contiguous memory.
    """
    rows, cols = x.shape[-2:]
    return x.movedim((-2, -1), (0, 1)).reshape(rows, cols, -1)
