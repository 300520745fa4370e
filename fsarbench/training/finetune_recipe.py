"""Finetune-track recipes: the options of the video pipeline and the optimiser recipe, stated
in ``finetune_recipes.yaml`` (default -> method -> dataset layers) and recorded with results."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from fsarbench.config import (
    ConfigError,
    build_config,
    check_names,
    check_range,
    config_to_dict,
    load_yaml,
)
from fsarbench.features.backbones import effective_norm
from fsarbench.training.recipe import Recipe, check_overrides_apply, recipe_layer, settle_shot

__all__ = [
    "FINETUNE_RECIPES_FILE",
    "FinetuneOptions",
    "FinetuneRecipe",
    "finetune_recipe",
    "options_to_dict",
]

FINETUNE_RECIPES_FILE = "finetune_recipes.yaml"


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FinetuneOptions:
    """What the finetune track adds to an episodic :class:`Recipe`.

    Attributes:
        backbone, weights: ``create_backbone`` arguments (``weights="none"``: seeded random).
        protocol: the protocol (``fsarbench.data.protocols``) that sets the samplers,
            transforms, ``flip`` and ``norm`` below for the dataset; an ``--option`` of one
            of those fields overrides the protocol (and is recorded).
        frames: T, frames per clip; ``train_sampler``/``test_sampler``: names of
            ``fsarbench.data.sampling.SAMPLERS``.
        short: videos with fewer than T frames: ``drop`` leaves them out (recorded in
            ``skipped_videos`` as too short; TRX's rule and the frozen track's), ``repeat``
            stretches them by repeating frames.
        train_transform, test_transform: presets of ``fsarbench.data.transforms``;
            ``resize``/``crop`` override their sizes (0 keeps the preset's).
        flip: random horizontal flip of training clips (``"query"``: of the query clips
            only, as HyRSM's few-shot loader does); norm: pixel normalisation.
        color_jitter: HyRSM's colour jitter of training clips (``"query"``: of the query
            clips only, its loader's ``SUPPORT_QUERY_DIFF``; ``True``: every clip), drawn by
            the decode workers and applied on the device before the normalisation
            (:mod:`fsarbench.data.color_jitter`); left out of the recipe's dict while
            ``False``.
        bn: ``train`` (the references') normalises, in training, each episode's support
            clips and its query clips with their own batch statistics (one backbone call each,
            as TRX, HyRSM and CLIP-FSAR call theirs) and updates the running statistics the
            evaluation uses; ``frozen`` keeps the backbone's BatchNorm statistics (eval mode).
        train_backbone: ``last`` trains the backbone in the last stage only (earlier
            stages, e.g. SGTM's saliency classifier, train the head's parameters alone);
            ``all`` trains it in every stage.
        amp, channels_last: mixed precision (bf16, else fp16 + scaler) and channels-last
            memory format; both apply on CUDA only.
        checkpoint_backbone: recompute backbone activations in backward (less memory; ViTs
            checkpoint block by block).
        train_blocks: ViT backbones: fine-tune only the last N transformer blocks and the
            layers after them (final norm, CLIP's projection); the rest stays frozen.
            0 trains the whole backbone.
        tiny: ViT presets: the tiny random test architecture (``weights=none``).
        frame_chunk: frames per backbone call (0 = all frames of the batch at once).
        eval_chunk: videos decoded and encoded together at evaluation.
        workers: decoding processes per rank; ``None``: 2 on the CPU, on CUDA the node's
            spare cores shared among its ranks (2 to 12; see
            :func:`fsarbench.data.workers.default_workers`).
    """

    backbone: str = "resnet50"
    weights: str = "imagenet"
    protocol: str = "seed"
    frames: int = 8
    short: Literal["drop", "repeat"] = "drop"
    train_sampler: str = "tsn"
    test_sampler: str = "tsn"
    train_transform: str = "seed-train"
    test_transform: str = "seed-test"
    resize: int = 0
    crop: int = 0
    flip: bool | Literal["query"] = True
    norm: str = "imagenet"
    color_jitter: bool | Literal["query"] = False
    bn: Literal["frozen", "train"] = "train"
    train_backbone: Literal["last", "all"] = "last"
    amp: bool = True
    channels_last: bool = True
    checkpoint_backbone: bool = False
    train_blocks: int = 0
    tiny: bool = False
    frame_chunk: int = 0
    eval_chunk: int = 64
    workers: int | None = None

    def __post_init__(self) -> None:
        if str(self.weights).lower() == "none":  # 'None' (or None) built a random image tower
            object.__setattr__(self, "weights", "none")  # and asked clip-fsar for OpenAI text
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"options.workers = {self.workers} must be >= 0 (or null: auto)")
        for name in ("frames", "eval_chunk"):
            check_range("options", name, getattr(self, name), 1)
        for name in ("resize", "crop", "train_blocks", "frame_chunk"):  # 0: the default
            check_range("options", name, getattr(self, name), 0)
        self._check_names()
        self._check_crop()

    def _check_names(self) -> None:
        """Samplers and the normalisation by name, as :class:`~fsarbench.data.protocols.Protocol`
        checks them (an unknown sampler stopped the run in a decode worker, after training had
        started)."""
        from fsarbench.data.sampling import SAMPLERS
        from fsarbench.data.transforms import NORMS

        check_names("options: samplers", [self.train_sampler, self.test_sampler], list(SAMPLERS))
        check_names("options: norm", [self.norm], list(NORMS))

    @property
    def min_frames(self) -> int:
        """Frames a video needs to be used: T under ``short="drop"``, else 1."""
        return self.frames if self.short == "drop" else 1

    def _check_crop(self) -> None:
        """The crop must fit in the resized frame of both transforms (it failed at the first
        training step, after every video had been probed)."""
        from fsarbench.data.transforms import get_transform

        for name in (self.train_transform, self.test_transform):
            try:
                preset = get_transform(name).config
            except KeyError as err:  # names the presets
                raise ConfigError(f"options: {err.args[0]}") from None
            resize, crop = self.resize or preset.resize, self.crop or preset.crop
            if resize > 0 and crop > resize:
                raise ConfigError(self._crop_message(name, preset.crop, preset.resize))

    def _crop_message(self, transform: str, preset_crop: int, preset_resize: int) -> str:
        """Why the crop does not fit, naming the option values as given (a ``crop=0`` named
        only the preset's 224 it stands for) and where a 0 takes its size from."""
        crop = f"options.crop = {self.crop}"
        if not self.crop:
            crop += f" (0 keeps the crop of transform {transform!r}, {preset_crop})"
        resize = self.resize or preset_resize
        given = (
            f"options.resize = {self.resize}"
            if self.resize
            else (f"{preset_resize} (options.resize = 0 keeps the preset's)")
        )
        return (
            f"{crop} does not fit the resized frame of transform {transform!r}: {given}; "
            f"set crop to at most {resize} (--option crop=N), or raise resize"
        )


#: FinetuneOptions fields added after records existed: left out of a recipe's dict (and so of
#: every config hash) while unset, so that no earlier record's identity changes
OPTIONS_OMITTED_WHEN_UNSET = ("color_jitter",)


def options_to_dict(options: FinetuneOptions) -> dict[str, Any]:
    """``options`` as recipes record them: every field but the
    :data:`OPTIONS_OMITTED_WHEN_UNSET` that are unset."""
    out = config_to_dict(options)
    for name in OPTIONS_OMITTED_WHEN_UNSET:
        if not out[name]:
            del out[name]
    return out


#: FinetuneOptions fields that set only the speed: decode workers give the same clips in the
#: same order (each episode is a function of its index), so they are not in a recipe's identity
SPEED_ONLY_OPTIONS = ("workers",)


@dataclass(frozen=True)
class FinetuneRecipe:
    """An episodic :class:`Recipe` (optimiser, steps, episodes) plus :class:`FinetuneOptions`."""

    recipe: Recipe = field(default_factory=lambda: Recipe(adapter="none"))
    options: FinetuneOptions = field(default_factory=FinetuneOptions)

    def __post_init__(self) -> None:
        if self.recipe.adapter != "none":  # recorded, never built: refuse rather than pretend
            raise ConfigError(
                f"recipe.adapter = {self.recipe.adapter!r}: the finetune track trains the "
                "backbone end to end and builds no frame adapter (adapters are the frozen "
                "track's); leave adapter at 'none'"
            )
        micro, per_step = self.recipe.micro_batch, self.recipe.episodes_per_step
        if micro and per_step % micro:  # found only after probing and building, untold
            raise ConfigError(
                f"recipe.micro_batch = {micro} must divide recipe.episodes_per_step = "
                f"{per_step} on the finetune track (clips load in batches of one size): set "
                "--recipe micro_batch to a divisor, or 0 for all at once"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe.to_dict(), "options": options_to_dict(self.options)}

    def identity(self) -> dict[str, Any]:
        """What of this recipe makes its numbers (config hashes, unit names, fingerprints):
        every field but :data:`SPEED_ONLY_OPTIONS`, so that ``--option workers=N`` neither
        retrains a model nor starts a new row of results."""
        out = self.to_dict()
        out["options"] = {k: v for k, v in out["options"].items() if k not in SPEED_ONLY_OPTIONS}
        return out


def _merge(base: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in (extra or {}).items():
        layer = recipe_layer(values) if section == "recipe" else values or {}
        out.setdefault(section, {}).update(layer)
    return out


@functools.lru_cache(maxsize=1)
def _finetune_table() -> dict[str, Any]:
    text = resources.files("fsarbench.training").joinpath(FINETUNE_RECIPES_FILE).read_text()
    return check_finetune_table(load_yaml(text) or {}, FINETUNE_RECIPES_FILE)


#: FinetuneOptions fields a protocol sets; recipe files may not (``--option`` may).
PROTOCOL_OPTIONS = (
    "train_sampler",
    "test_sampler",
    "train_transform",
    "test_transform",
    "flip",
    "norm",
    "color_jitter",
)


def _check_no_protocol_fields(entry: dict[str, Any] | None, where: str) -> None:
    owned = sorted(set((entry or {}).get("options") or {}) & {*PROTOCOL_OPTIONS, "protocol"})
    if owned:
        raise ConfigError(
            f"{where}: options {owned} are set by the protocol (run/train --protocol NAME; "
            "see 'python -m fsarbench protocols'), not by a recipe file; remove them"
        )


#: Options a checkpoint made before they existed was trained under (what the code did then).
_LEGACY_OPTIONS: dict[str, Any] = {"short": "repeat"}  # short videos stretched until 2026-12-05


def checkpoint_options(options: dict[str, Any], where: str) -> FinetuneOptions:
    """The :class:`FinetuneOptions` a checkpoint was trained under, from its stored
    ``recipe["options"]``: an option added after it was made takes the behaviour the code
    had then (a checkpoint without ``short`` stretched short videos), not today's default."""
    return build_config(FinetuneOptions, {**_LEGACY_OPTIONS, **options}, where=where)


def record_identity(
    recipe: dict[str, Any], split_md5: Any, precision: str = "fp32"
) -> tuple[dict[str, Any], dict]:
    """``(recipe, features)`` that name a finetune record of ``train`` or ``eval`` (the record
    id hashes them): the recipe as :meth:`FinetuneRecipe.identity` gives it (no
    :data:`SPEED_ONLY_OPTIONS`) and what its test features came from. One function for both
    commands: ``eval`` of ``train``'s checkpoint wrote a second record of the same model
    (``workers`` in its recipe, no backbone in its features), a duplicate row everywhere.

    Args:
        recipe: ``{"recipe": ..., "options": ...}`` (``FinetuneRecipe.to_dict()``, or a
            checkpoint's recipe with its options resolved).
        split_md5: the dataset's split-list md5s.
        precision: the test features' extraction precision (``"fp32"``, ``"bf16"``,
            ``"fp16"``: the training's, by device and ``amp``); named where it is not fp32,
            so a GPU's record is never replaced by another precision's number, and the
            CPU's records keep their ids.
    """
    options = {k: v for k, v in recipe["options"].items() if k not in SPEED_ONLY_OPTIONS}
    features = {
        "backbone": options["backbone"],
        "weights": options["weights"],
        "split_md5": split_md5,
        **precision_entry(precision),
    }
    return {**recipe, "options": options}, features


def precision_entry(precision: str) -> dict[str, str]:
    """``{"precision": precision}`` where it is not fp32 (records and fingerprints made in
    float32 keep the form they had before the precision was named)."""
    return {} if precision == "fp32" else {"precision": precision}


#: Under every finetune recipe file: the track builds no frame adapter (Recipe's default).
_FINETUNE_BASE: dict[str, dict[str, Any]] = {"recipe": {"adapter": "none"}, "options": {}}


def check_finetune_table(table: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate a finetune recipes file: sections, ``method[@dataset]`` entry names and every
    entry composed over ``default`` (unknown keys and out-of-range values named)."""
    from fsarbench.data.datasets import list_datasets
    from fsarbench.training.recipe import method_names_and_families

    check_names(f"{where} (top level)", list(table), ["default", "methods"])
    _check_no_protocol_fields(table.get("default"), f"{where}: default")
    default = _merge(_FINETUNE_BASE, table.get("default"))
    build_config(FinetuneRecipe, default, where=f"{where}: default")
    for key, entry in (table.get("methods") or {}).items():
        _check_no_protocol_fields(entry, f"{where}: methods.{key}")
        method, _, dataset = key.partition("@")
        check_names(f"{where}: methods", [method], method_names_and_families())
        if dataset:
            check_names(f"{where}: methods.{key}", [dataset], list_datasets())
        build_config(FinetuneRecipe, _merge(default, entry), where=f"{where}: methods.{key}")
    return table


def finetune_recipe(
    method: str,
    dataset: str,
    overrides: dict[str, dict[str, Any]] | None = None,
    protocol: str | None = None,
) -> FinetuneRecipe:
    """The finetune recipe of ``method`` on ``dataset``: the file's ``default``, then
    ``methods.<family>``, ``methods.<method>``, ``methods."<family>@<dataset>"``,
    ``methods."<method>@<dataset>"``, then the protocol's fields for ``dataset`` (``protocol``,
    else ``overrides["options"]["protocol"]``, else ``seed``) with ``norm`` replaced by the
    backbone's own where it fixes one (CLIP statistics for CLIP towers:
    :func:`~fsarbench.features.backbones.effective_norm`), then ``overrides``
    (``{"recipe": {...}, "options": {...}}``). ``family`` is the name before its first
    ``-`` (``sgtm-otam`` -> ``sgtm``)."""
    from fsarbench.data.protocols import DEFAULT_PROTOCOL, get_protocol

    table = _finetune_table()
    values = _merge(_FINETUNE_BASE, table.get("default"))
    family = method.split("-")[0]
    per_method = table.get("methods", {})
    from fsarbench.data.datasets import settings_dataset

    shared = settings_dataset(dataset)
    keys = dict.fromkeys(
        [family, method]
        + [f"{family}@{shared}", f"{method}@{shared}"] * (shared != dataset)
        + [f"{family}@{dataset}", f"{method}@{dataset}"]
    )
    for key in keys:
        values = _merge(values, per_method.get(key))
    name = protocol or (overrides or {}).get("options", {}).get("protocol") or DEFAULT_PROTOCOL
    fields = get_protocol(name, dataset).to_dict()
    fields["protocol"] = fields.pop("name")
    backbone = {**values["options"], **(overrides or {}).get("options", {})}.get("backbone")
    fields["norm"] = effective_norm(str(backbone or FinetuneOptions.backbone), fields["norm"])
    values = _merge(values, {"options": fields})
    values = _merge(values, overrides)
    values["options"]["protocol"] = name
    built = build_config(
        FinetuneRecipe, values, where=f"finetune recipe of {method!r} on {dataset!r}"
    )
    asked = (overrides or {}).get("recipe")
    check_overrides_apply(built.recipe, asked, f"finetune recipe of {method!r} on {dataset!r}")
    return dataclasses.replace(built, recipe=settle_shot(built.recipe, asked))
