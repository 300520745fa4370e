"""Slow, literal CLIP-FSAR head on frame features, one episode at a time.

Written from the reference code (github.com/alibaba-mmai-research/CLIP-FSAR,
``models/base/few_shot.py``): ``Transformer_v1`` (``PreNormattention_qkv`` around
``Attention_qkv``, then ``FeedForward`` with *no* norm before it), ``cos_sim`` (``eps`` 0.01 in
the denominator), ``OTAM_cum_dist_v2`` and ``CNN_OTAM_CLIPFSAR.forward`` (the query side and
the support side with its text token, ``TRAIN.MERGE_BEFORE`` on and off, the ``TRAIN.COMBINE``
score). No CLIP backbone: the frame features and the class texts' embeddings are inputs.

Modules carry the reference's names (``context2.layers.0.0.fn.to_q``...), so an oracle's
``state_dict()`` is what the reference would save; :func:`to_head_names` renames it for the
fast head. Loops follow the text: per class, per query, per head, per frame, per DP cell, on
vectors and 0-d tensors (autograd gives reference gradients). Run them in float64.

Where the head documents its own choice (docs/clip.md), the oracle takes it as a parameter:
the visual temperature (``8`` in the reference, ``T`` in the head), the video-text training
term among the episode's classes (the reference: all meta-train classes), and ``text_proj``,
a learned map of the text embeddings to the frame dimension when they differ (the
reference's ``mid_layer`` is empty: its CLIP text and frame features share a dimension).
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor, nn

__all__ = [
    "OracleCLIPFSAR",
    "OracleTransformerV1",
    "cos_sim_literal",
    "otam_cum_dist_v2_literal",
    "to_head_names",
]


# ------------------------------------------------------------------------- building blocks
def layer_norm_literal(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """``nn.LayerNorm`` of one ``[D]`` vector: biased variance, ``eps`` inside the root."""
    mean = x.sum() / x.shape[0]
    var = ((x - mean) ** 2).sum() / x.shape[0]
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def gelu_literal(x: Tensor) -> Tensor:
    """``nn.GELU()`` (exact): ``x/2 · (1 + erf(x/√2))``."""
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))


def linear_literal(x: Tensor, layer: nn.Linear) -> Tensor:
    """``W x (+ b)`` of one vector, output by output."""
    out = torch.stack([torch.dot(layer.weight[o], x) for o in range(layer.weight.shape[0])])
    return out if layer.bias is None else out + layer.bias


class OracleAttentionQKV(nn.Module):
    """``Attention_qkv(dim, heads, dim_head)``: ``scale = dim_head ** -0.5``; ``to_out`` is
    applied (``project_out`` is true unless ``heads == 1 and dim_head == dim``)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

    def forward(self, q: list[Tensor], k: list[Tensor], v: list[Tensor]) -> list[Tensor]:
        """Frames (lists of ``[D]``) -> frames: per head, per query frame, softmax over keys."""
        qs = [linear_literal(x, self.to_q) for x in q]
        ks = [linear_literal(x, self.to_k) for x in k]
        vs = [linear_literal(x, self.to_v) for x in v]
        out = []
        for i in range(len(qs)):
            per_head = []
            for h in range(self.heads):
                part = slice(h * self.dim_head, (h + 1) * self.dim_head)
                dots = [torch.dot(qs[i][part], ks[j][part]) * self.scale for j in range(len(ks))]
                exps = [torch.exp(s) for s in dots]  # small logits: no max shift needed
                total = sum(exps)
                per_head.append(sum((e / total) * vs[j][part] for j, e in enumerate(exps)))
            out.append(linear_literal(torch.cat(per_head), self.to_out[0]))  # 'b n (h d)'
        return out


class OraclePreNormAttentionQKV(nn.Module):
    """``PreNormattention_qkv``: ``fn(norm(q), norm(k), norm(v)) + q``."""

    def __init__(self, dim: int, fn: OracleAttentionQKV) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, q: list[Tensor], k: list[Tensor], v: list[Tensor]) -> list[Tensor]:
        def normed(xs: list[Tensor]) -> list[Tensor]:
            return [layer_norm_literal(x, self.norm) for x in xs]

        attended = self.fn(normed(q), normed(k), normed(v))
        return [a + x for a, x in zip(attended, q)]


