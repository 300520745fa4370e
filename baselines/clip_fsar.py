"""CLIP-FSAR: CLIP-guided prototype modulation (Wang et al., IJCV 2023), as a head on CLIP
frame features plus CLIP's text tower (open_clip) for the class-name prompts.

What it computes (the reference is ``CNN_OTAM_CLIPFSAR`` of github.com/alibaba-mmai-research/
CLIP-FSAR; our own code):

1. Text: each class name becomes the prompt ``"a photo of {name}"`` (underscores and
   CamelCase turned into words: :func:`readable`); the frozen CLIP text
   tower embeds it (``[E]``), cached per name. When ``E`` differs from the frame feature
   dimension ``D`` a learned linear map takes it to ``D`` (identity otherwise: CLIP image
   features of the ``clip-vit-*`` presets already live in the joint space).
2. Prototype modulation: one temporal transformer (pre-norm multi-head attention without a
   norm before its feed-forward, as the reference's ``Transformer_v1``) runs over each query's
   ``T`` frames, and over each support video's ``T`` frames followed by its class's text
   token; the support keeps its first ``T`` outputs; prototypes are the class means.
3. Visual matching: bidirectional OTAM (λ = 0.5, cosine with 0.01 in the denominator) between
   each query and each prototype: visual logits ``-d``.
4. Video–text matching: the mean of a video's (untransformed) frames against the episode's
   text embeddings, cosine times a learned scale (initial 1).
5. Training: cross-entropy of the visual logits plus ``text_loss_weight`` (1.5) times the
   cross-entropy of the video–text logits of the support and query videos.
   Evaluation: ``logits = α log softmax(text) + (1 - α) log softmax((T - d) / T)`` with
   ``α = text_coeff = 0.9`` — the log of the reference's ``text^0.9 · visual^0.1`` product
   (same argmax, finite).

Our choices (documented in docs/clip.md): the training video–text term classifies among the
episode's ``way`` classes (the reference classifies among all meta-train classes); the
visual temperature is ``T`` (8 in the reference, where ``T = 8``); the text tower follows the
frame backbone (``backbone_hparams``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsarbench import FewShotMethod, MethodOutput
from fsarbench.io import md5_file
from fsarbench.methods import EpisodeBatch
from fsarbench_baselines.common import one_hot_weights
from fsarbench_baselines.otam import bidirectional_otam, otam_cosine_distance

__all__ = [
    "CLIPFSAR",
    "ClassNameTagError",
    "PromptNamesError",
    "SPLIT_TAG",
    "TemporalTransformer",
    "load_prompt_names",
    "readable",
]

#: A class named by its split tag and index (SSv2-Full's lists: ``train12``, ``test18``).
SPLIT_TAG = re.compile(r"(train|val|test)\d+")


class ClassNameTagError(ValueError):
    """A class name that is a split tag, where a prompt needs an action's name."""


def readable(name: str) -> str:
    """A class name as prompt words: underscores to spaces, CamelCase split
    (``ApplyEyeMakeup`` -> ``Apply Eye Makeup``, ``order_00_fwd`` -> ``order 00 fwd``)."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name.replace("_", " "))
    return " ".join(spaced.split())


class PromptNamesError(ValueError):
    """A ``prompt_names`` file that cannot be read as class name -> prompt words."""


def check_prompt(template: str) -> None:
    """Refuse a ``prompt`` template without exactly one ``{}`` slot for the class name:
    ``"a video of"`` gave every class one text embedding (the text term, 0.9 of the score,
    carried nothing, and a number was printed), ``"a video of {name}"`` failed at the first
    training step with ``error: name``."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:  # an unmatched brace
        fields = [f"<{err}>"]
    if fields not in ([""], ["0"]):
        raise ValueError(
            f"CLIP-FSAR prompt {template!r} must hold exactly one {{}} for the class name "
            f"(found {fields or 'none'}), e.g. prompt='a photo of {{}}'"
        )


def load_prompt_names(path: str) -> dict[str, str]:
    """The ``{class name: words}`` mapping of a JSON or YAML file."""
    import yaml

    try:
        table = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise PromptNamesError(f"CLIP-FSAR prompt_names {path!r} cannot be read: {err}") from None
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in table.items()
    ):
        raise PromptNamesError(
            f"CLIP-FSAR prompt_names {path!r} must map class names to non-empty words, e.g. "
            '{"test18": "Approaching something with your camera"}'
        )
    return table


def _refuse_tags(names: Sequence[str], prompt_names: str) -> None:
    """``ClassNameTagError`` for the names of ``names`` that are split tags."""
    tags = sorted({n for n in names if SPLIT_TAG.fullmatch(n)})
    if not tags:
        return
    where = f"the file {prompt_names!r} lacks them" if prompt_names else "no prompt_names"
    raise ClassNameTagError(
        f"clip-fsar: {len(tags)} class(es) are named by their split tags, not actions (e.g. "
        f"{tags[0]!r}; SSv2-Full's lists name classes so, and CLIP-FSAR's reference maps tags "
        f"to action names), so their prompts would say nothing ({where}): give a JSON file "
        "of every class's words, e.g. {\"" + tags[0] + '": "<the action>", ...}, as '
        '--hparams \'{"prompt_names": "names.json"}\' (eval, train) or hparams: '
        "{prompt_names: names.json} in a grid (run)"
    )


class _Block(nn.Module):
    """``x + Attn(LN(x))`` then ``x + FFN(x)`` over ``[N, L, D]``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, attn_drop: float, ffn_drop: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(attn_drop))
        self.ffn = nn.Sequential(
            nn.Linear(dim, mlp_dim),
            nn.GELU(),
            nn.Dropout(ffn_drop),
            nn.Linear(mlp_dim, dim),
            nn.Dropout(ffn_drop),
        )

    def forward(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        h = self.norm(x)

        def split(t: Tensor) -> Tensor:
            return t.view(n, length, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        attn = torch.softmax(q @ k.transpose(-1, -2) * (dim // self.heads) ** -0.5, -1)
        x = x + self.out((attn @ v).transpose(1, 2).reshape(n, length, dim))
        return x + self.ffn(x)


class TemporalTransformer(nn.Module):
    """``depth`` blocks over a sequence ``[N, L, D] -> [N, L, D]``."""

    def __init__(self, dim: int, *, heads: int, depth: int, mlp_dim: int, attn_drop: float,
                 ffn_drop: float) -> None:  # fmt: skip
        super().__init__()
        if dim % heads:
            raise ValueError(f"CLIP-FSAR: feature dim {dim} must be divisible by heads={heads}")
        self.blocks = nn.ModuleList(
            _Block(dim, heads, mlp_dim, attn_drop, ffn_drop) for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class CLIPFSAR(FewShotMethod):
    """CLIP-FSAR (Wang et al., IJCV 2023): text-modulated prototypes, OTAM matching and
    video–text matching of class-name prompts."""

    uses_class_names: ClassVar[bool] = True
    # models saved before merge_before existed modulated every support video
    legacy_hparams: ClassVar[dict[str, Any]] = {"merge_before": False}
    # the reference's per-dataset video–text loss weight (USE_CLASSIFICATION_VALUE)
    dataset_presets: ClassVar[dict[str, dict[str, Any]]] = {
        "hmdb51": {"text_loss_weight": 1.2},
        "ssv2-full": {"text_loss_weight": 3.0},
        "ssv2-small": {"text_loss_weight": 3.0},
    }
    CONTRACT_HPARAMS: ClassVar[dict[str, Any]] = {
        "text_tower": "tiny",
        "text_weights": "none",
        "mlp_dim": 64,
    }

    @dataclass
    class Config:
        """Hyper-parameters (reference values).

        Attributes:
            text_tower: open_clip text tower (``ViT-B-16``, ``ViT-L-14``; ``tiny`` for tests).
            text_weights: ``openai`` (Hugging Face cache; or another open_clip tag of
                ``text_tower``), ``none`` (random) or a file path.
            text_quick_gelu: the text tower's activation: required for a file path (``true``:
                OpenAI's weights and models fine-tuned from them; ``false``: GELU-trained ones
                such as LAION's); unset for a tag, which states its own (``openai``: QuickGELU).
            text_weights_id: what the text weights are, filled in when the tower is built
                (``file:<md5>:gelu``, ``open_clip:ViT-B-16.openai:quickgelu``): recorded with
                the other hyper-parameters, so a text checkpoint replaced at the same path
                gives other records and retrains; given (a checkpoint's hyper-parameters), the
                tower's must match it.
            prompt: template of the class-name prompt.
            heads, depth, mlp_dim: the temporal transformer (8 heads, 1 block, 2048).
            attn_dropout, ffn_dropout: its dropouts (0.2, 0.05).
            lam, eps: OTAM soft-min temperature and cosine denominator term (0.5, 0.01).
            text_loss_weight: weight of the video–text cross-entropy in training (1.5;
                the reference's HMDB51 configs 1.2, SSv2's 3.0: ``dataset_presets``).
            text_coeff: weight α of the text term in the evaluation score (0.9: the
                reference's ``TRAIN.COMBINE`` branch; its released configs leave COMBINE
                unset and score with the visual OTAM distance alone, which ``0`` gives).
            merge_before: above 1-shot, average each class's support frames before the
                temporal transformer, which then runs once per class with its text token
                (the reference's 5-shot configs, ``TRAIN.MERGE_BEFORE``); ``False`` modulates
                every support video and averages after (its path without the flag). Equal
                at 1-shot.
            prompt_names: a JSON or YAML file mapping class names to the words of their
                prompts (default: the name made readable). Needed where a split list names
                classes by split tag (SSv2-Full's ``test18``), which CLIP-FSAR's reference
                maps to action names itself.
            prompt_names_id: the file's md5, filled in when the head is built (recorded
                with the other hyper-parameters; given, the file's must match it).
        """

        text_tower: str = "ViT-B-16"
        text_weights: str = "openai"
        text_quick_gelu: bool | None = None
        text_weights_id: str = ""
        prompt: str = "a photo of {}"
        heads: int = 8
        depth: int = 1
        mlp_dim: int = 2048
        attn_dropout: float = 0.2
        ffn_dropout: float = 0.05
        lam: float = 0.5
        eps: float = 0.01
        text_loss_weight: float = 1.5
        text_coeff: float = 0.9
        merge_before: bool = True
        prompt_names: str = ""
        prompt_names_id: str = ""

    def __init__(self, **kwargs: Any) -> None:
        from fsarbench.features.text_towers import TextTowerWeightsError, create_text_tower

        super().__init__(**kwargs)
        c = self.config
        if not 0.0 <= c.text_coeff <= 1.0:
            raise ValueError(f"CLIP-FSAR text_coeff must lie in [0, 1], got {c.text_coeff}")
        check_prompt(c.prompt)
        self.tower = create_text_tower(  # not a Module
            c.text_tower, weights=c.text_weights, quick_gelu=c.text_quick_gelu
        )
        found = self.tower.weights_id
        if c.text_weights_id and c.text_weights_id != found:
            raise TextTowerWeightsError(
                f"CLIP-FSAR: the text weights {c.text_weights!r} are {found}, not the "
                f"{c.text_weights_id} this model was made with (replaced since?): pass the "
                f"weights it was trained with, or text_weights_id={found!r} to use these "
                "(the trained head then meets other text embeddings than in training)"
            )
        if c.prompt_names:  # one spelling of one file: "names.json" and its absolute path
            c = dataclasses.replace(c, prompt_names=str(Path(c.prompt_names).resolve()))
        self.prompt_table = load_prompt_names(c.prompt_names) if c.prompt_names else {}
        names_id = f"md5:{md5_file(c.prompt_names)}" if c.prompt_names else ""
        if c.prompt_names_id and c.prompt_names_id != names_id:
            raise PromptNamesError(
                f"CLIP-FSAR: the prompt names file {c.prompt_names!r} is {names_id or 'unset'},"
                f" not the {c.prompt_names_id} this model was made with: pass that file"
            )
        # the weights' identity joins the hyper-parameters: record id, training fingerprint
        self.config = c = dataclasses.replace(c, text_weights_id=found, prompt_names_id=names_id)
        self.text_cache: dict[str, Tensor] = {}
        d = self.feature_dim
        self.transformer = TemporalTransformer(
            d,
            heads=c.heads,
            depth=c.depth,
            mlp_dim=c.mlp_dim,
            attn_drop=c.attn_dropout,
            ffn_drop=c.ffn_dropout,
        )
        e = self.tower.embed_dim
        self.text_proj = nn.Identity() if e == d else nn.Linear(e, d)
        self.scale = nn.Parameter(torch.ones(()))

    @classmethod
    def backbone_hparams(cls, features: Mapping[str, Any]) -> dict[str, Any]:
        """The text tower of the frame backbone's CLIP model (``clip-vit-b16`` ->
        ``ViT-B-16``); random frame weights -> a random text tower; tiny -> tiny."""
        from fsarbench.features.vit_presets import VIT_PRESETS

        preset = VIT_PRESETS.get(str(features.get("backbone")))
        out: dict[str, Any] = {}
        if preset is not None and preset.text_tower is not None:
            out["text_tower"] = preset.text_tower
        if str(features.get("weights")) == "none":
            out["text_weights"] = "none"
        if features.get("tiny"):
            out.update(text_tower="tiny", text_weights="none")
        return out

    # -- text ---------------------------------------------------------------------------------
    def text_embeddings(self, class_names: list[list[str]], like: Tensor) -> Tensor:
        """``B`` lists of ``way`` names -> ``[B, way, D]`` (tower output, cached per name,
        then ``text_proj``), in ``like``'s dtype and device."""
        new = sorted({n for row in class_names for n in row} - set(self.text_cache))
        if new:
            _refuse_tags([n for n in new if n not in self.prompt_table], self.config.prompt_names)
            emb = self.tower.encode([self.config.prompt.format(self._words(n)) for n in new])
            self.text_cache.update(zip(new, emb))
        table = torch.stack([torch.stack([self.text_cache[n] for n in row]) for row in class_names])
        return self.text_proj(table.to(like.device, like.dtype))

    def _words(self, name: str) -> str:
        """What the prompt says for class ``name``: ``prompt_names``' words, else the name
        made readable."""
        return self.prompt_table.get(name) or readable(name)

    @classmethod
    def check_class_names(cls, config: Any, names: Sequence[str]) -> None:
        """A prompt without one ``{}`` slot, and split tags without words in
        ``prompt_names``, are refused before any work (the prompt was refused per cell,
        after the cells before it had trained)."""
        check_prompt(config.prompt)
        table = load_prompt_names(config.prompt_names) if config.prompt_names else {}
        _refuse_tags([n for n in names if n not in table], config.prompt_names)

    # -- the two halves -----------------------------------------------------------------------
    def encode(self, features: Tensor) -> dict[str, Tensor]:
        """``[N, T, D]`` -> ``{"frames": [N, T, D], "context": [N, T, D]}`` (the query-side
        transformer output; the support side needs its text token, added in ``match``)."""
        return {"frames": features, "context": self.transformer(features)}

    def match(
        self,
        support: dict[str, Tensor],
        support_labels: Tensor,
        query: dict[str, Tensor],
        way: int,
        *,
        class_names: list[list[str]] | None = None,
    ) -> MethodOutput:
        """Logits ``[B, Nq, way]``: visual (training) or combined (evaluation); extras
        ``text_logits [B, Nq, way]``, ``support_text_logits [B, Ns, way]``, ``visual``."""
        if class_names is None:
            raise ValueError(
                "clip-fsar needs the episode's class names (class_names=, B lists of way "
                "names): the fsarbench trainer and evaluator pass them; a direct call must too"
            )
        frames = support["frames"]
        text = self.text_embeddings(class_names, frames)  # [B, way, D]
        visual = -self._distances(support, support_labels, query, text, way)  # [B, Nq, way]
        text_q = self._text_logits(query["frames"], text)
        extras = {
            "text_logits": text_q,
            "support_text_logits": self._text_logits(frames, text),
            "visual": visual,
        }
        if self.training:
            return MethodOutput(logits=visual, extras=extras)
        t = float(self.seq_len)
        a = self.config.text_coeff
        combined = a * F.log_softmax(text_q, -1) + (1 - a) * F.log_softmax((t + visual) / t, -1)
        return MethodOutput(logits=combined, extras=extras)

    def _distances(self, support, support_labels, query, text, way) -> Tensor:
        """Bidirectional OTAM distance of each query to each text-modulated prototype."""
        frames = support["frames"]  # [B, Ns, T, D]
        b, ns, t, d = frames.shape
        weights = one_hot_weights(support_labels, way, frames.dtype)  # [B, way, Ns]
        if self.config.merge_before:  # class means, each modulated once with its token
            means = (weights @ frames.flatten(2)).view(b, way, t, d)
            seq = torch.cat([means, text[:, :, None]], 2).flatten(0, 1)  # [B*way, T+1, D]
            protos = self.transformer(seq)[:, :t].reshape(b, way, t, d)
        else:  # every support video modulated, then averaged
            token = text.gather(1, support_labels[..., None].expand(b, ns, d))  # [B, Ns, D]
            seq = torch.cat([frames, token[:, :, None]], 2).flatten(0, 1)  # [B*Ns, T+1, D]
            modulated = self.transformer(seq)[:, :t].reshape(b, ns, t, d)
            protos = (weights @ modulated.flatten(2)).view(b, way, t, d)

        def side(x: Tensor) -> dict[str, Tensor]:
            return {"features": x, "norms": torch.linalg.vector_norm(x, dim=-1)}

        dist = otam_cosine_distance(side(query["context"]), side(protos), self.config.eps)
        return bidirectional_otam(dist, self.config.lam)

    def _text_logits(self, frames: Tensor, text: Tensor) -> Tensor:
        """Cosine of each video's mean frame with each class text, times ``scale``:
        ``[B, N, T, D]``, ``[B, way, D]`` -> ``[B, N, way]``. In training the cosine's
        denominator is ``|x||y| + eps``, as the reference's ``cos_sim`` there; in evaluation
        both sides are normalised, as its scoring does."""
        video = frames.mean(2)
        if self.training:
            dots = video @ text.transpose(1, 2)
            norms = video.norm(dim=-1)[..., None] * text.norm(dim=-1)[:, None]
            return self.scale * dots / (norms + self.config.eps)
        video = F.normalize(video, dim=-1, eps=1e-6)
        return self.scale * video @ F.normalize(text, dim=-1, eps=1e-6).transpose(1, 2)

    # -- training -----------------------------------------------------------------------------
    def episode_loss(self, batch: EpisodeBatch) -> dict[str, Tensor]:
        """Cross-entropy of the visual logits plus the weighted video–text cross-entropy of
        the support and query videos."""
        if batch.query_labels is None:
            raise ValueError("training needs query_labels in the EpisodeBatch")
        out = self(batch)
        logits = torch.cat([out.extras["support_text_logits"], out.extras["text_logits"]], 1)
        labels = torch.cat([batch.support_labels, batch.query_labels], 1)
        return {
            "ce": F.cross_entropy(out.logits.flatten(0, 1), batch.query_labels.flatten()),
            "text": self.config.text_loss_weight
            * F.cross_entropy(logits.flatten(0, 1), labels.flatten()),
        }
