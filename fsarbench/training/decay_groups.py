"""Which parameters train without weight decay (``Recipe.decay_exempt``).

``alibaba``: as alibaba-mmai-research's ``construct_optimizer`` (HyRSM's and CLIP-FSAR's code
base) groups them. It matches parameter *names*: a name holding ``bn`` or ``norm`` gets
``BN.WEIGHT_DECAY`` (0.0), every other one ``OPTIMIZER.WEIGHT_DECAY``; in both models every
name starts with ``head.``, so the embedding and head groups add nothing. Here the rule is
stated by module type, with the two places where those names say otherwise written out:

- the head's normalisation layers (LayerNorm, BatchNorm) are exempt: all are named ``norm``
  or ``layer_norm`` there;
- the backbone's BatchNorms are exempt, except those on a projection shortcut (torchvision's
  ``downsample.1``, timm's ``shortcut.conv.bn``) and torchvision ResNet's stem BatchNorm,
  which HyRSM's ``nn.Sequential(*children[:-1])`` renames ``1``;
- the backbone's LayerNorms (CLIP ViT's ``ln_*``) and every embedding (``positional_embedding``,
  ``class_embedding``: "embedding" does not hold "embd") keep their decay.

Checked parameter by parameter against the reference models built from its code: HyRSM on a
ResNet-50 (100 of 175 tensors exempt) and CLIP-FSAR on CLIP's RN50 (104 of 186).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn

__all__ = ["DECAY_EXEMPTIONS", "decay_exempt_parameters"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_BATCH_NORM = nn.modules.batchnorm._BatchNorm


def _alibaba(model: nn.Module) -> Iterator[nn.Parameter]:
    backbone, head = _parts(model)
    for name, module in backbone.named_modules() if backbone is not None else ():
        shortcut = ".downsample." in f".{name}." or ".shortcut." in f".{name}."
        stem = name == "trunk.bn1"  # torchvision ResNet's stem (the reference's "1")
        if isinstance(module, _BATCH_NORM) and not (shortcut or stem):
            yield from module.parameters(recurse=False)
    for module in head.modules():
        if isinstance(module, _NORMS):
            yield from module.parameters(recurse=False)


def _parts(model: nn.Module) -> tuple[nn.Module | None, nn.Module]:
    """``(backbone, head)`` of a finetune-track model, ``(None, model)`` of a frozen one."""
    from fsarbench.training.video_method import VideoMethod

    if isinstance(model, VideoMethod):
        return model.backbone, model.inner
    return None, model


#: rule name -> the parameters of a model it exempts
DECAY_EXEMPTIONS: dict[str, Callable[[nn.Module], Iterator[nn.Parameter]]] = {
    "alibaba": _alibaba,
}


def decay_exempt_parameters(model: nn.Module, rule: str) -> set[int]:
    """``id``s of the parameters of ``model`` that ``rule`` trains without weight decay
    (none under ``"none"``)."""
    if rule == "none":
        return set()
    return {id(p) for p in DECAY_EXEMPTIONS[rule](model)}
