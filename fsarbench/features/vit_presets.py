"""Named frame encoders of the CLIP era: CLIP ViT-B/16 and ViT-L/14 image towers, CLIP's RN50
image tower (the backbone of CLIP-FSAR's released configs), DINOv2 ViT-S/14 and ViT-B/14, all
built through timm.

timm is the path rather than open_clip because it is already fsarbench's dependency, it builds
every one of these towers with the same ``VisionTransformer`` class (one code path for
``train_blocks``, activation checkpointing and checkpoints), it serves both families from the
same Hugging Face repositories open_clip itself reads (``timm/vit_base_patch16_clip_224.openai``)
and it is released monthly. open_clip is used only for CLIP's *text* tower (``clip-fsar``).

The CLIP presets are timm's ``*_clip_quickgelu_*`` architectures: OpenAI trained CLIP with
QuickGELU (``x * sigmoid(1.702 x)``), and timm's plain ``vit_*_clip_224`` models use GELU,
which runs the OpenAI weights as another network (timm's own pretrained config says so). The
QuickGELU variants read the same Hugging Face repositories, so no other download is needed.
Every CLIP preset build uses them (pretrained, random, tiny or a checkpoint file), so a
preset is one network whatever its weights.

CLIP RN50 is timm's ``resnet50_clip`` (OpenAI's modified ResNet-50: a three-convolution stem,
anti-aliased average-pool downsampling and an attention-pooling head whose projection gives
1024-d features in the joint space); timm converts OpenAI-format checkpoints to it, and
``tests/test_clip_rn50.py`` checks it against open_clip's ``ModifiedResNet`` (the OpenAI
code) on the same weights. It has no ``tiny`` variant and no transformer blocks
(``train_blocks`` 0 only); its attention pool resamples its position table at other sizes.

Each preset states its input size, normalisation and feature dimension. CLIP presets keep
timm's ``head``: it is CLIP's image projection, so the features live in the joint image-text
space (512-d for ViT-B/16, 768-d for ViT-L/14) where class-name prompts can be compared with
them. DINOv2 presets have no head (class-token features, 384-d / 768-d) and run at 224 px
(16x16 patches; timm resamples the 518-px position embedding on load).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import nn

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "TINY_DIMS",
    "VitPreset",
    "VIT_PRESETS",
    "tail_parameters",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The test-only ``tiny`` variant: the preset's architecture class with 2 blocks of width 32,
#: average-pooled (a random class token barely depends on the image).
TINY_DIMS = {"depth": 2, "embed_dim": 32, "num_heads": 2, "global_pool": "avg"}


@dataclass(frozen=True)
class VitPreset:
    """A named ViT frame encoder.

    Attributes:
        timm_model: timm architecture name; ``tag``: its pretrained tag (``model.tag``).
        input_size: square input side in pixels the weights expect.
        norm: name in ``fsarbench.data.transforms.NORMS`` of its input normalisation.
        feature_dim: output dimension D of ``[B, 3, H, W] -> [B, D]``.
        head: keep timm's head (CLIP's image projection into the joint space).
        text_tower: open_clip model name of the matching CLIP text tower (None: no text).
        description: one line for ``list backbones``.
        arch: ``vit`` (timm ``VisionTransformer``: tiny variant, ``train_blocks``,
            block-by-block checkpointing) or ``resnet`` (timm ``ByobNet``: none of those).
    """

    timm_model: str
    tag: str
    input_size: int
    norm: str
    feature_dim: int
    head: bool
    text_tower: str | None
    description: str
    arch: Literal["vit", "resnet"] = "vit"

    @property
    def hf_repo(self) -> str:
        """The Hugging Face repository timm (and open_clip) read the weights from: timm's
        pretrained config of ``timm_model.tag`` names it (the QuickGELU variants of the CLIP
        towers read the same repository as the plain ones: ``timm/vit_base_patch16_clip_224.
        openai``)."""
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(f"{self.timm_model}.{self.tag}")
        hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        return hub.rstrip("/") if hub else f"timm/{self.timm_model}.{self.tag}"

    def cache_hint(self) -> str:
        """Where the weights must be for an offline run (the message of a missing file)."""
        from huggingface_hub import constants

        folder = Path(constants.HF_HUB_CACHE) / ("models--" + self.hf_repo.replace("/", "--"))
        return (
            f"the Hugging Face repository {self.hf_repo} must be in {folder} "
            f"(on a machine with network: 'huggingface-cli download {self.hf_repo}', then copy "
            "that folder), or pass weights=PATH (a checkpoint of the timm model), or "
            "weights=none for random init"
        )


VIT_PRESETS: dict[str, VitPreset] = {
    "clip-vit-b16": VitPreset(
        "vit_base_patch16_clip_quickgelu_224",
        "openai",
        224,
        "clip",
        512,
        True,
        "ViT-B-16",
        "CLIP ViT-B/16 image tower (OpenAI weights), projected into CLIP's joint space",
    ),
    "clip-vit-l14": VitPreset(
        "vit_large_patch14_clip_quickgelu_224",
        "openai",
        224,
        "clip",
        768,
        True,
        "ViT-L-14",
        "CLIP ViT-L/14 image tower (OpenAI weights), projected into CLIP's joint space",
    ),
    "clip-rn50": VitPreset(
        "resnet50_clip",
        "openai",
        224,
        "clip",
        1024,
        True,
        "RN50",
        "CLIP RN50 image tower (OpenAI weights; attention pooling), projected into CLIP's "
        "joint space: CLIP-FSAR's released configs",
        arch="resnet",
    ),
    "dinov2-vit-s14": VitPreset(
        "vit_small_patch14_dinov2",
        "lvd142m",
        224,
        "imagenet",
        384,
        False,
        None,
        "DINOv2 ViT-S/14 (LVD-142M), class token, run at 224 px",
    ),
    "dinov2-vit-b14": VitPreset(
        "vit_base_patch14_dinov2",
        "lvd142m",
        224,
        "imagenet",
        768,
        False,
        None,
        "DINOv2 ViT-B/14 (LVD-142M), class token, run at 224 px",
    ),
}


class TrainBlocksError(ValueError):
    """``train_blocks`` asked of a backbone without transformer blocks, or out of range."""


def tail_parameters(trunk: nn.Module, train_blocks: int) -> list[nn.Parameter]:
    """The parameters of the last ``train_blocks`` transformer blocks of a timm
    ``VisionTransformer`` and of every layer after them (final ``norm``, ``fc_norm`` and
    ``head``: CLIP's projection); ``train_blocks=0`` means every parameter."""
    from timm.models.vision_transformer import VisionTransformer

    if train_blocks == 0:
        return list(trunk.parameters())
    if not isinstance(trunk, VisionTransformer):
        raise TrainBlocksError(
            f"train_blocks={train_blocks} needs a ViT backbone (e.g. clip-vit-b16); "
            f"{type(trunk).__name__} has no transformer blocks: use train_blocks=0"
        )
    depth = len(trunk.blocks)
    if not 0 < train_blocks <= depth:
        raise TrainBlocksError(
            f"train_blocks must lie in 0..{depth} for this ViT, got {train_blocks}"
        )
    tail = [*trunk.blocks[depth - train_blocks :], trunk.norm, trunk.fc_norm, trunk.head]
    return [p for module in tail for p in module.parameters()]
