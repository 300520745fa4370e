"""CLIP text towers through open_clip: class-name prompts -> ``[N, E]`` text embeddings.

``create_text_tower(name, weights=...)``: ``name`` is an open_clip model name whose text half
matches a CLIP image preset (``ViT-B-16`` for ``clip-vit-b16``, ``ViT-L-14`` for
``clip-vit-l14``, ``RN50`` for ``clip-rn50``) or ``tiny`` (one block of width 32, random, for
tests); ``weights`` is ``openai`` or another open_clip pretrained tag of ``name`` (from the
Hugging Face cache, where open_clip and timm keep it), ``none`` (random, seeded) or the path of
an open_clip checkpoint.
The tower is frozen (inference only): its embeddings depend on the class name alone, so
callers cache them per name.

Activation: OpenAI trained CLIP with QuickGELU (so did MetaCLIP and DFN), open_clip's LAION
and DataComp trainings with GELU, and the same weights under the other activation are another
network. A tag takes the activation open_clip's pretrained config states for it
(``quick_gelu``); a checkpoint file does not say, so ``quick_gelu=True``/``False`` must be
given for one (``TextTowerWeightsError`` otherwise). ``none`` is open_clip's architecture
(GELU) unless ``quick_gelu`` says otherwise; ``tiny`` is QuickGELU unless it says otherwise.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from fsarbench.features.backbones import BackboneWeightsError, _hub_offline, _seeded, hub_offline
from fsarbench.io import md5_file

__all__ = ["TEXT_TOWERS", "TextTower", "TextTowerWeightsError", "create_text_tower"]

#: open_clip names of the text towers of the CLIP image presets, and ``tiny`` (tests).
TEXT_TOWERS = ("ViT-B-16", "ViT-L-14", "RN50", "tiny")
_TINY_EMBED = 32
_HF_FILES = ("open_clip_pytorch_model.bin", "open_clip_model.safetensors")


class TextTowerWeightsError(BackboneWeightsError):
    """Text-tower weights that cannot be found; the message says which file to put where."""


@dataclass
class TextTower:
    """A frozen CLIP text encoder (``encode(texts) -> [N, embed_dim]`` float32, CPU)."""

    model: nn.Module
    tokenizer: object
    name: str
    weights_id: str
    embed_dim: int

    @torch.no_grad()
    def encode(self, texts: list[str]) -> Tensor:
        """``len(texts)`` prompts -> ``[N, embed_dim]`` unnormalised text embeddings."""
        tokens = self.tokenizer(texts)
        return self.model.encode_text(tokens).float()


def create_text_tower(
    name: str, *, weights: str = "openai", seed: int = 0, quick_gelu: bool | None = None
) -> TextTower:
    """The text tower ``name`` (see the module docstring) in eval mode, frozen; one instance
    per arguments is shared (read-only) by every head that asks for it, and for a checkpoint
    file per state of the file (its size, modification time and inode: a file replaced at
    the same path is read again). ``quick_gelu``: the activation (see the module docstring;
    required for a checkpoint file). ``weights_id`` names the weights and the activation
    (``open_clip:ViT-B-16.openai:quickgelu``, ``file:<md5>:gelu``): it is what a record of a
    method using the tower names (clip-fsar's ``text_weights_id``)."""
    stamp = _file_stamp(weights) if _is_path(weights) else None
    return _create_text_tower(name, weights, seed, quick_gelu, stamp)


def _file_stamp(path: str) -> tuple[int, int, int] | None:
    """``(size, mtime_ns, inode)`` of ``path``; None when it cannot be read (the build then
    fails with the reader's message)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


#: What open_clip raises on a corrupt checkpoint (the unpickler's IndexError, EOFError) or
#: another model's (its AssertionError on a changed width, torch's RuntimeError on shapes).
_UNREADABLE = (RuntimeError, ValueError, IndexError, KeyError, AssertionError, EOFError, OSError)


@functools.lru_cache(maxsize=4)
def _create_text_tower(
    name: str,
    weights: str,
    seed: int,
    quick_gelu: bool | None,
    stamp: tuple[int, int, int] | None,  # part of the cache key only
) -> TextTower:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    if name not in TEXT_TOWERS:
        raise ValueError(f"unknown text tower {name!r}; choose one of {list(TEXT_TOWERS)}")
    if name == "tiny":
        if weights != "none":
            raise TextTowerWeightsError("the tiny text tower has random weights only: weights=none")
        quick = True if quick_gelu is None else quick_gelu
        model, weights_id = _tiny(seed, quick), f"none:seed{seed}:tiny"
    elif weights == "none":
        quick = bool(quick_gelu)
        with _seeded(seed):
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick)
        weights_id = f"none:seed{seed}"
    else:
        if _is_path(weights):
            path, quick = Path(weights), _file_quick_gelu(weights, quick_gelu)
            if not path.is_file():
                what = "is a folder" if path.is_dir() else "does not exist"
                raise TextTowerWeightsError(
                    f"text weights file {path} {what}: give an open_clip checkpoint of the "
                    f"{name} model (open_clip_pytorch_model.bin)"
                )
        else:
            quick = _tag_quick_gelu(name, weights, quick_gelu)
            path = _cached_file(name, weights)
        with _seeded(seed):
            try:
                model = open_clip.create_model(name, pretrained=str(path), force_quick_gelu=quick)
            except _UNREADABLE as err:  # a corrupt file or another model's: no traceback
                raise TextTowerWeightsError(
                    f"cannot load {path} as an open_clip checkpoint of the {name} model "
                    f"({type(err).__name__}: {err}); give the {name} model's "
                    "open_clip_pytorch_model.bin"
                ) from err
        weights_id = (
            f"open_clip:{name}.{weights}" if not _is_path(weights) else f"file:{md5_file(path)}"
        )
    weights_id += ":quickgelu" if quick else ":gelu"
    model.visual = None  # the image half is not needed (timm serves the image towers)
    model.eval().requires_grad_(False)
    tokenizer = SimpleTokenizer(context_length=77)  # CLIP's BPE, bundled with open_clip
    embed = int(model.text_projection.shape[1])
    return TextTower(model, tokenizer, name, weights_id, embed)


#: Forget every built tower (tests).
create_text_tower.cache_clear = _create_text_tower.cache_clear  # type: ignore[attr-defined]


def _is_path(weights: str) -> bool:
    return os.sep in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors"))


def _act(quick: bool) -> str:
    return "QuickGELU" if quick else "GELU"


def _tag_quick_gelu(name: str, tag: str, asked: bool | None) -> bool:
    """The activation open_clip's pretrained config states for ``name``/``tag`` (QuickGELU:
    OpenAI's weights); ``asked`` must agree with it."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg or not cfg.get("hf_hub"):
        raise TextTowerWeightsError(
            f"open_clip has no weights {tag!r} for {name}; use 'openai', 'none' or a file path"
        )
    quick = bool(cfg.get("quick_gelu"))
    if asked is not None and asked != quick:
        raise TextTowerWeightsError(
            f"the {name} text weights {tag!r} were trained with {_act(quick)} (open_clip's "
            f"pretrained config); text_quick_gelu={str(asked).lower()} would compute another "
            "network: leave text_quick_gelu unset for a named tag"
        )
    return quick


def _file_quick_gelu(path: str, asked: bool | None) -> bool:
    """A checkpoint file does not say its activation: the caller must."""
    if asked is None:
        raise TextTowerWeightsError(
            f"the text tower's activation cannot be read from the checkpoint {path}: say "
            "which it was trained with, text_quick_gelu=true (OpenAI's CLIP weights and models "
            "fine-tuned from them) or text_quick_gelu=false (open_clip's LAION, DataComp and "
            "other GELU-trained weights); the wrong one computes another network"
        )
    return asked


@functools.cache
def _tiny_cfgs():
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)
    vision = CLIPVisionCfg(layers=1, width=32, patch_size=16, image_size=32, head_width=16)
    return text, vision


