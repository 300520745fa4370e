"""Slow, literal TRX and HyRSM heads written from HEADS.md, for one episode at a time.

Modules carry the reference implementations' names (``transformers.{i}.k_linear``,
``temporal_atte_before.fn.to_qkv``...) so that an oracle's ``state_dict()`` is an "official"
state dict: tests load it into the fast heads and compare logits and gradients. Loops follow
the text: per class, per query, per tuple / frame. Run them in float64.
"""

from __future__ import annotations

import math
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OracleTRX", "OracleHyRSM"]


class _Table(nn.Module):
    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("pe", table.unsqueeze(0))


# ----------------------------------------------------------------------------------- TRX
def trx_table(max_len: int, dim: int, scale: float) -> Tensor:
    """``pe[pos, 2i] = sin(pos·div_i)``, ``pe[pos, 2i+1] = cos(pos·div_i)``,
    ``div_i = exp(-2i·ln(10000)/D)``, times ``scale``."""
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    for pos in range(max_len):
        for even in range(0, dim, 2):
            div = math.exp(-even * math.log(10000.0) / dim)
            table[pos, even] = math.sin(pos * div) * scale
            table[pos, even + 1] = math.cos(pos * div) * scale
    return table


class OracleTemporalCrossTransformer(nn.Module):
    """One cardinality, as HEADS.md's TRX section reads."""

    def __init__(
        self,
        dim: int,
        seq_len: int,
        omega: int,
        out_dim: int,
        pe_scale: float = 0.1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.pe = _Table(trx_table(int(1.5 * seq_len), dim, pe_scale))
        self.dropout = nn.Dropout(dropout)
        self.k_linear = nn.Linear(omega * dim, out_dim)
        self.v_linear = nn.Linear(omega * dim, out_dim)
        self.norm_k = nn.LayerNorm(out_dim)
        self.norm_v = nn.LayerNorm(out_dim)  # never applied, as in the reference
        self.tuples = list(combinations(range(seq_len), omega))

    def _tuples(self, videos: Tensor) -> Tensor:
        """``[N, T, D]`` -> concatenated tuple features ``[N, P, ω·D]``."""
        x = self.dropout(videos + self.pe.pe[0, : videos.shape[1]])
        return torch.stack([torch.cat([x[:, t] for t in tup], -1) for tup in self.tuples], 1)

    def forward(self, support: Tensor, labels: Tensor, query: Tensor, way: int) -> Tensor:
        """Logits ``[Nq, way]`` = -(squared distance summed over tuples and dims) / tuples."""
        s_tup, q_tup = self._tuples(support), self._tuples(query)
        s_k, q_k = self.norm_k(self.k_linear(s_tup)), self.norm_k(self.k_linear(q_tup))
        s_v, q_v = self.v_linear(s_tup), self.v_linear(q_tup)
        n_tuples = len(self.tuples)
        rows = []
        for qi in range(query.shape[0]):
            row = []
            for c in range(way):
                members = [i for i in range(support.shape[0]) if int(labels[i]) == c]
                class_k = torch.cat([s_k[i] for i in members])  # [shots·P, O]
                class_v = torch.cat([s_v[i] for i in members])
                total = query.new_zeros(())
                for p in range(n_tuples):
                    scores = class_k @ q_k[qi, p] / math.sqrt(self.out_dim)
                    attn = torch.softmax(scores, 0)  # jointly over shots x tuples
                    prototype = attn @ class_v
                    total = total + ((q_v[qi, p] - prototype) ** 2).sum()
                row.append(-total / n_tuples)
            rows.append(torch.stack(row))
        return torch.stack(rows)


class OracleTRX(nn.Module):
    """``CNN_TRX`` without backbone: mean over cardinalities."""

    def __init__(self, dim: int, seq_len: int, cardinalities=(2, 3), out_dim: int = 1152) -> None:
        super().__init__()
        self.transformers = nn.ModuleList(
            OracleTemporalCrossTransformer(dim, seq_len, w, out_dim) for w in cardinalities
        )

    def forward(self, support: Tensor, labels: Tensor, query: Tensor, way: int) -> Tensor:
        return torch.stack([t(support, labels, query, way) for t in self.transformers]).mean(0)


# --------------------------------------------------------------------------------- HyRSM
def hyrsm_table(max_len: int, dim: int) -> Tensor:
    """``pe[pos, i] = sin(pos / 10000^(2i/D))``, ``pe[pos, i+1] = cos(pos / 10000^(2(i+1)/D))``
    for even ``i``."""
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    for pos in range(max_len):
        for i in range(0, dim, 2):
            table[pos, i] = math.sin(pos / (10000 ** ((2 * i) / dim)))
            table[pos, i + 1] = math.cos(pos / (10000 ** ((2 * (i + 1)) / dim)))
    return table


class OraclePositional(nn.Module):
    def __init__(self, dim: int, a: float, b: float, dropout: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("pe", hyrsm_table(20, dim).unsqueeze(0))
        self.dim, self.a, self.b = dim, a, b
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x * math.sqrt(self.dim / self.a) + self.b * self.pe[:, : x.shape[1]]
        return self.dropout(x)


class OracleAttention(nn.Module):
    """Self-attention over one video's frames, head by head."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:  # [T, D]
        q, k, v = self.to_qkv(x).chunk(3, -1)
        dh = x.shape[-1] // self.heads
        outs = []
        for h in range(self.heads):
            sl = slice(h * dh, (h + 1) * dh)
            attn = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(dh), -1)
            outs.append(attn @ v[:, sl])
        return self.to_out(torch.cat(outs, -1))


class OraclePreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fn(self.norm(x))


class OracleSetAttention(nn.Module):
    """Post-norm multi-head attention over a set of tokens ``[L, D]``."""

    def __init__(
        self, dim: int, heads: int, attn_dropout: float = 0.1, dropout: float = 0.05
    ) -> None:
        super().__init__()
        self.heads = heads
        self.w_qs = nn.Linear(dim, dim, bias=False)
        self.w_ks = nn.Linear(dim, dim, bias=False)
        self.w_vs = nn.Linear(dim, dim, bias=False)
        self.layer_norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.w_qs(x), self.w_ks(x), self.w_vs(x)
        dk = x.shape[-1] // self.heads
        outs = []
        for h in range(self.heads):
            sl = slice(h * dk, (h + 1) * dk)
            attn = self.attn_dropout(torch.softmax(q[:, sl] @ k[:, sl].T / dk**0.5, -1))
            outs.append(attn @ v[:, sl])
        return self.layer_norm(self.dropout(self.fc(torch.cat(outs, -1))) + x)


class OracleHyRSM(nn.Module):
    """``CNN_HyRSM_{1,5}shot`` without backbone, one query at a time."""

    def __init__(
        self, dim: int, num_classes: int, heads: int = 8, a: float = 10.0, b: float = 1.0
    ) -> None:
        super().__init__()
        self.pe = OraclePositional(dim, a, b)
        self.temporal_atte_before = OraclePreNorm(dim, OracleAttention(dim, heads, 0.2))
        self.temporal_atte = OracleSetAttention(dim, heads)
        self.layer2 = nn.Sequential(nn.Conv1d(2 * dim, dim, kernel_size=1))
        self.classification_layer = nn.Linear(dim, num_classes)

    def intra(self, videos: Tensor) -> Tensor:
        """``[N, T, D]`` -> step-2 features, video by video."""
        x = self.pe(videos)
        return torch.stack([F.relu(self.temporal_atte_before(x[i])) for i in range(len(x))])

    def fuse(self, frames: Tensor, token: Tensor) -> Tensor:
        """Conv1d(2D -> D, 1) over ``[frame; token]`` for every frame: ``[T, D]``."""
        joined = torch.cat([frames, token.expand_as(frames)], -1)  # [T, 2D]
        return self.layer2(joined.T.unsqueeze(0))[0].T

    def forward(self, support: Tensor, labels: Tensor, query: Tensor, way: int):
        """Returns logits ``[Nq, way]`` and frame logits ``[Ns + Nq, T, classes]``."""
        hs, hq = self.intra(support), self.intra(query)
        protos = [hs[labels == c].mean(0) for c in range(way)]  # way x [T, D]
        rows = []
        for qi in range(len(hq)):
            tokens = torch.stack([p.mean(0) for p in protos] + [hq[qi].mean(0)])
            adapted = F.relu(self.temporal_atte(tokens))  # [way + 1, D]
            fq = F.normalize(self.fuse(hq[qi], adapted[way]), dim=-1)
            row = []
            for c in range(way):
                fp = F.normalize(self.fuse(protos[c], adapted[c]), dim=-1)
                d = 1 - fp @ fq.T  # [Ts, Tq]
                dist = d.min(1).values.sum() + d.min(0).values.sum()
                row.append(-dist)
            rows.append(torch.stack(row))
        frame_logits = self.classification_layer(torch.cat([hs, hq]))
        return torch.stack(rows), frame_logits

    @staticmethod
    def aux_loss(frame_logits: Tensor, classes: Tensor, weight: float) -> Tensor:
        """``weight · CE`` of every frame against its video's global class."""
        t = frame_logits.shape[1]
        target = classes.repeat_interleave(t)
        return weight * F.cross_entropy(frame_logits.reshape(-1, frame_logits.shape[-1]), target)


# ------------------------------------------------------------------------------- helpers
def random_episodes(
    batch: int,
    way: int,
    shot: int,
    queries: int,
    seq_len: int,
    dim: int,
    seed: int = 0,
    counts: tuple[int, ...] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Non-negative float64 features with shuffled support labels.

    Returns ``support [B, Ns, T, D]``, ``labels [B, Ns]`` and ``query [B, way·queries, T, D]``;
    ``counts`` gives per-class support sizes (default ``shot`` each)."""
    g = torch.Generator().manual_seed(seed)
    counts = counts or (shot,) * way
    base = torch.repeat_interleave(torch.arange(way), torch.tensor(counts))
    labels = torch.stack([base[torch.randperm(len(base), generator=g)] for _ in range(batch)])
    support = torch.rand(batch, len(base), seq_len, dim, generator=g, dtype=torch.float64)
    query = torch.rand(batch, way * queries, seq_len, dim, generator=g, dtype=torch.float64)
    return support, labels, query


def assert_rel_close(
    actual: Tensor | None,
    expected: Tensor | None,
    what: str,
    rtol: float = 1e-9,
    floor: float = 1e-300,
) -> None:
    """``max|a - e| <= rtol · max(max|e|, floor)`` (both ``None`` passes: no gradient on
    either side). ``floor`` is for tensors that are zero analytically (rounding noise)."""
    if expected is None or actual is None:
        assert actual is None and expected is None, f"{what}: gradient on one side only"
        return
    assert actual.shape == expected.shape, (
        f"{what}: {tuple(actual.shape)} vs {tuple(expected.shape)}"
    )
    scale = expected.abs().max().clamp_min(floor)
    err = ((actual - expected).abs().max() / scale).item()
    assert err <= rtol, f"{what}: relative difference {err:.3e} > {rtol:.1e}"


def grad_scale(grads: dict[str, Tensor | None]) -> float:
    """Largest gradient entry over all parameters, for :func:`assert_rel_close`'s floor."""
    return max(float(g.abs().max()) for g in grads.values() if g is not None)
