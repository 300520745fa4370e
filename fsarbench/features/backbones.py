"""Frame backbones: a name -> image encoder registry (``[B, 3, H, W] -> [B, D]``).

``list_backbones()`` names the built-in torchvision ResNets and the ViT presets of
:mod:`fsarbench.features.vit_presets` (CLIP ViT-B/16 and ViT-L/14, DINOv2 ViT-S/14 and
ViT-B/14); any timm model is available as ``timm:<model>``. ``create_backbone(name,
weights=...)`` takes ``"imagenet"`` (torchvision's ImageNet weights, read from the torch hub
cache when offline), ``"pretrained"`` (the backbone's own weights: ImageNet for ResNets, the
preset's tag for ViT presets, read from the Hugging Face cache when offline), ``"none"``
(random init, seeded) or a checkpoint path (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from fsarbench.features.vit_presets import TINY_DIMS, VIT_PRESETS, VitPreset
from fsarbench.io import md5_file

__all__ = [
    "Backbone",
    "BackboneSpec",
    "BackboneWeightsError",
    "UnknownBackboneError",
    "backbone_spec",
    "create_backbone",
    "effective_norm",
    "is_offline",
    "list_backbones",
    "load_checkpoint_state_dict",
    "torchvision_weights_path",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_STRIP_PREFIXES = ("module.", "backbone.")
_CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.", "head.fc.")
_DOWNLOAD_TIMEOUT_S = 20.0


class UnknownBackboneError(ValueError):
    """A backbone name that is neither registered nor ``timm:<model>``."""


class BackboneWeightsError(RuntimeError):
    """Weights that cannot be found or loaded; the message says which file to put where."""


class Backbone(nn.Module):
    """An image encoder ``[B, 3, H, W] -> [B, feature_dim]`` (global-average-pooled features).

    ``weights_id`` names the weights exactly (used in feature-cache keys); ``mean``/``std`` are
    the input normalisation the weights expect (inputs are 0-1 RGB before normalisation);
    ``norm`` names it in ``fsarbench.data.transforms.NORMS`` when the backbone fixes it (ViT
    presets: it then overrides a protocol's), else None (the protocol's norm applies).
    """

    def __init__(
        self,
        trunk: nn.Module,
        *,
        name: str,
        feature_dim: int,
        weights_id: str,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        input_size: int = 224,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.name = name
        self.feature_dim = int(feature_dim)
        self.weights_id = weights_id
        self.mean = mean
        self.std = std
        self.input_size = int(input_size)
        self.norm = norm

    def forward(self, images: Tensor) -> Tensor:
        """``images [B, 3, H, W]`` (normalised) -> ``[B, feature_dim]``."""
        out = self.trunk(images)
        return out.flatten(1)


@dataclass(frozen=True)
class _TorchvisionSpec:
    feature_dim: int
    imagenet: str  # torchvision weights enum member used for weights="imagenet"


_TORCHVISION: dict[str, _TorchvisionSpec] = {
    "resnet18": _TorchvisionSpec(512, "IMAGENET1K_V1"),
    "resnet34": _TorchvisionSpec(512, "IMAGENET1K_V1"),
    "resnet50": _TorchvisionSpec(2048, "IMAGENET1K_V1"),
}


def list_backbones() -> list[str]:
    """Registered backbone names; any timm model also works as ``timm:<model>``."""
    return sorted(_TORCHVISION) + sorted(VIT_PRESETS)


@dataclass(frozen=True)
class BackboneSpec:
    """What a registered backbone takes and gives, known without building it."""

    name: str
    input_size: int
    norm: str | None  # NORMS name the backbone fixes; None: the protocol's norm applies
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    description: str


def backbone_spec(name: str) -> BackboneSpec:
    """Input size, normalisation and feature dimension of registered backbone ``name``."""
    from fsarbench.data.transforms import NORMS

    if name in VIT_PRESETS:
        p = VIT_PRESETS[name]
        mean, std = NORMS[p.norm]
        return BackboneSpec(name, p.input_size, p.norm, mean, std, p.feature_dim, p.description)
    if name in _TORCHVISION:
        return BackboneSpec(
            name,
            224,
            None,
            IMAGENET_MEAN,
            IMAGENET_STD,
            _TORCHVISION[name].feature_dim,
            f"torchvision {name} (ImageNet IMAGENET1K_V1); normalisation: the protocol's",
        )
    raise UnknownBackboneError(f"unknown backbone {name!r}; choose one of {list_backbones()}")


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``FSAR_OFFLINE`` is set to a true value."""
    return any(
        os.environ.get(k, "").lower() in ("1", "true", "yes")
        for k in ("HF_HUB_OFFLINE", "FSAR_OFFLINE")
    )


