"""What ``eval`` checks before it files a number under a method and a dataset.

``run`` evaluates only what it trained, on the features it made. ``eval`` takes a checkpoint
and features from the user, so it checks what can be checked and names the rest:

- a trainer checkpoint knows its method and dataset (its fingerprint): another method's
  checkpoint, or one trained on another dataset, is refused by name
  (:class:`CheckpointMismatchError`; ``--cross-dataset`` evaluates it across datasets);
- a feature cache knows its dataset, split and protocol (its key): ``--dataset`` must agree
  (:class:`FeaturesDatasetError`), and a frozen checkpoint must have been trained on features
  made the same way (:func:`check_cache_fits`);
- what cannot be a run of the protocol is recorded as a *variant* of the method
  (:func:`eval_variant_label`): evaluated without a checkpoint, on stored features with the
  user's manifest, across datasets, on another split than the test split, or with
  ``--hparams`` other than the checkpoint was trained with. Variants keep
  their own name, cell and ``summary.csv`` column in every report and stay out of the paper
  tables and the leaderboard (see :attr:`fsarbench.report.records.Entry.is_variant`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fsarbench.features.cache import FeatureCache
from fsarbench.features.store import FeatureStore
from fsarbench.report.records import base_method_of

__all__ = [
    "CheckpointMismatchError",
    "FeaturesDatasetError",
    "CUSTOM_DATASET",
    "CheckpointOrigin",
    "check_checkpoint",
    "check_cache_fits",
    "cache_protocol",
    "features_origin",
    "cache_split_md5",
    "changed_hparams",
    "check_num_train_classes",
    "eval_variant_label",
]

#: What ``eval`` records as the dataset of features that do not name one.
CUSTOM_DATASET = "custom"


class CheckpointMismatchError(ValueError):
    """A checkpoint evaluated as another method, or on another dataset, than it was trained."""


class FeaturesDatasetError(ValueError):
    """``--dataset`` names another dataset than the feature cache was extracted from."""


@dataclass(frozen=True)
class CheckpointOrigin:
    """What a checkpoint's fingerprint says about the model ``eval`` is about to record.

    Attributes:
        name: the name its records carry: the trained unit's, hyper-parameter overrides
            included (``"otam[lam=0.5]"``), else the method ``eval`` was given.
        trained_on: the other dataset it was trained on (``--cross-dataset``), else ``None``.
        features: the frozen-track features it was trained on (its fingerprint's data).
    """

    name: str
    trained_on: str | None = None
    features: dict[str, Any] = field(default_factory=dict)


def check_checkpoint(
    data: dict[str, Any], *, method: str, dataset: str, where: str, cross_dataset: bool
) -> CheckpointOrigin:
    """Check a trainer checkpoint's fingerprint against the method and dataset it is about to
    be evaluated and recorded as. A plain state dict has no fingerprint: nothing to check
    (its weights must still fit the method).

    Raises:
        CheckpointMismatchError: the checkpoint is another method's, or another dataset's
            without ``cross_dataset``.
    """
    fingerprint = data.get("fingerprint") if isinstance(data, dict) else None
    if not isinstance(fingerprint, dict):
        return CheckpointOrigin(method)
    trained = str(fingerprint.get("method") or method)
    if base_method_of(trained) != base_method_of(method):
        raise CheckpointMismatchError(
            f"{where} holds a {trained!r} model, not {method!r}: evaluate it as "
            f"'eval {base_method_of(trained)} --checkpoint {where}'"
        )
    features = dict(fingerprint.get("data") or {}) if fingerprint.get("track") != "finetune" else {}
    origin = CheckpointOrigin(trained, None, features)
    trained_on = fingerprint.get("dataset")
    if not trained_on or trained_on == dataset or dataset == CUSTOM_DATASET:
        return origin  # "custom": features that name no dataset, recorded as such
    if not cross_dataset:
        raise CheckpointMismatchError(
            f"{where} was trained on {trained_on!r}, and --dataset is {dataset!r}: its number "
            f"would be filed as a {dataset} model's. Evaluate it on --dataset {trained_on}, or "
            "pass --cross-dataset to evaluate it across datasets (recorded as the variant "
            f"'trained on {trained_on}', kept out of paper tables)"
        )
    return CheckpointOrigin(trained, str(trained_on), features)


def features_origin(store: FeatureStore, given: str | None, where: str) -> tuple[str, str]:
    """``(dataset, split)`` of ``eval --features``: a keyed feature cache's own (``--dataset``,
    when given, must agree), else ``given`` (default :data:`CUSTOM_DATASET`) and ``"test"``.

    Raises:
        FeaturesDatasetError: ``given`` differs from the cache's dataset.
    """
    fields = _key_fields(store)
    if not fields.get("dataset"):
        return given or CUSTOM_DATASET, "test"
    own, split = str(fields["dataset"]), str(fields.get("split") or "test")
    if given == CUSTOM_DATASET:
        return given, split
    if given is not None and given != own:
        raise FeaturesDatasetError(
            f"{where} holds features of {own!r} ({split} split), and --dataset is {given!r}: "
            f"the number would be filed under the wrong dataset. Leave --dataset out (eval "
            f"then records {own!r}), or extract {given}'s features with 'python -m fsarbench "
            "extract'"
        )
    return own, split


def cache_split_md5(store: FeatureStore) -> str | None:
    """md5 of the split list a keyed cache was extracted from (the one records carry as
    ``features.split_md5``), or ``None`` when its key does not say."""
    data = str(_key_fields(store).get("data") or "")
    parts = data.split(":")
    return parts[1] if len(parts) > 1 and parts[1] else None


def cache_protocol(store: FeatureStore) -> str:
    """The protocol whose frame sampler, transform and normalisation made a keyed cache
    (``"custom"`` when none did, or the cache has no key)."""
    from fsarbench.data.datasets import list_datasets
    from fsarbench.data.protocols import get_protocol, list_protocols
    from fsarbench.data.transforms import PRESETS

    fields = _key_fields(store)
    if str(fields.get("dataset")) not in list_datasets():
        return CUSTOM_DATASET
    sampler, _, mode = str(fields.get("frames") or "").partition(":")
    transform, *suffixes = str(fields.get("transform") or "").split("+")
    norm = next((x[5:] for x in suffixes if x.startswith("norm=")), None)
    train = mode.startswith("train")
    for name in list_protocols():
        protocol = get_protocol(name, str(fields["dataset"]))
        preset = PRESETS.get(protocol.transform(train))
        if (protocol.sampler(train), protocol.transform(train)) != (sampler, transform):
            continue
        if (norm or (preset.norm if preset is not None else None)) == protocol.norm:
            return name
    return CUSTOM_DATASET


#: Fields of a frozen checkpoint's features that a feature cache's key names as well.
_KEYED_FEATURE_FIELDS = ("backbone", "resolution", "num_frames")


def check_cache_fits(origin: CheckpointOrigin, store: FeatureStore, where: str) -> None:
    """A frozen-track checkpoint is evaluated on stored features made as those it was
    trained on: same backbone, resolution, frames and protocol, where the cache says.

    Raises:
        CheckpointMismatchError: naming each field that differs.
    """
    fields = _key_fields(store)
    if not isinstance(store, FeatureCache):
        _check_frames(origin, store, where)
    if not origin.features or not fields:
        return
    differ = [
        (k, origin.features[k], fields.get(k))
        for k in _KEYED_FEATURE_FIELDS
        if k in origin.features and origin.features[k] != fields.get(k)
    ]
    trained = (origin.features.get("protocol") or {}).get("name")
    here = cache_protocol(store)
    if trained and trained != here:
        differ.append(("protocol", trained, here))
    if differ:
        shown = "; ".join(f"{k}: trained {a!r}, here {b!r}" for k, a, b in differ)
        raise CheckpointMismatchError(
            f"the checkpoint was trained on other features than {where} holds ({shown}); "
            "evaluate it on features made as its own ('eval --dataset D --checkpoint ...' "
            "builds them)"
        )


def _check_frames(origin: CheckpointOrigin, store: FeatureStore, where: str) -> None:
    """A tensor file states no backbone or resolution, but its frames per video are its
    shape: an 8-frame model on a 4-frame file gave a number without a word (the same
    features as a cache were refused)."""
    trained = origin.features.get("num_frames")
    frames = store.feature_shape[0]
    if isinstance(trained, int) and trained != frames:
        raise CheckpointMismatchError(
            f"the checkpoint was trained on {trained}-frame features and {where} holds "
            f"{frames} frames per video; evaluate it on features made as its own ('eval "
            "--dataset D --checkpoint ...' builds them)"
        )


def _key_fields(store: FeatureStore) -> dict[str, Any]:
    if not isinstance(store, FeatureCache):
        return {}
    fields = store.index.get("key_fields") if store.key else None
    return dict(fields) if isinstance(fields, dict) else {}


def changed_hparams(
    data: dict[str, Any], given: dict[str, Any], method: str, dataset: str | None
) -> dict[str, Any]:
    """The ``--hparams`` of ``given`` that change the head a trainer checkpoint's contents
    ``data`` were trained with (``{}`` for a plain state dict, which states none: its
    hyper-parameters are the user's to give). Both are compared as ``method`` builds its
    configuration, so a JSON list for a stored tuple, ``1`` for ``1.0``, or a checkpoint's
    omitted default given explicitly changes nothing."""
    from fsarbench.config import ConfigError, config_to_dict
    from fsarbench.registry import method_config, stored_hparams

    stored = data.get("hparams") if isinstance(data.get("method"), dict) else None
    if not isinstance(stored, dict) or not given:
        return {}
    stored = stored_hparams(method, stored)  # as trained, where it predates a key
    try:
        trained = config_to_dict(method_config(method, dataset, **stored))
        asked = config_to_dict(method_config(method, dataset, **{**stored, **given}))
    except ConfigError:  # a stored key this code no longer knows: building it fails anyway
        return {k: v for k, v in given.items() if k not in stored or stored[k] != v}
    return {k: v for k, v in given.items() if asked.get(k) != trained.get(k)}


def trained_name(name: str, data: dict[str, Any], dataset: str | None) -> str:
    """The name a trainer checkpoint's record is filed under: ``name`` plus the
    hyper-parameters it was trained with where they differ from the method's defaults on the
    dataset it was trained on, as ``run`` names such models (``my-head[temperature=5.0]``):
    'train my-head --hparams ...' then 'eval' was filed as the plain method, ranked beside
    the protocol's model. A name that already carries overrides, or a plain state dict, is
    kept as it is."""
    from fsarbench.config import ConfigError, config_to_dict
    from fsarbench.registry import method_config, stored_hparams
    from fsarbench.report.records import overrides_of

    stored = data.get("hparams") if isinstance(data.get("method"), dict) else None
    if overrides_of(name) or not isinstance(stored, dict) or not stored:
        return name
    stored = stored_hparams(name, stored)  # as trained, where it predates a key
    fingerprint = data.get("fingerprint")
    on = (fingerprint.get("dataset") if isinstance(fingerprint, dict) else None) or dataset
    try:
        trained = config_to_dict(method_config(name, on, **stored))
        default = config_to_dict(method_config(name, on))
    except ConfigError:  # a stored key this code no longer knows: building it fails anyway
        return name
    changed = [f"{k}={trained[k]}" for k in sorted(trained) if trained[k] != default.get(k)]
    return f"{name}[{','.join(changed)}]" if changed else name


def check_num_train_classes(data: dict[str, Any], given: int | None, where: str) -> None:
    """``--num-train-classes`` must agree with the checkpoint's own count, when it has one
    (it was silently ignored: the checkpoint's was used)."""
    stored = data.get("num_train_classes") if isinstance(data, dict) else None
    if given is not None and stored is not None and int(stored) != given:
        raise CheckpointMismatchError(
            f"--num-train-classes {given} contradicts {where}, trained with {stored} "
            "meta-train classes; leave the option out (the checkpoint's count is used)"
        )


#: What :func:`episodes_note` says of a manifest whose episodes are not its spec's draw (an
#: edited seed, dataset, split or first episode): its record would claim that draw.
OTHER_EPISODES = "episodes not drawn from their spec"
#: ... and of one that cannot be checked: the features give no class per video, and the
#: pools its episodes use (not every video of a class) draw other episodes.
UNCHECKED_EPISODES = "episodes not checked against their spec"


def episodes_note(manifest, video_classes) -> str:
    """``""`` when every episode of ``manifest`` is the one its spec (seed, dataset, split,
    way, shot, queries; indices from ``meta["first_episode"]``) draws over the class pools
    of ``video_classes`` (the serving store's class id per video), or over the pools its
    episodes use (a manifest drawn with classes left out); else :data:`OTHER_EPISODES`, or
    :data:`UNCHECKED_EPISODES` where ``video_classes`` is unknown (a tensor file: a true
    draw that left some video unused was called "not drawn from its spec"). An edited
    ``spec.seed`` over another seed's episodes was recorded as that seed's."""
    if video_classes is not None and manifest.regenerates(video_classes):
        return ""
    if manifest.regenerates():
        return ""
    return OTHER_EPISODES if video_classes is not None else UNCHECKED_EPISODES


def eval_variant_label(
    *,
    checkpoint: bool,
    stored: str | None,
    trained_on: str | None,
    split: str,
    changed: dict[str, Any] | None = None,
    weights_file: str | None = None,
    other_code: bool = False,
    training: str = "",
    episodes: str = "",
) -> str | None:
    """The variant label of an ``eval`` record that is not a run of the protocol, or ``None``.

    Args:
        checkpoint: weights were loaded (else the head is evaluated as created: untrained).
        stored: ``eval --features`` of a dataset's keyed cache (``"cache"``) or of a tensor
            file or hand-made cache (``"file"``: nothing ties it to the dataset recorded);
            ``None`` for ``eval --dataset``, which builds the run's own test features and
            episodes. Stored features come with a manifest of the user's, so their numbers
            are never put beside a run's.
        trained_on: the other dataset a checkpoint was trained on (``--cross-dataset``).
        split: the split the features are of.
        changed: ``--hparams`` that differ from the checkpoint's own (:func:`changed_hparams`):
            the head evaluated is not the one trained.
        weights_file: the file name of a checkpoint that is a plain state dict: nothing in it
            says how, on what, or whether the weights were trained under the protocol.
        other_code: the checkpoint was trained by other code than the installed one.
        training: what makes the checkpoint other than the finished run's selected model
            (a resume point, an unfinished run, other train/val data), in words.
        episodes: what makes the manifest's episodes other than what its spec names
            (:func:`episodes_note`), in words.
    """
    stored_label = {"cache": "stored features", "file": "features file"}.get(stored or "", "")
    overrides = ", ".join(f"{k}={v}" for k, v in sorted((changed or {}).items()))
    labels = [
        "untrained" if not checkpoint else "",
        f"weights from {weights_file}" if weights_file else "",
        "trained with other code" if other_code else "",
        training,
        stored_label,
        f"trained on {trained_on}" if trained_on else "",
        f"{split} split" if split != "test" else "",
        f"evaluated with {overrides}" if overrides else "",
        episodes,
    ]
    return ", ".join(label for label in labels if label) or None
