"""TRX: temporal-relational cross-transformers (Perrett et al., CVPR'21).

Computes what ``TemporalCrossTransformer`` / ``CNN_TRX`` of github.com/tobyperrett/trx
(``model.py``) compute, re-organised for speed with identical results:

* A tuple's key/value is a linear map of its concatenated frames, so
  ``k([f_a; f_b; f_c]) = W_1 f_a + W_2 f_b + W_3 f_c + b``: :meth:`TRX.encode` projects every
  frame once per tuple position (``[ω·T, O]`` per video instead of ``[tuples, ω·D]``).
* LayerNorm on keys: ``LN(k) = γ ⊙ C k / σ + β`` with ``C`` the (linear) centring, so the
  query-support key products reduce to frame-level products ``[ω·T, ω·T]`` per video pair,
  gathered onto tuples with a fixed 0/1 selection matrix; terms constant over a class's keys
  cancel in the softmax.
* The attention-weighted prototype is accumulated on frames, ``[ω·T]`` per support video.
* Everything that depends on one video only (``γ``-scaled keys, value Grams, the query's
  ``Σ_p ‖v_p‖²``) is computed in :meth:`TRX.encode`, once per video rather than per episode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsarbench import EpisodeBatch, FewShotMethod, MethodOutput
from fsarbench.autocast import float32_region
from fsarbench.state import state_map
from fsarbench_baselines._official import load_official_state_dict

__all__ = ["TRX", "trx_positional_table", "class_slots"]

# Keys of official checkpoints that carry no head weights: the backbone (``resnet.*`` in the
# TRX repository, ``backbone.*`` in HyRSM's copy) and HyRSM's tuple index tensors.
OFFICIAL_IGNORE = (r"resnet\.", r"backbone\.", r"transformers\.\d+\.tuples\.\d+$")
# Episodes matched at once are chosen so the attention scores of a chunk stay near this size
# (16 MiB in float32: cache-friendlier, and below glibc's largest mmap threshold, so the
# chunk's temporaries are reused instead of page-faulted in afresh).
_CHUNK_ELEMENTS = 1 << 22


def trx_positional_table(max_len: int, dim: int, scale: float) -> Tensor:
    """The reference's sinusoid table ``[max_len, dim]``: ``sin``/``cos`` of
    ``pos · exp(-2i·ln(10000)/dim)`` on even/odd dims, times ``scale``."""
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * -(math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * div) * scale
    table[:, 1::2] = torch.cos(position * div)[:, : dim // 2] * scale
    return table.float()


def class_slots(labels: Tensor, way: int) -> tuple[Tensor, Tensor | None]:
    """Class-major slots for a support set in any order.

    Args:
        labels: ``[B, Ns]`` episode labels.

    Returns:
        ``index [B, way·K]`` (support position of slot ``c·K + k``; K = largest class size)
        and ``valid [B, way, K]`` (``None`` when every class has K videos).
    """
    b, ns = labels.shape
    counts = F.one_hot(labels, way).sum(1)  # [B, way]
    k, fewest = torch.stack([counts.max(), counts.min()]).tolist()  # one read to the host
    position = torch.arange(ns, device=labels.device)
    order = torch.argsort(labels * ns + position, dim=1)  # class-major, stable
    sorted_labels = labels.gather(1, order)
    start = counts.cumsum(1) - counts
    slot = sorted_labels * k + position - start.gather(1, sorted_labels)
    index = torch.zeros(b, way * k, dtype=torch.long, device=labels.device)
    index.scatter_(1, slot, order)
    if fewest == k:
        return index, None
    valid = torch.zeros(b, way * k, dtype=torch.bool, device=labels.device)
    valid.scatter_(1, slot, True)
    return index, valid.view(b, way, k)


def _take(t: Tensor, index: Tensor) -> Tensor:
    """``t [B, N, ...]`` indexed by ``index [B, M]`` along dim 1 -> ``[B, M, ...]``."""
    b, n = t.shape[:2]
    flat = (index + n * torch.arange(b, device=t.device).unsqueeze(1)).flatten()
    return t.flatten(0, 1).index_select(0, flat).view(b, index.shape[1], *t.shape[2:])


class _Table(nn.Module):
    """Holds a positional table as buffer ``pe`` (checkpoint key ``....pe.pe``)."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("pe", table.unsqueeze(0))