class OracleFeedForward(nn.Module):
    """``FeedForward``: ``Linear, GELU, Dropout, Linear, Dropout`` (no norm)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(hidden, dim),
            nn.Dropout(0.0),
        )

    def forward(self, x: Tensor) -> Tensor:
        return linear_literal(gelu_literal(linear_literal(x, self.net[0])), self.net[3])


class OracleTransformerV1(nn.Module):
    """``Transformer_v1(heads, dim, dim_head_k=dim // heads, mlp_dim, depth)`` called as
    ``context2(x, x, x)``: per layer ``x = attn(x, x, x)`` then ``x = ff(x) + x``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, depth: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    OraclePreNormAttentionQKV(dim, OracleAttentionQKV(dim, heads, dim // heads)),
                    OracleFeedForward(dim, mlp_dim),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, seq: Tensor) -> Tensor:
        """``[L, D]`` -> ``[L, D]``."""
        x = list(seq)
        for attn, ff in self.layers:
            x = attn(x, x, x)
            x = [ff(f) + f for f in x]
        return torch.stack(x)


# ---------------------------------------------------------------------- matching functions
def cos_sim_literal(x: Tensor, y: Tensor, epsilon: float = 0.01) -> Tensor:
    """``cos_sim``: ``[Tx, D]``, ``[Ty, D]`` -> ``<x, y> / (|x||y| + epsilon)``, cell by cell."""
    rows = []
    for i in range(x.shape[0]):
        row = []
        for j in range(y.shape[0]):
            denom = torch.sqrt((x[i] ** 2).sum()) * torch.sqrt((y[j] ** 2).sum()) + epsilon
            row.append(torch.dot(x[i], y[j]) / denom)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def otam_cum_dist_v2_literal(d: Tensor, lbda: float) -> Tensor:
    """``OTAM_cum_dist_v2`` of one ``[L, M]`` distance matrix: columns padded by one zero on
    each side, the top row summed, then per row the first column (3-way soft-min), middle
    columns (2-way), last (padded) column (3-way); the bottom-right cell."""
    rows, cols = d.shape[0], d.shape[1] + 2
    zero = d.new_zeros(())
    dists = [[zero] + [d[l, m] for m in range(d.shape[1])] + [zero] for l in range(rows)]
    cum = [[zero] * cols for _ in range(rows)]

    def softmin(*xs: Tensor) -> Tensor:
        return -lbda * torch.log(sum(torch.exp(-x / lbda) for x in xs))

    for m in range(1, cols):
        cum[0][m] = dists[0][m] + cum[0][m - 1]
    for l in range(1, rows):
        cum[l][1] = dists[l][1] + softmin(cum[l - 1][0], cum[l - 1][1], cum[l][0])
        for m in range(2, cols - 1):
            cum[l][m] = dists[l][m] + softmin(cum[l - 1][m - 1], cum[l][m - 1])
        last = cols - 1
        cum[l][last] = dists[l][last] + softmin(
            cum[l - 1][last - 1], cum[l - 1][last], cum[l][last - 1]
        )
    return cum[rows - 1][cols - 1]


def _softmax(values: list[Tensor]) -> list[Tensor]:
    exps = [torch.exp(v) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _cross_entropy(rows: list[list[Tensor]], labels: list[int]) -> Tensor:
    """Mean over rows of ``-log softmax(row)[label]``."""
    losses = [-torch.log(_softmax(row)[y]) for row, y in zip(rows, labels)]
    return sum(losses) / len(losses)


# ------------------------------------------------------------------------------- the head
class OracleCLIPFSAR(nn.Module):
    """``CNN_OTAM_CLIPFSAR`` without its backbone, one episode: ``support [Ns, T, D]``,
    ``labels [Ns]`` (0..way-1), ``query [Nq, T, D]``, ``text [way, E]`` (the class prompts'
    text-tower embeddings, in label order)."""

    def __init__(
        self,
        dim: int,
        *,
        text_dim: int | None = None,
        heads: int = 8,
        mlp_dim: int = 2048,
        depth: int = 1,
        lam: float = 0.5,
        eps: float = 0.01,
        merge_before: bool = True,
        text_coeff: float = 0.9,
        temperature: float = 8.0,
        text_loss_weight: float = 1.5,
    ) -> None:
        super().__init__()
        self.context2 = OracleTransformerV1(dim, heads, mlp_dim, depth)
        # the head's own map (the reference's mid_layer is an empty Sequential, E == D there)
        self.text_proj = nn.Identity() if text_dim in (None, dim) else nn.Linear(text_dim, dim)
        self.scale = nn.Parameter(torch.ones(()))
        self.lam, self.eps, self.merge_before = lam, eps, merge_before
        self.text_coeff, self.temperature = text_coeff, temperature
        self.text_loss_weight = text_loss_weight

    def _text(self, text: Tensor) -> list[Tensor]:
        if isinstance(self.text_proj, nn.Linear):
            return [linear_literal(t, self.text_proj) for t in text]
        return list(text)

    def prototypes(self, support: Tensor, labels: Tensor, text: list[Tensor]) -> list[Tensor]:
        """Per class ``[T, D]``: ``context_support`` is each support video's class text as one
        more frame; with MERGE_BEFORE the class mean of the frames and of the tokens goes
        through ``context2`` once, else every video does and the outputs are averaged; the
        first ``T`` outputs are kept."""
        t = support.shape[1]
        out = []
        for c in range(len(text)):
            members = [j for j in range(support.shape[0]) if int(labels[j]) == c]
            tokens = [text[int(labels[j])] for j in members]  # text_features[real class]
            if self.merge_before:
                frames = sum(support[j] for j in members) / len(members)
                token = sum(tokens) / len(tokens)
                out.append(self.context2(torch.cat([frames, token[None]]))[:t])
            else:
                seqs = [
                    self.context2(torch.cat([support[j], tok[None]]))[:t]
                    for j, tok in zip(members, tokens)
                ]
                out.append(sum(seqs) / len(seqs))
        return out

    def visual_distances(self, support: Tensor, labels: Tensor, query: Tensor, text) -> Tensor:
        """``cum_dists [Nq, way]``: both OTAM directions between ``context2(query)`` and each
        prototype, frame distances ``1 - cos_sim``."""
        protos = self.prototypes(support, labels, text)
        rows = []
        for i in range(query.shape[0]):
            target = self.context2(query[i])
            row = []
            for proto in protos:
                d = 1 - cos_sim_literal(target, proto, self.eps)
                row.append(
                    otam_cum_dist_v2_literal(d, self.lam) + otam_cum_dist_v2_literal(d.T, self.lam)
                )
            rows.append(torch.stack(row))
        return torch.stack(rows)

    def text_logits(self, videos: Tensor, text: list[Tensor], training: bool) -> Tensor:
        """``[N, way]``: each video's mean frame (untransformed) against each class text,
        times ``scale``: ``cos_sim`` (eps) in training, both sides divided by their norms in
        evaluation (the COMBINE branch)."""
        rows = []
        for video in videos:
            img = sum(video[f] for f in range(video.shape[0])) / video.shape[0]
            row = []
            for txt in text:
                if training:
                    row.append(cos_sim_literal(img[None], txt[None], self.eps)[0, 0] * self.scale)
                else:
                    unit_img = img / torch.sqrt((img**2).sum())
                    unit_txt = txt / torch.sqrt((txt**2).sum())
                    row.append(self.scale * torch.dot(unit_img, unit_txt))
            rows.append(torch.stack(row))
        return torch.stack(rows)

    def forward(self, support: Tensor, labels: Tensor, query: Tensor, text: Tensor):
        """Evaluation: ``(combined, visual, text_logits)``, each ``[Nq, way]``; ``combined`` is
        ``log(softmax(text)^α · softmax((temperature - cum) / temperature)^(1-α))``, the log of
        the COMBINE score (the reference returns its negative product)."""
        classes = self._text(text)
        cum = self.visual_distances(support, labels, query, classes)
        # COMBINE: text_features = class means of the support videos' texts
        per_class = []
        for c in range(len(classes)):
            tokens = [classes[int(labels[j])] for j in range(len(labels)) if int(labels[j]) == c]
            per_class.append(sum(tokens) / len(tokens))
        text_q = self.text_logits(query, per_class, training=False)
        a = self.text_coeff
        combined = []
        for i in range(query.shape[0]):
            p_text = _softmax(list(text_q[i]))
            p_vis = _softmax([(self.temperature - x) / self.temperature for x in cum[i]])
            combined.append(
                torch.stack([torch.log(pt**a * pv ** (1 - a)) for pt, pv in zip(p_text, p_vis)])
            )
        return torch.stack(combined), -cum, text_q

    def loss(
        self, support: Tensor, labels: Tensor, query: Tensor, query_labels: Tensor, text: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Training (no dropout): ``(ce, text)``: cross-entropy of ``-cum_dists`` and
        ``text_loss_weight`` times the cross-entropy of the support and query videos'
        ``cos_sim`` text logits (among the episode's classes: the head's choice)."""
        classes = self._text(text)
        visual = -self.visual_distances(support, labels, query, classes)
        ce = _cross_entropy([list(r) for r in visual], [int(y) for y in query_labels])
        videos = torch.cat([support, query])
        logits = self.text_logits(videos, classes, training=True)
        targets = [int(y) for y in torch.cat([labels, query_labels])]
        return ce, self.text_loss_weight * _cross_entropy([list(r) for r in logits], targets)


_HEAD_NAMES = [
    (r"context2\.layers\.(\d+)\.0\.norm\.", r"transformer.blocks.\1.norm."),
    (r"context2\.layers\.(\d+)\.0\.fn\.to_([qkv])\.", r"transformer.blocks.\1.\2."),
    (r"context2\.layers\.(\d+)\.0\.fn\.to_out\.0\.", r"transformer.blocks.\1.out.0."),
    (r"context2\.layers\.(\d+)\.1\.net\.0\.", r"transformer.blocks.\1.ffn.0."),
    (r"context2\.layers\.(\d+)\.1\.net\.3\.", r"transformer.blocks.\1.ffn.3."),
    (r"(scale|text_proj\.weight|text_proj\.bias)$", r"\1"),
]


def to_head_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The reference's names -> the fast head's (``context2.layers.0.0.fn.to_q.weight`` ->
    ``transformer.blocks.0.q.weight``...); every key must have a rule."""
    out = {}
    for key, value in state.items():
        for pattern, repl in _HEAD_NAMES:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key, count=1)] = value
                break
        else:
            raise KeyError(f"no head name for {key!r}")
    return out