_HUB_PROBE_TIMEOUT_S = 5.0


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub (``HF_ENDPOINT``) cannot be reached from here, or ``None``
    (reachable, or behind a proxy, which is not probed). Without a network huggingface_hub
    retries each request for about 50 s before it reads its cache, printing a line per try,
    so one connection attempt per process decides whether timm and open_clip go offline."""
    import urllib.request

    from huggingface_hub import constants

    if urllib.request.getproxies():
        return None
    url = urlparse(constants.ENDPOINT)
    if not url.hostname:  # a malformed HF_ENDPOINT: huggingface_hub names it itself
        return None
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=_HUB_PROBE_TIMEOUT_S).close()
    except OSError as err:
        return f"the Hub at {url.hostname}:{port} is unreachable ({err})"
    return None


def hub_offline() -> str | None:
    """Why the Hub is not to be contacted (offline set, or unreachable), or ``None``."""
    return "HF_HUB_OFFLINE/FSAR_OFFLINE set" if is_offline() else hub_unreachable()


def effective_norm(backbone: str, protocol_norm: str) -> str:
    """The pixel normalisation clips for ``backbone`` get: a backbone that fixes its own
    (ViT presets: CLIP's statistics for CLIP towers) overrides the protocol's, because
    those weights only work with it; other backbones take the protocol's ``norm``."""
    preset = VIT_PRESETS.get(backbone)
    return preset.norm if preset is not None else protocol_norm


def create_backbone(
    name: str, *, weights: str | Path = "imagenet", seed: int = 0, tiny: bool = False
) -> Backbone:
    """Build backbone ``name`` in eval mode.

    ``weights``: ``"imagenet"`` (torchvision ImageNet weights: the reference protocol uses
    ``IMAGENET1K_V1``; another torchvision enum member name such as ``"IMAGENET1K_V2"`` also
    works), ``"pretrained"`` (the backbone's own weights), ``"none"`` (random init drawn from
    ``seed``) or a checkpoint file path. ``tiny`` (ViT presets; random or a tiny checkpoint):
    the same architecture class with 2 blocks of width 32 and the preset's output dimension,
    for tests and CPU smoke runs.
    """
    vits = sorted(k for k, p in VIT_PRESETS.items() if p.arch == "vit")
    if tiny and name not in vits:
        raise UnknownBackboneError(
            f"tiny=True exists for the ViT presets {vits} only, not {name!r}"
            + (
                "; for a small random one use weights=none and a small crop"
                if name in VIT_PRESETS
                else ""
            )
        )
    if name in VIT_PRESETS:
        backbone = _create_preset(name, VIT_PRESETS[name], weights, seed, tiny)
    elif name.startswith("timm:"):
        backbone = _create_timm(name, weights, seed)
    elif name in _TORCHVISION:
        backbone = _create_torchvision(name, weights, seed)
    else:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; choose one of {list_backbones()} or 'timm:<model>'"
        )
    return backbone.eval()


@contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _create_torchvision(name: str, weights: str | Path, seed: int) -> Backbone:
    """Weights are resolved before the model is built, so missing files fail at once."""
    import torchvision

    spec = _TORCHVISION[name]
    kind = _weights_kind(weights)
    state: dict[str, Tensor] | None = None
    if kind == "none":
        weights_id = f"none:seed{seed}"
    elif kind == "file":
        state = load_checkpoint_state_dict(weights)
        weights_id = f"file:{md5_file(weights)}"
    else:
        named = str(weights).lower() in ("imagenet", "pretrained")
        member = spec.imagenet if named else str(weights).upper()
        state = _torchvision_state_dict(name, member)
        weights_id = f"torchvision:{name}.{member}"
    with _seeded(seed):
        model = torchvision.models.get_model(name, weights=None)
    model.fc = nn.Identity()
    if state is not None:
        _load_into(model, state, source=f"{name} weights {weights}")
    return Backbone(model, name=name, feature_dim=spec.feature_dim, weights_id=weights_id)


def _weights_kind(weights: str | Path) -> str:
    """``"none"``, ``"file"`` or ``"named"`` (a pretrained-weights name such as imagenet)."""
    text = str(weights)
    if text.lower() == "none":
        return "none"
    looks_like_path = os.sep in text or text.endswith((".pt", ".pth", ".bin"))
    if isinstance(weights, Path) or looks_like_path or Path(text).is_file():
        if Path(text).is_dir():
            raise BackboneWeightsError(
                f"weights {text} is a folder: give the weights file in it (timm's "
                "model.safetensors or a .pt/.pth state dict)"
            )
        if not Path(text).is_file():
            raise BackboneWeightsError(f"weights file {text} does not exist")
        return "file"
    return "named"


