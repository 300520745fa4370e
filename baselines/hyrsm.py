"""HyRSM: hybrid relation guided set matching (Wang et al., CVPR'22).

Computes what ``CNN_HyRSM_1shot`` / ``CNN_HyRSM_5shot`` of
github.com/alibaba-mmai-research/HyRSM (``models/base/few_shot.py``) compute, with class
prototypes (a 1-shot prototype is the video itself), re-organised for speed:

* :meth:`HyRSM.encode` (per video): positional encoder, pre-norm intra-relation attention +
  ReLU, the temporal-mean token, the token's q/k projections and its value already passed
  through each head's block of the output ``fc``, and the frame half ``W_f·frame + b`` of the
  fusion ``Conv1d`` (``W·[frame; token] = W_f·frame + W_t·token``). All are linear in the video
  after step 2, so class prototypes are plain class means of them.
* :meth:`HyRSM.match` (per episode, all queries at once): the per-query set attention over
  ``way`` prototype tokens + the query token, ``u = W_t·token`` for the adapted tokens, and
  Bi-MHM on ``frame + u`` with the cosine expanded into frame-level products.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsarbench import FewShotMethod, MethodOutput
from fsarbench.autocast import float32_region, upcast
from fsarbench_baselines._official import load_official_state_dict
from fsarbench_baselines.common import one_hot_weights

__all__ = ["HyRSM", "hyrsm_positional_table"]

OFFICIAL_IGNORE = (r"backbone\.",)
_PE_LEN = 20  # the reference's table length (``max_seq_len``)
_EPS = 1e-12  # F.normalize
# Episodes matched at once are chosen so a chunk's per-query token tensors ``[b, Q, way+1, D]``
# stay near this many elements (4 MiB in float32): a dozen passes over them then stay in cache.
_CHUNK_ELEMENTS = 1 << 20


def hyrsm_positional_table(max_len: int, dim: int) -> Tensor:
    """The reference's (non-standard) table ``[max_len, dim]``: for even ``i``,
    ``pe[pos, i] = sin(pos / 10000^(2i/D))`` and ``pe[pos, i+1] = cos(pos / 10000^(2(i+1)/D))``."""
    if dim % 2:
        raise ValueError(f"HyRSM's positional table needs an even feature_dim, got {dim}")
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    even = torch.arange(0, dim, 2, dtype=torch.float64)
    table = torch.empty(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos / 10000 ** (2 * even / dim))
    table[:, 1::2] = torch.cos(pos / 10000 ** (2 * (even + 1) / dim))
    return table.float()


class _Positional(nn.Module):
    """``x·sqrt(D/A) + B·pe`` then dropout (buffer ``pe``: checkpoint key ``pe.pe``)."""

    def __init__(self, dim: int, a: float, b: float, dropout: float) -> None:
        super().__init__()
        self.register_buffer("pe", hyrsm_positional_table(_PE_LEN, dim).unsqueeze(0))
        self.scale, self.b = math.sqrt(dim / a), b
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # [N, T, D]
        return self.dropout(x * self.scale + self.b * self.pe[:, : x.shape[1]])


class _FrameAttention(nn.Module):
    """Multi-head self-attention over each video's frames (reference ``Attention``)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:  # [N, T, D] -> [N, T, D]
        n, t, d = x.shape
        qkv = self.to_qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = qkv[0] @ qkv[1].transpose(-1, -2) / math.sqrt(d // self.heads)
        out = torch.softmax(scores, -1) @ qkv[2]  # [N, H, T, dh]
        return self.to_out(out.transpose(1, 2).reshape(n, t, d))


class _PreNorm(nn.Module):
    """``x + fn(LayerNorm(x))`` (reference ``PreNormattention``)."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fn(self.norm(x))


class _SetAttention(nn.Module):
    """Parameters of the reference ``MultiHeadAttention`` (post-norm, used on token sets);
    the computation is split between :meth:`HyRSM.encode` and :meth:`HyRSM.match`."""

    def __init__(self, dim: int, heads: int, attn_dropout: float, dropout: float) -> None:
        super().__init__()
        self.heads, self.d_k = heads, dim // heads
        self.w_qs = nn.Linear(dim, dim, bias=False)
        self.w_ks = nn.Linear(dim, dim, bias=False)
        self.w_vs = nn.Linear(dim, dim, bias=False)
        for lin in (self.w_qs, self.w_ks, self.w_vs):
            nn.init.normal_(lin.weight, mean=0.0, std=math.sqrt(2.0 / (dim + self.d_k)))
        self.layer_norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.fc.weight)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.dropout = nn.Dropout(dropout)

    def token_state(self, token: Tensor) -> dict[str, Tensor]:
        """``token [N, D]`` -> ``q, k [N, H, d_k]`` and ``u [N, H, D]``: the token's value of
        head ``h`` through ``fc``'s block of head ``h`` (``fc`` is linear)."""
        n, d = token.shape
        q, k, v = (
            (token @ torch.cat([self.w_qs.weight, self.w_ks.weight, self.w_vs.weight]).t())
            .view(n, 3, self.heads, self.d_k)
            .unbind(1)
        )
        fc = self.fc.weight.view(d, self.heads, self.d_k)
        return {"q": q, "k": k, "u": torch.einsum("nhc,dhc->nhd", v, fc), "token": token}

    def forward(self, protos: dict[str, Tensor], query: dict[str, Tensor]) -> Tensor:
        """Attend, for every query, over ``way`` prototype tokens + its own token.

        Args:
            protos: token states of the class prototypes, leading ``[B, way]``.
            query: token states of the queries, leading ``[B, Q]``.

        Returns:
            ``[B, Q, way + 1, D]`` adapted tokens (before the ReLU), query token last.
        """
        b, way = protos["q"].shape[:2]
        nq = query["q"].shape[1]
        # q·k of large tokens overflow fp16: the (small) score products run in float32
        with float32_region(query["q"].device):
            qk = ("q", "k")
            scores = self._scores(
                {k: upcast(protos[k]) for k in qk}, {k: upcast(query[k]) for k in qk}
            )
            scores = scores / self.d_k**0.5  # [B, Q, H, way + 1, way + 1]
        attn = torch.softmax(scores, -1).to(protos["u"].dtype)  # back to the values' dtype
        attn = self.attn_dropout(attn)  # [B, Q, H, way + 1, way + 1]
        rows = attn.permute(0, 1, 3, 2, 4)  # [B, Q, i, H, j]
        # columns ordered (j, h) so that protos["u"] [B, way, H, D] is used without a copy
        shared = rows[..., :way].transpose(-1, -2).reshape(b, nq * (way + 1), -1)
        out = shared @ protos["u"].reshape(b, -1, protos["u"].shape[-1])  # [B, Q·(way+1), D]
        # contiguous: a bmm operand with no unit stride takes a slow path (~6x on CPU)
        own = rows[..., way].reshape(b * nq, way + 1, -1).contiguous() @ query["u"].reshape(
            b * nq, self.heads, -1
        )
        out = out.view_as(own.view(b, nq, way + 1, -1)) + own.view(b, nq, way + 1, -1)
        residual = torch.cat(
            [protos["token"].unsqueeze(1).expand(b, nq, -1, -1), query["token"].unsqueeze(2)], 2
        )
        return self.layer_norm(self.dropout(out + self.fc.bias) + residual)

    @staticmethod
    def _scores(protos: dict[str, Tensor], query: dict[str, Tensor]) -> Tensor:
        """Per-query token products ``[B, Q, H, way + 1, way + 1]`` (query token last), built
        from prototype-prototype (per episode), prototype-query and query-query blocks."""
        b, way, heads = protos["q"].shape[:3]
        nq = query["q"].shape[1]
        pp = torch.einsum("bihc,bjhc->bhij", protos["q"], protos["k"])
        pq = torch.einsum("bihc,bqhc->bqhi", protos["q"], query["k"]).unsqueeze(-1)
        qp = torch.einsum("bqhc,bjhc->bqhj", query["q"], protos["k"])
        qq = (query["q"] * query["k"]).sum(-1, keepdim=True)
        top = torch.cat([pp.unsqueeze(1).expand(b, nq, heads, way, way), pq], -1)
        return torch.cat([top, torch.cat([qp, qq], -1).unsqueeze(-2)], -2)


def _sq_norm(x: Tensor) -> Tensor:
    """``‖x‖²`` over the last dim in one reduction pass (no ``x * x`` temporary)."""
    return torch.linalg.vector_norm(x, dim=-1).square()


def _bimhm_fused(qf: Tensor, pf: Tensor, uq: Tensor, up: Tensor) -> Tensor:
    """Bi-MHM between queries ``qf + uq`` and their prototypes ``pf + up`` (frames + a token
    offset), without forming the sums.

    Args:
        qf: ``[B, Q, T, D]`` query frames; pf: ``[B, C, T, D]`` prototype frames.
        uq: ``[B, Q, D]`` query offsets; up: ``[B, Q, C, D]`` per-query prototype offsets.

    Returns:
        ``[B, Q, C]`` distance ``Σ_tp min_tq d + Σ_tq min_tp d``, ``d = 1 - cos``.
    """
    b, nq, t, d = qf.shape
    c = pf.shape[1]
    pflat = pf.reshape(b, c * t, d)
    dot = (qf.reshape(b, nq * t, d) @ pflat.transpose(1, 2)).view(b, nq, t, c, t)
    q_up = qf @ up.transpose(-1, -2)  # [B, Q, T, C]
    uq_p = (uq @ pflat.transpose(1, 2)).view(b, nq, 1, c, t)
    uq_up = (up @ uq.unsqueeze(-1)).view(b, nq, 1, c, 1)
    dot = dot + q_up.unsqueeze(-1) + uq_p + uq_up
    q_sq = _sq_norm(qf) + 2 * (qf @ uq.unsqueeze(-1)).squeeze(-1) + _sq_norm(uq).unsqueeze(-1)
    # [B·C, Q, D] with D contiguous (a cheap copy), used transposed: no transposing copy of D
    up_c = up.transpose(1, 2).reshape(b * c, nq, d)
    p_up = (pf.reshape(b * c, t, d) @ up_c.transpose(1, 2)).view(b, c, t, nq)
    p_sq = _sq_norm(pf).unsqueeze(1) + 2 * p_up.permute(0, 3, 1, 2) + _sq_norm(up).unsqueeze(-1)
    q_norm = q_sq.clamp_min(_EPS**2).sqrt().view(b, nq, t, 1, 1)
    p_norm = p_sq.clamp_min(_EPS**2).sqrt().view(b, nq, 1, c, t)
    dist = 1 - dot / (q_norm * p_norm)  # [B, Q, Tq, C, Tp]
    return dist.min(2).values.sum(-1) + dist.min(-1).values.sum(2)


class HyRSM(FewShotMethod):
    """HyRSM (Wang et al., "Hybrid Relation Guided Set Matching for Few-shot Action
    Recognition", CVPR 2022), following ``CNN_HyRSM_1shot``/``_5shot`` of
    github.com/alibaba-mmai-research/HyRSM with class prototypes: intra-relation per video,
    per-query inter-relation set attention, fusion, and Bi-MHM (logits = ``-`` distance)."""

    support_means = True  # prototypes are class means of the per-video states
    # The reference configs (HEADS.md): Kinetics uses POSITION_A/B = 2048/0.01, and the
    # auxiliary loss weight USE_CLASSIFICATION_VALUE differs per dataset.
    dataset_presets = {
        "kinetics100": {"position_a": 2048.0, "position_b": 0.01, "lambda_cls": 0.4},
        "kinetics100-hyrsm": {"position_a": 2048.0, "position_b": 0.01, "lambda_cls": 0.4},
        "ssv2-full": {"lambda_cls": 0.6},
        "ssv2-small": {"lambda_cls": 0.15},
        "hmdb51": {"lambda_cls": 0.15},
        "ucf101": {"lambda_cls": 0.15},
    }

    @dataclass
    class Config:
        """Hyper-parameters (reference defaults).

        Attributes:
            position_a, position_b: positional encoder ``x·sqrt(D/A) + B·pe``
                (``TRAIN.POSITION_A/B``; 10 and 1 by default, 2048 and 0.01 for Kinetics).
            heads: attention heads of both relation modules (``TRAIN.HEAD``).
            pe_dropout: dropout after the positional encoder.
            intra_dropout: output dropout of the intra-relation attention.
            inter_attn_dropout: attention dropout of the inter-relation attention.
            inter_dropout: output dropout of the inter-relation attention (after ``fc``).
            lambda_cls: weight of the auxiliary frame classification loss
                (``TRAIN.USE_CLASSIFICATION_VALUE``: 0.6 SSv2-Full, 0.4 Kinetics,
                0.15 SSv2-Small/HMDB51/UCF101). Needs ``num_train_classes``.
        """

        position_a: float = 10.0
        position_b: float = 1.0
        heads: int = 8
        pe_dropout: float = 0.1
        intra_dropout: float = 0.2
        inter_attn_dropout: float = 0.1
        inter_dropout: float = 0.05
        lambda_cls: float = 0.15

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        cfg, dim = self.config, self.feature_dim
        if cfg.heads < 2 or dim % cfg.heads:
            raise ValueError(f"heads must be >= 2 and divide feature_dim {dim}, got {cfg.heads}")
        if self.seq_len > _PE_LEN:
            raise ValueError(f"HyRSM's positional table has {_PE_LEN} rows; seq_len={self.seq_len}")
        self.pe = _Positional(dim, cfg.position_a, cfg.position_b, cfg.pe_dropout)
        self.temporal_atte_before = _PreNorm(
            dim, _FrameAttention(dim, cfg.heads, cfg.intra_dropout)
        )
        self.temporal_atte = _SetAttention(
            dim, cfg.heads, cfg.inter_attn_dropout, cfg.inter_dropout
        )
        self.layer2 = nn.Sequential(nn.Conv1d(2 * dim, dim, kernel_size=1))
        self.classification_layer = (
            nn.Linear(dim, self.num_train_classes) if self.num_train_classes is not None else None
        )

    def _fusion_weights(self) -> tuple[Tensor, Tensor]:
        """Frame half ``W_f`` and token half ``W_t`` of the fusion Conv1d, each ``[D, D]``."""
        w = self.layer2[0].weight[..., 0]
        return w[:, : self.feature_dim], w[:, self.feature_dim :]

    def encode(self, features: Tensor) -> dict[str, Tensor]:
        """``[N, T, D]`` -> ``frames [N, T, D]`` (``W_f·h + b``), the token state
        (``token [N, D]``, ``q``/``k [N, H, d_k]``, ``u [N, H, D]``) and, when training with a
        classifier, ``cls [N, T, classes]`` frame logits."""
        h = F.relu(self.temporal_atte_before(self.pe(features)))  # [N, T, D]
        w_f, _ = self._fusion_weights()
        state = {"frames": h @ w_f.t() + self.layer2[0].bias}
        state.update(self.temporal_atte.token_state(h.mean(1)))
        if self.training and self.classification_layer is not None:
            state["cls"] = self.classification_layer(h)
        return state

    def match(
        self, support, support_labels, query, way, *, support_classes=None, query_classes=None
    ) -> MethodOutput:
        """Per-episode part for ``[B, Ns]`` support and ``[B, Nq]`` query states (support in
        any order). Returns logits ``[B, Nq, way]`` and, when training with global classes
        and a classifier, ``losses["aux_cls"]``."""
        b, nq = query["frames"].shape[:2]
        step = max(1, _CHUNK_ELEMENTS // (nq * (way + 1) * self.feature_dim))
        if b > step:
            parts = [
                self._logits(
                    {k: v[lo : lo + step] for k, v in support.items()},
                    support_labels[lo : lo + step],
                    {k: v[lo : lo + step] for k, v in query.items()},
                    way,
                )
                for lo in range(0, b, step)
            ]
            out = MethodOutput(logits=torch.cat(parts))
        else:
            out = MethodOutput(logits=self._logits(support, support_labels, query, way))
        if self._wants_aux(support, query, support_classes, query_classes):
            out.losses["aux_cls"] = self._aux_loss(
                support["cls"], query["cls"], support_classes, query_classes
            )
        return out

    def _logits(self, support, support_labels, query, way: int) -> Tensor:
        """``[B, Nq, way]``: minus Bi-MHM to the per-query adapted prototypes."""
        weights = one_hot_weights(support_labels, way, support["token"].dtype)  # [B, way, Ns]
        protos = {
            key: (weights @ v.flatten(2)).view(*weights.shape[:2], *v.shape[2:])
            for key, v in support.items()
            if key not in ("cls", "frames")
        }
        frames = upcast(support["frames"])  # Bi-MHM's class means: float32, no autocast
        with float32_region(frames.device):
            w = weights  # a half copy would round 1/shot
            if w.dtype != frames.dtype:
                w = one_hot_weights(support_labels, way, frames.dtype)
            protos["frames"] = (w @ frames.flatten(2)).view(*w.shape[:2], *frames.shape[2:])
        adapted = F.relu(self.temporal_atte(protos, query))  # [B, Q, way + 1, D]
        _, w_t = self._fusion_weights()
        offsets = upcast(adapted @ w_t.t())
        # Bi-MHM's raw frame products overflow fp16 and tie in bf16: float32, outside autocast
        with float32_region(offsets.device):
            dist = _bimhm_fused(
                upcast(query["frames"]), protos["frames"], offsets[:, :, way], offsets[:, :, :way]
            )
        return -dist

    def _wants_aux(self, support, query, support_classes, query_classes) -> bool:
        return (
            self.training
            and self.classification_layer is not None
            and support_classes is not None
            and query_classes is not None
            and "cls" in support
            and "cls" in query
        )

    def _aux_loss(
        self, s_cls: Tensor, q_cls: Tensor, s_classes: Tensor, q_classes: Tensor
    ) -> Tensor:
        """``λ_cls · CE`` over every frame of support ``[B, Ns, T, C]`` and query videos against
        their global classes ``[B, Ns]``/``[B, Nq]``."""
        logits = torch.cat([s_cls.flatten(0, 2), q_cls.flatten(0, 2)])
        t = s_cls.shape[2]
        target = torch.cat([s_classes.flatten(), q_classes.flatten()]).repeat_interleave(t)
        return self.config.lambda_cls * F.cross_entropy(logits, target)

    def load_official_state_dict(self, sd: Mapping[str, object]) -> list[str]:
        """Load a ``CNN_HyRSM_1shot``/``_5shot`` state dict.

        Keys ``pe.pe``, ``temporal_atte_before.{norm.*, fn.to_qkv.weight, fn.to_out.0.*}``,
        ``temporal_atte.{w_qs,w_ks,w_vs}.weight``, ``temporal_atte.{layer_norm,fc}.*``,
        ``layer2.0.*`` and ``classification_layer.*`` are loaded; ``backbone.*`` and ``module.``
        prefixes are skipped, and so is ``classification_layer.*`` when this head was built
        without ``num_train_classes`` (it is only used in training). Returns the skipped keys;
        raises ``OfficialCheckpointError`` on missing, unexpected or mis-shaped keys.
        """
        ignore = OFFICIAL_IGNORE
        if self.classification_layer is None:
            ignore = (*ignore, r"classification_layer\.")
        return load_official_state_dict(self, sd, ignore=ignore, what="HyRSM checkpoint")