def _tiny(seed: int, quick_gelu: bool) -> nn.Module:
    from open_clip.model import CLIP

    text, vision = _tiny_cfgs()
    with _seeded(seed):
        return CLIP(embed_dim=_TINY_EMBED, vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu)


def _cached_file(name: str, tag: str) -> Path:
    """The open_clip checkpoint of ``name``/``tag`` in the Hugging Face cache; downloaded when
    online, else an error naming the folder it must be in."""
    import open_clip
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(name, tag)  # checked by _tag_quick_gelu
    repo = cfg["hf_hub"].rstrip("/")
    for filename in _HF_FILES:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    folder = Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))
    where = (
        f"put {_HF_FILES[0]} of the Hugging Face repository {repo} into {folder} (on a machine "
        f"with network: 'huggingface-cli download {repo} {_HF_FILES[0]}', then copy that "
        "folder), or pass text_weights=PATH (an open_clip checkpoint), or text_weights=none"
    )
    offline = hub_offline()
    if offline:
        raise TextTowerWeightsError(
            f"offline: {offline}; the {name} text tower is not cached: {where}"
        )
    try:
        with _hub_offline(False):
            return Path(hf_hub_download(repo, _HF_FILES[0]))
    except Exception as err:  # hub errors come from several libraries
        raise TextTowerWeightsError(f"could not download {repo} ({err}); {where}") from None