def _torchvision_weights(name: str, member: str):
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    try:
        return enum[member]
    except KeyError:
        valid = ["imagenet", "none", *(m.name for m in enum)]
        raise BackboneWeightsError(
            f"unknown weights {member!r} for {name}; use one of {valid} or a checkpoint path"
        ) from None


def torchvision_weights_path(name: str, member: str = "IMAGENET1K_V1") -> tuple[Path, str]:
    """Where the torch hub cache keeps torchvision weights ``name.member``, and their URL."""
    url = _torchvision_weights(name, member).url
    filename = os.path.basename(urlparse(url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename, url


def _torchvision_state_dict(name: str, member: str) -> dict[str, Tensor]:
    """Read the weights from the hub cache; download them only when online (short timeout)."""
    path, url = torchvision_weights_path(name, member)
    if not path.is_file():
        where = (
            f"put {path.name} (from {url}) at {path}, or pass --weights PATH "
            f"(a checkpoint file), or --weights none for random init"
        )
        if is_offline():
            raise BackboneWeightsError(
                f"offline (HF_HUB_OFFLINE/FSAR_OFFLINE set) and {name} {member} weights are "
                f"not in the torch hub cache: {where}"
            )
        _download(url, path, where)
    _check_hash_prefix(path, url)
    return load_checkpoint_state_dict(path)


_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


@functools.cache
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of ``path`` (cached per file size and modification time: read once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _check_hash_prefix(path: Path, url: str) -> None:
    """Refuse a hub-cache file whose sha256 does not start with the prefix its name carries
    (``resnet18-f37072fd.pth``), as torchvision's own loader does: a file copied there by
    hand (another member's weights, a fine-tuned ResNet) was keyed and recorded as the
    ImageNet weights, and a cache of one file was served for another."""
    found = _HASH_IN_NAME.search(path.name)
    if found is None:
        return
    stat = path.stat()
    actual = _sha256_of(path, stat.st_size, stat.st_mtime_ns)
    if not actual.startswith(found.group(1)):
        raise BackboneWeightsError(
            f"{path} is not the file {url} names: its sha256 starts {actual[: len(found.group(1))]}"
            f", the name says {found.group(1)} (copied by hand from another file?). Put the "
            f"published file there (from {url}), or pass the file as --weights PATH (its "
            "features are then keyed by its own digest)"
        )


def _download(url: str, path: Path, where: str) -> None:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=None, progress=True)
    except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors
        path.unlink(missing_ok=True)
        raise BackboneWeightsError(f"could not download {url} ({err}); {where}") from None
    finally:
        socket.setdefaulttimeout(previous)


def load_checkpoint_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``path`` (``weights_only=True``): a plain state dict or one under
    ``"state_dict"``/``"model"``; ``module.``/``backbone.`` prefixes are stripped."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors have many types
        raise BackboneWeightsError(
            f"cannot read checkpoint {path} as a PyTorch state dict ({type(err).__name__}: "
            "truncated, corrupt, not a torch.save file, or holding Python objects besides "
            "tensors, which are never unpickled); give the backbone's state dict or timm's "
            "model.safetensors"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise BackboneWeightsError(f"{path} holds no state dict of tensors")
    return {_strip(k): v for k, v in obj.items()}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _load_into(model: nn.Module, state: Mapping[str, Tensor], *, source: str) -> None:
    """Load ``state``; classifier weights the trunk no longer has are ignored, anything else
    missing or unexpected is an error naming the keys."""
    state = {
        k: v
        for k, v in state.items()
        if not (k.startswith(_CLASSIFIER_PREFIXES) and k not in model.state_dict())
    }
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        first = str(err).splitlines()[1:3]
        raise BackboneWeightsError(
            f"weights from {source} do not fit the backbone: "
            f"{' '.join(line.strip() for line in first)}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise BackboneWeightsError(
            f"weights from {source} do not fit the backbone: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def _create_timm(name: str, weights: str | Path, seed: int) -> Backbone:
    import timm

    model_name = name.removeprefix("timm:")
    if not timm.is_model(model_name):
        raise UnknownBackboneError(f"timm has no model {model_name!r} (see timm.list_models())")
    kind = _weights_kind(weights)
    if kind == "named" and str(weights).lower() not in ("imagenet", "pretrained"):
        raise BackboneWeightsError(
            f"unknown weights {weights!r} for {name}; use 'pretrained', 'none' or a checkpoint path"
        )
    factory: Callable[..., nn.Module] = timm.create_model
    with _seeded(seed):
        if kind == "named":
            model = _timm_pretrained(factory, model_name)
            weights_id = f"timm:{model_name}.{model.pretrained_cfg.get('tag') or 'default'}"
        else:
            model = factory(model_name, pretrained=False, num_classes=0)
            weights_id = f"none:seed{seed}"
    if kind == "file":
        _load_into(model, load_checkpoint_state_dict(weights), source=str(weights))
        weights_id = f"file:{md5_file(weights)}"
    cfg = model.pretrained_cfg
    return Backbone(
        model,
        name=name,
        feature_dim=model.num_features,
        weights_id=weights_id,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
    )


def _timm_pretrained(
    factory: Callable[..., nn.Module], model_name: str, hint: str = "", **kwargs
) -> nn.Module:
    """timm's pretrained model; with FSAR_OFFLINE/HF_HUB_OFFLINE the Hub is not contacted."""
    kwargs.setdefault("num_classes", 0)
    hint = hint or (
        "with HF_HUB_OFFLINE=1 they must be in the Hugging Face cache "
        "(HF_HOME, default ~/.cache/huggingface), or pass --weights PATH"
    )
    offline = hub_offline()
    try:
        with _hub_offline(offline is not None):
            return factory(model_name, pretrained=True, **kwargs)
    except Exception as err:  # hub errors come from several libraries
        why = f"offline: {offline}, so only the cache was read; " if offline else ""
        raise BackboneWeightsError(
            f"cannot load pretrained timm weights for {model_name} ({why}{type(err).__name__}: "
            f"{err}); {hint}"
        ) from None


def _create_preset(name: str, preset: VitPreset, weights: str | Path, seed: int, tiny: bool):
    """A ViT preset (see :mod:`fsarbench.features.vit_presets`); weights ``"pretrained"`` or
    the preset's tag (from the Hugging Face cache), ``"none"`` or a checkpoint path."""
    import timm

    kind = _weights_kind(weights)
    if kind == "named" and str(weights).lower() not in ("pretrained", preset.tag):
        raise BackboneWeightsError(
            f"unknown weights {weights!r} for {name}; use 'pretrained' (= {preset.tag}), "
            "'none' or a checkpoint path"
        )
    if tiny and kind == "named":
        raise BackboneWeightsError(
            f"tiny {name} has no pretrained weights: pass weights=none (or a tiny checkpoint)"
        )
    kwargs = _preset_kwargs(preset, tiny)
    with _seeded(seed):
        if kind == "named":
            model = _timm_pretrained(
                timm.create_model,
                f"{preset.timm_model}.{preset.tag}",
                preset.cache_hint(),
                **kwargs,
            )
            weights_id = f"timm:{preset.timm_model}.{preset.tag}"
        else:
            model = timm.create_model(preset.timm_model, pretrained=False, **kwargs)
            weights_id = f"none:seed{seed}" + (":tiny" if tiny else "")
    if kind == "file":
        state = load_checkpoint_state_dict(weights)
        if preset.arch == "resnet":  # a CLIP checkpoint (OpenAI or open_clip keys) converts
            from timm.models.byobnet import checkpoint_filter_fn

            state = checkpoint_filter_fn(state, model)
        _load_into(model, state, source=str(weights))
        weights_id = f"file:{md5_file(weights)}"
    spec = backbone_spec(name)
    return Backbone(
        model,
        name=name,
        feature_dim=preset.feature_dim,
        weights_id=weights_id,
        mean=spec.mean,
        std=spec.std,
        input_size=preset.input_size,
        norm=preset.norm,
    )


def _preset_kwargs(preset: VitPreset, tiny: bool) -> dict:
    """timm ``create_model`` arguments of ``preset``: its head's output size and input size
    (a ViT also interpolates its position embedding at other sizes and pads odd sides; a
    ``ByobNet``'s attention pool resamples its own)."""
    kwargs = {
        "num_classes": preset.feature_dim if (preset.head or tiny) else 0,
        "img_size": preset.input_size,
    }
    if preset.arch == "vit":
        kwargs.update(dynamic_img_size=True, dynamic_img_pad=True, **(TINY_DIMS if tiny else {}))
    return kwargs


@contextmanager
def _hub_offline(offline: bool):
    """Switch huggingface_hub to offline mode for the block when ``offline``."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous
