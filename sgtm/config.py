"""Hyper-parameters of SGTM (Saliency-Guided fine-grained Temporal Mask learning, MM'24).

Section numbers refer to the paper (``shared/seed/000_697fa3d31fbcf6eb.txt``). Values the paper
does not state are marked *unstated* with the choice made here (see docs/methods.md, section
"Choices the paper does not state").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["SGTMConfig", "MEAN_CE_STAGE1"]

#: Stage 1 as fsarbench trained Φ_cls before issue #16: ``A`` averaged over time, softmax
#: cross-entropy, unrectified class sum, PyTorch's random init, zero padding. It leaves
#: ``Σ_c A`` untrained: softmax cross-entropy's gradient sums to zero over classes, so the
#: class-sum direction of Φ_cls's last layer gets no gradient from the loss, and actionness is
#: a projection of the random initial weights moved only by weight decay and Adam's
#: per-coordinate scaling (on planted-window features it ranks background above the action,
#: AUROC 0.1-0.3). Registered as the variant ``sgtm-otam-meance``.
MEAN_CE_STAGE1: dict[str, Any] = {
    "saliency_pool": "mean",
    "saliency_loss": "ce",
    "saliency_rectify": "none",
    "saliency_init": "default",
    "saliency_padding": "zeros",
}


@dataclass
class SGTMConfig:
    """SGTM hyper-parameters.

    Attributes:
        matcher: registered fsarbench method doing the frame-level matching of eq. 7
            (Sec. 4.1: ``"otam"`` or ``"bimhm"``); created with ``fb.create_method``.
        matcher_hparams: hyper-parameters passed to the matcher (e.g. ``{"lam": 0.1}``).
        token_dim: P, the size of one token; a ``[T, D]`` video becomes ``T*D/P`` tokens
            (Sec. 3.2 "Encoder"). *Unstated*; ``None`` means ``D / tokens_per_frame``, which is
            P = 512 at the paper's D = 2048 (fits its 37.2 M parameters) and keeps the same
            token structure for other backbones (P = 128 for ResNet-18's D = 512).
        tokens_per_frame: tokens per frame when ``token_dim`` is ``None`` (4).
        num_heads: attention heads of every transformer layer (*unstated*; 8).
        mlp_ratio: hidden width of the transformer MLPs over P (*unstated*; ViT's 4).
        dropout: dropout inside the transformer layers (*unstated*; 0, as in MAE).
        residual_init_scale: factor on the initial weights of the last linear layer of every
            attention / MLP branch (*unstated*; 0.1 starts the matching branch near the
            identity, i.e. near the matcher on the input features; 1 is plain MAE xavier).
        use_encoder: apply Φ_enc (Sec. 3.2, eq. 3 and 6); False is Table 3's baseline.
        encoder_layers: transformer layers of Φ_enc (Sec. 4.1: 2).
        decoder_layers: transformer layers of the decoder (Sec. 4.1: 2).
        decoder_dim: decoder width; ``None`` means P with no projection (*unstated*).
        matching_layers: "shallow transformer layers" after Φ_enc in the matching branch
            (eq. 6); 2, the baseline of Sec. 4.3.4 ("ResNet50 followed by 2 Transformer layers").
        enc_pos_embed: positional embedding added before Φ_enc (eq. 3, 6), "learned" (ViT,
            default) or "sincos". *Unstated*; the decoder's is fixed sinusoidal (eq. 4).
        mask: mask strategy (``fsarbench_sgtm.masks.MASK_STRATEGIES``): "saliency" (the
            method: k highest and k lowest actionness masked), "random" (Table 3's TML),
            "top", "bottom", "middle" (Table 4), or "none" (no reconstruction branch).
        k: frames masked at each end by the saliency mask (Sec. 4.1: 2 of T=8); the number of
            masked frames is ``2k`` for every strategy. Set ``k`` or ``mask_ratio``, not both.
        mask_ratio: share of the T frames masked (Figure 4), rounded half up to a frame count.
            Neither ``k`` nor ``mask_ratio`` set means 50% (Sec. 4.3.6).
        lambda_recon: λ of eq. 8, the weight of L_recon (Sec. 4.1: 0.5; Table 5).
        recon_tokens: tokens the loss of eq. 5 averages over: "all" N' = T*D/P tokens (what eq.
            5 writes) or only "masked" ones (MAE's choice).
        detach_target: reconstruct detached features (*unstated*; keeps a trainable backbone
            from collapsing its features to make reconstruction easy).
        saliency_layers: temporal conv layers of Φ_cls (Sec. 3.2 eq. 1: "several"; 2).
        saliency_hidden: channels between the Φ_cls convolutions (*unstated*; 512).
        saliency_kernel: temporal kernel size of Φ_cls (*unstated*; 3, same padding).
        saliency_dropout: dropout between the Φ_cls convolutions (*unstated*; 0.5).
        saliency_fraction: share of all training steps given to stage 1, Φ_cls alone
            (Sec. 3.2 "two steps"; split *unstated*; 0.2). Stage 1 runs on top of the
            recipe's ``steps``, which stage 2 keeps whole: ``round(steps · f / (1 - f))``
            stage-1 steps, so variants without Φ_cls train their main stage as long.
        saliency_pool: how stage 1 pools ``A [T, C]`` to video scores ``[C]`` (*unstated*):
            "topk", the mean of each class's top-k frames (MIL, as in W-TALC / BaS-Net / UM /
            CoLA, where eq. 2 comes from; default) or "mean" over time.
        saliency_topk_ratio: share of the T frames top-k pooling keeps, ``k = max(1,
            ceil(ratio·T))`` (*unstated*; 1/8 as W-TALC / CoLA: k = 1 at T = 8).
        saliency_loss: stage-1 loss (*unstated*): "ce" softmax cross-entropy or "bce" one
            binary cross-entropy per class.
        saliency_rectify: "relu" ends Φ_cls with a ReLU, so ``A >= 0`` and eq. 2 sums
            positive class evidence only (CoLA's classifier; default); "softplus" the same
            without dead units; "none" leaves ``A`` signed, and ``Σ_c A`` is then dominated
            by the C-1 classes a frame is *not* (*unstated*).
        saliency_init: "zero_sum" centres the last layer's weights and bias over classes, so
            the class sum of its output starts at 0 (default; after the default ReLU,
            ``Σ_c A`` starts at ``½ Σ_c |A_c|``, a random function of the input until stage 1
            trains it); "off"
            centres them and sets every class's bias to -4 (each class starts with almost no
            evidence); "default" is PyTorch's init (*unstated*).
        saliency_padding: padding of the temporal convolutions, "replicate" (default: the
            first and last frames see no artificial zeros, which would bias their actionness)
            or "zeros" (*unstated*).
        recon_loss: eq. 5's per-token error: "mse", the mean of squared differences over the P
            values (what the text calls it), or "l2", the Euclidean norm
            ``||x̂_t - x_t||_2`` (what eq. 5 writes).
        support_score: a class's score above one shot (the same at 1-shot): "class_mean", the
            matcher's own rule (OTAM, Bi-MHM: minus the mean distance to the class's support
            videos, as in the reference code of both; default), or "nearest", minus the
            distance to the class's nearest support video (Sec. 3.2's inference sentence:
            "find the video in S that is most similar to q", used in training too).
    """

    matcher: str = "otam"
    matcher_hparams: dict[str, Any] = field(default_factory=dict)
    token_dim: int | None = None
    tokens_per_frame: int = 4
    num_heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    residual_init_scale: float = 0.1
    use_encoder: bool = True
    encoder_layers: int = 2
    decoder_layers: int = 2
    decoder_dim: int | None = None
    matching_layers: int = 2
    enc_pos_embed: Literal["learned", "sincos"] = "learned"
    mask: str = "saliency"
    k: int | None = None
    mask_ratio: float | None = None
    lambda_recon: float = 0.5
    recon_tokens: Literal["all", "masked"] = "all"
    detach_target: bool = True
    saliency_layers: int = 2
    saliency_hidden: int = 512
    saliency_kernel: int = 3
    saliency_dropout: float = 0.5
    saliency_fraction: float = 0.2
    saliency_pool: Literal["mean", "topk"] = "topk"
    saliency_topk_ratio: float = 0.125
    saliency_loss: Literal["ce", "bce"] = "ce"
    saliency_rectify: Literal["none", "relu", "softplus"] = "relu"
    saliency_init: Literal["default", "zero_sum", "off"] = "zero_sum"
    saliency_padding: Literal["zeros", "replicate"] = "replicate"
    recon_loss: Literal["mse", "l2"] = "mse"
    support_score: Literal["class_mean", "nearest"] = "class_mean"
