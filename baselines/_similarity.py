"""Frame-similarity pieces shared by the OTAM and Bi-MHM heads.

Both heads compare every query frame with every support frame of an episode. The dominant
cost is that inner-product GEMM, done here as one ``bmm`` per batch of episodes on features
already prepared per video (norms or unit vectors computed once in ``encode``).
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["frame_dots", "pairs_last"]


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


def pairs_last(x: Tensor) -> Tensor:
    """``[..., L, M]`` -> contiguous ``[L, M, P]`` with every leading index flattened into P.

    The OTAM dynamic programme walks the ``L x M`` grid; with the pairs last, each step is
    one vectorised operation over contiguous memory.
    """
    rows, cols = x.shape[-2:]
    return x.movedim((-2, -1), (0, 1)).reshape(rows, cols, -1)