class _TupleTransformer(nn.Module):
    """One temporal cross-transformer of tuple cardinality ``omega``.

    Sub-module names equal the reference's ``TemporalCrossTransformer`` (``pe``, ``k_linear``,
    ``v_linear``, ``norm_k``, ``norm_v``). ``norm_v`` exists in the reference but is never
    applied; it is kept (frozen) so official checkpoints load.
    """

    def __init__(self, dim: int, seq_len: int, omega: int, cfg: TRX.Config) -> None:
        super().__init__()
        if omega > seq_len:
            raise ValueError(f"tuple cardinality {omega} exceeds seq_len {seq_len}")
        self.omega, self.seq_len, self.out_dim = omega, seq_len, cfg.trans_linear_out_dim
        self.pe = _Table(trx_positional_table(int(seq_len * 1.5), dim, cfg.pe_scale))
        self.dropout = nn.Dropout(cfg.dropout)
        self.k_linear = nn.Linear(omega * dim, self.out_dim)
        self.v_linear = nn.Linear(omega * dim, self.out_dim)
        self.norm_k = nn.LayerNorm(self.out_dim)
        self.norm_v = nn.LayerNorm(self.out_dim)
        self.norm_v.requires_grad_(False)
        tuples = torch.tensor(list(combinations(range(seq_len), omega)))  # [P, ω]
        select = torch.zeros(omega * seq_len, len(tuples))  # [ω·T, P]: frame slot -> tuple
        for j in range(omega):
            select[j * seq_len + tuples[:, j], torch.arange(len(tuples))] = 1.0
        self.register_buffer("select", select, persistent=False)

    @property
    def num_tuples(self) -> int:
        return int(self.select.shape[1])

    def encode(self, features: Tensor) -> dict[str, Tensor]:
        """``[N, T, D]`` -> frame keys/values ``fk, fv [N, ω·T, O]`` (bias folded into the first
        tuple position; keys centred and scaled by the LayerNorm weight ``γ``), inverse key std
        ``isig [N, P]``, the support key term ``e [N, P] = (γ⊙β)·k_c / σ``, the value Gram
        ``gram [N, ω·T, ω·T]`` and ``vsq [N]`` = Σ over tuples of ``‖v_p‖²`` (the per-video
        parts of the distance, computed once per video instead of once per episode).

        Outside autocast, in the module's dtype: the Gram terms cancel in ``match``, and
        half-precision rounding of them would survive the cancellation."""
        dtype = self.k_linear.weight.dtype
        with float32_region(features.device):
            return self._encode(features.to(dtype))

    def _encode(self, features: Tensor) -> dict[str, Tensor]:
        n, t, d = features.shape
        o, w = self.out_dim, self.omega
        x = self.dropout(features + self.pe.pe[0, :t])
        weight = torch.cat([self.k_linear.weight, self.v_linear.weight])  # [2O, ω·D]
        weight = weight.view(2 * o, w, d).permute(2, 1, 0).reshape(d, w * 2 * o)
        proj = (x.reshape(n * t, d) @ weight).view(n, t, w, 2, o).permute(3, 0, 2, 1, 4)
        proj = proj.reshape(2, n, w * t, o)
        bias = torch.stack([self.k_linear.bias, self.v_linear.bias]).view(2, 1, 1, o)
        first = torch.zeros(w * t, 1, dtype=x.dtype, device=x.device)
        first[:t] = 1.0
        proj = proj + first * bias
        fk = proj[0] - proj[0].mean(-1, keepdim=True)
        keys = self.select.t() @ fk  # [N, P, O] centred tuple keys
        isig = torch.rsqrt(keys.pow(2).mean(-1) + self.norm_k.eps)
        e = (keys @ (self.norm_k.weight * self.norm_k.bias)) * isig
        fv = proj[1]
        gram = fv @ fv.transpose(1, 2)  # [N, R, R]
        vsq = ((self.select.t() @ gram) * self.select.t()).sum((-2, -1))
        return {
            "fk": fk * self.norm_k.weight,
            "fv": fv,
            "isig": isig,
            "e": e,
            "gram": gram,
            "vsq": vsq,
        }

    def match(
        self, support: dict[str, Tensor], query: dict[str, Tensor], way: int, valid: Tensor | None
    ) -> Tensor:
        """Distances of queries to their query-specific class prototypes.

        Args:
            support: states with leading ``[B, way·K]`` (class-major slots).
            query: states with leading ``[B, Q]``.
            valid: ``[B, way, K]`` slot mask or ``None`` (all slots filled).

        Returns:
            ``[B, Q, way]`` squared distance summed over tuples and dims / tuples.
        """
        fk, fv = support["fk"], support["fv"]
        b, m, r, o = fk.shape
        q = query["fk"].shape[1]
        keys = query["fk"].reshape(b, q * r, o) @ fk.reshape(b, m * r, o).transpose(1, 2)
        values = query["fv"].reshape(b, q * r, o) @ fv.reshape(b, m * r, o).transpose(1, 2)
        grams = _class_grams(support["gram"], fv, way)
        return self.distances(
            keys.view(b, q, r, m * r),
            values.view(b, q, r, m * r),
            grams,
            support,
            query,
            way,
            valid,
        )

    def pool_products(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every video pair's frame-level key and value products, ``kk, vv [U, U, R, R]``
        (row video, column video, row frame slot, column frame slot)."""
        return {"kk": _pair_blocks(state["fk"]), "vv": _pair_blocks(state["fv"])}

    def match_pool(
        self,
        state: dict[str, Tensor],
        products: dict[str, Tensor],
        support_index: Tensor,
        query_index: Tensor,
        way: int,
        valid: Tensor | None,
    ) -> Tensor:
        """:meth:`match` with the products looked up in :meth:`pool_products`.

        Args:
            state: the pool's states ``[U, ...]``; products: :meth:`pool_products`.
            support_index: ``[B, way·K]`` pool positions in class-major slots.
            query_index: ``[B, Q]`` pool positions.
        """
        b, m = support_index.shape
        q, r = query_index.shape[1], self.omega * self.seq_len
        pairs = (query_index[:, :, None], support_index[:, None, :])
        keys = products["kk"][pairs].permute(0, 1, 3, 2, 4).reshape(b, q, r, m * r)
        values = products["vv"][pairs].permute(0, 1, 3, 2, 4).reshape(b, q, r, m * r)
        k = m // way
        if k == 1:
            grams = state["gram"][support_index].reshape(b * way, r, r)
        else:
            cls = support_index.view(b, way, k)
            blocks = products["vv"][cls[:, :, :, None], cls[:, :, None, :]]  # [B, way, K, K, R, R]
            grams = blocks.permute(0, 1, 2, 4, 3, 5).reshape(b * way, k * r, k * r)
        support = {key: state[key][support_index] for key in ("isig", "e")}
        query = {key: state[key][query_index] for key in ("isig", "vsq")}
        return self.distances(keys, values, grams, support, query, way, valid)

    def distances(
        self,
        keys: Tensor,
        values: Tensor,
        grams: Tensor,
        support: dict[str, Tensor],
        query: dict[str, Tensor],
        way: int,
        valid: Tensor | None,
    ) -> Tensor:
        """The distances from the frame-level products.

        ``‖v_p - Σ a v‖²`` is expanded as ``‖v_p‖² - 2 Σ a <v_p, v> + a^T G a`` with frame-level
        Gram matrices, so no ``[way, Q, tuples, O]`` prototype tensor is formed.

        Args:
            keys, values: ``[B, Q, R, M·R]`` products of query and support frame keys/values.
            grams: ``[B·way, K·R, K·R]`` each class's frame value Gram.
            support: ``isig``, ``e`` ``[B, M, P]``; query: ``isig [B, Q, P]``, ``vsq [B, Q]``.

        Returns:
            ``[B, Q, way]``.
        """
        b, q, r, mr = keys.shape
        m, p, o = mr // r, self.num_tuples, self.out_dim
        k = m // way
        sel, sel_t = self.select, self.select.t()
        prod = (sel_t @ keys) * (query["isig"] / math.sqrt(o)).unsqueeze(-1)
        scores = prod.view(b, q, p, m, r) @ sel  # [B, Q, P, M, P]
        scores = torch.addcmul(
            (support["e"] / math.sqrt(o))[:, None, None], scores, support["isig"][:, None, None]
        ).view(b, q, p, way, k, p)
        if valid is not None:
            scores = scores.masked_fill(~valid[:, None, None, :, :, None], float("-inf"))
        attn = torch.softmax(scores.flatten(-2), -1).view(b, q, p, way, k, p)
        frame_attn = attn @ sel_t  # [B, Q, P, way, K, R]
        cross = sel_t @ values
        cross = (frame_attn.reshape(b, q, p * way, k * r) * cross.view(b, q, p * way, k * r)).sum(
            -1
        )
        attn_c = frame_attn.permute(0, 3, 1, 2, 4, 5).reshape(b, way, q * p, k * r)
        proto_sq = _prototype_norms(attn_c, grams, way)  # [B, way, Q·P]
        dist = (
            query["vsq"].unsqueeze(-1)
            - 2 * cross.view(b, q, p, way).sum(2)
            + proto_sq.view(b, way, q, p).sum(-1).transpose(1, 2)
        )
        return dist / p


def _pair_blocks(x: Tensor) -> Tensor:
    """``x [U, R, O]`` -> ``[U, U, R, R]``: ``out[u, v] = x[u] @ x[v]^T``, built in row chunks
    that bound the temporaries."""
    u, r, o = x.shape
    flat = x.reshape(u * r, o)
    out = x.new_empty(u, u, r, r)
    step = max(1, _CHUNK_ELEMENTS // max(u * r * r, 1))
    for lo in range(0, u, step):
        block = flat[lo * r : (lo + step) * r] @ flat.t()  # [c·R, U·R]
        out[lo : lo + step] = block.view(-1, r, u, r).permute(0, 2, 1, 3)
    return out


def _class_grams(gram: Tensor, fv: Tensor, way: int) -> Tensor:
    """Each class's frame value Gram ``[B·way, K·R, K·R]`` of support slots ``fv [B, way·K,
    R, O]``. With one video per class it is that video's Gram from ``encode`` (``gram [B,
    way·K, R, R]``); otherwise one ``[K·R, K·R]`` product per class (faster than assembling
    it from per-video and cross-video blocks)."""
    b, m, r, o = fv.shape
    k = m // way
    if k == 1:
        return gram.reshape(b * way, r, r)
    class_v = fv.reshape(b * way, k * r, o)
    return class_v @ class_v.transpose(1, 2)


def _prototype_norms(attn: Tensor, grams: Tensor, way: int) -> Tensor:
    """``‖Σ a v‖² = a^T G a`` for every attention row, with the class value Gram ``G``.

    Args:
        attn: ``[B, way, N, K·R]`` frame-level attention of ``N`` rows over a class's frames.
        grams: ``[B·way, K·R, K·R]`` (:func:`_class_grams`).

    Returns:
        ``[B, way, N]``.
    """
    b, n, kr = attn.shape[0], attn.shape[2], attn.shape[3]
    a = attn.reshape(b * way, n, kr)
    return ((a @ grams) * a).sum(-1).view(b, way, n)


class TRX(FewShotMethod):
    """TRX (Perrett et al., "Temporal-Relational CrossTransformers for Few-Shot Action
    Recognition", CVPR 2021), following ``CNN_TRX`` of github.com/tobyperrett/trx: the mean
    over tuple cardinalities of ``-`` (squared distance to a query-specific prototype)."""

    CONTRACT_HPARAMS = {"trans_linear_out_dim": 32}
    # models saved before loss_reduction existed were trained on the mean over queries
    legacy_hparams = {"loss_reduction": "mean"}

    @dataclass
    class Config:
        """Hyper-parameters (reference defaults).

        Attributes:
            cardinalities: tuple sizes, one cross-transformer each (``temp_set``).
            trans_linear_out_dim: key/value width (1152 in the paper).
            pe_scale: factor on the sinusoid positional table.
            dropout: dropout after adding the positional table (the only dropout in TRX).
            loss_reduction: how a training episode's query cross-entropies combine: "sum"
                (the reference's ``utils.loss``, divided by the episodes of an update as
                its ``train_task`` divides by ``tasks_per_batch``) or "mean" (fsarbench's
                default for other heads, ``way x queries`` times smaller: under TRX's plain
                SGD recipe, a 25 times smaller step at 5-way 5 queries).
        """

        cardinalities: tuple[int, ...] = (2, 3)
        trans_linear_out_dim: int = 1152
        pe_scale: float = 0.1
        dropout: float = 0.1
        loss_reduction: Literal["sum", "mean"] = "sum"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if not self.config.cardinalities:
            raise ValueError("TRX needs at least one tuple cardinality")
        self.transformers = nn.ModuleList(
            _TupleTransformer(self.feature_dim, self.seq_len, w, self.config)
            for w in self.config.cardinalities
        )

    def episode_loss(self, batch: EpisodeBatch) -> dict[str, Tensor]:
        """Cross-entropy of each episode's queries, summed over them as the reference does
        (``loss_reduction="sum"``), averaged over the batch's ``B`` episodes."""
        losses = super().episode_loss(batch)
        if self.config.loss_reduction == "sum":
            losses["ce"] = losses["ce"] * batch.query_labels[0].numel()
        return losses

    def encode(self, features: Tensor) -> tuple[dict[str, Tensor], ...]:
        """``[N, T, D]`` -> one state dict per cardinality (see ``_TupleTransformer.encode``)."""
        return tuple(t.encode(features) for t in self.transformers)

    def match(self, support, support_labels, query, way, **_) -> MethodOutput:
        """Per-episode part; ``support``/``query`` lead with ``[B, Ns]``/``[B, Nq]``.

        Returns logits ``[B, Nq, way]``, support in any order. The distances are differences
        of large Gram terms, so they are computed in the module's dtype even under autocast
        (half-precision states from an autocast ``encode`` are cast up)."""
        index, valid = class_slots(support_labels, way)
        if not bool((index == torch.arange(index.shape[1], device=index.device)).all()):
            support = tuple({key: _take(v, index) for key, v in s.items()} for s in support)
        dtype = self.transformers[0].select.dtype
        support, query = (state_map(lambda t: t.to(dtype), s) for s in (support, query))
        b, nq = query[0]["fk"].shape[:2]
        per_episode = nq * index.shape[1] * sum(t.num_tuples**2 for t in self.transformers)
        step = max(1, _CHUNK_ELEMENTS // max(per_episode, 1))  # bounds the attention scores
        with torch.autocast(query[0]["fk"].device.type, enabled=False):
            parts = [
                self._match_rows(support, query, way, valid, slice(lo, lo + step))
                for lo in range(0, b, step)
            ]
        return MethodOutput(logits=torch.cat(parts))

    def pairwise(self, shot: int) -> bool:
        """At 1-shot: the attention then spans one support video, so a class's logit is a
        function of the (query, support) pair alone."""
        return shot == 1

    def pair_logits(self, query, support) -> Tensor:
        """``[B, Nq, Ns]``: the logits with every support video a class of its own."""
        b, ns = support[0]["fk"].shape[:2]
        labels = torch.arange(ns, device=support[0]["fk"].device).expand(b, ns)
        return self.match(support, labels, query, ns).logits

    def pool_products_bytes(self, n_videos: int, shot: int) -> int | None:
        """Pool products above 1-shot (where TRX is pairwise, the pair table serves): two
        ``[U·R, U·R]`` tables per cardinality (``R = ω·T``) in the module's dtype."""
        if shot == 1:
            return None
        size = self.transformers[0].select.element_size()
        return sum(2 * size * (n_videos * t.omega * t.seq_len) ** 2 for t in self.transformers)

    def pool_products(self, state) -> tuple[dict[str, Tensor], ...]:
        """Per cardinality, every video pair's frame key/value products (see
        ``_TupleTransformer.pool_products``), in the module's dtype."""
        dtype = self.transformers[0].select.dtype
        with torch.autocast(state[0]["fk"].device.type, enabled=False):
            return tuple(
                t.pool_products(state_map(lambda x: x.to(dtype), s))
                for t, s in zip(self.transformers, state)
            )

    def match_pool(
        self, state, products, support_index, support_labels, query_index, way
    ) -> MethodOutput:
        """:meth:`match` of episodes given as pool positions, products looked up."""
        index, valid = class_slots(support_labels, way)
        support_index = support_index.gather(1, index)
        dtype = self.transformers[0].select.dtype
        state = tuple(state_map(lambda t: t.to(dtype), s) for s in state)
        b, nq = query_index.shape
        per_episode = nq * index.shape[1] * sum(t.num_tuples**2 for t in self.transformers)
        step = max(1, _CHUNK_ELEMENTS // max(per_episode, 1))
        parts = []
        with torch.autocast(query_index.device.type, enabled=False):
            for lo in range(0, b, step):
                rows = slice(lo, lo + step)
                dists = [
                    t.match_pool(
                        s,
                        prods,
                        support_index[rows],
                        query_index[rows],
                        way,
                        None if valid is None else valid[rows],
                    )
                    for t, s, prods in zip(self.transformers, state, products)
                ]
                parts.append(-torch.stack(dists, -1).mean(-1))
        return MethodOutput(logits=torch.cat(parts))

    def _match_rows(self, support, query, way: int, valid: Tensor | None, rows: slice) -> Tensor:
        """Logits ``[b, Nq, way]`` of the episodes ``rows``: mean over cardinalities."""
        dists = [
            t.match(
                {key: v[rows] for key, v in s.items()},
                {key: v[rows] for key, v in qs.items()},
                way,
                None if valid is None else valid[rows],
            )
            for t, s, qs in zip(self.transformers, support, query)
        ]
        return -torch.stack(dists, -1).mean(-1)

    def load_official_state_dict(self, sd: Mapping[str, object]) -> list[str]:
        """Load a ``CNN_TRX`` state dict (tobyperrett/trx or HyRSM's copy).

        Keys ``transformers.{i}.{pe.pe, k_linear.*, v_linear.*, norm_k.*, norm_v.*}`` are
        loaded; ``resnet.*``/``backbone.*``, ``module.`` prefixes and ``tuples.N`` are skipped.
        Returns the skipped keys; raises ``OfficialCheckpointError`` on missing, unexpected or
        mis-shaped keys (e.g. a checkpoint of another ``seq_len``, width or cardinality set).
        """
        return load_official_state_dict(self, sd, ignore=OFFICIAL_IGNORE, what="TRX checkpoint")
