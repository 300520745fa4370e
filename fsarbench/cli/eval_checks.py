"""What ``eval`` checks before it files a number under a method and a dataset.

``run`` evaluates only what it trained, on the features it made. ``eval`` takes a checkpoint
and features from the user, so it checks what can be checked and names the rest:

- a trainer checkpoint knows its method and dataset (its fingerprint): another method's
  checkpoint, or one trained on another dataset, is refused by name
  (:class:`CheckpointMismatchError`; ``--cross-dataset`` evaluates it across datasets);
- a feature cache knows its dataset and split (its key): ``--dataset`` must agree
  (:class:`FeaturesDatasetError`);
- what cannot be a run of the protocol is recorded as a *variant* of the method
  (:func:`eval_variant_label`): evaluated without a checkpoint, on a tensor file nobody can
  trace to a dataset, across datasets, or on another split than the test split. Variants keep
  their own name in every report and stay out of the paper tables and the leaderboard (see
  :attr:`fsarbench.report.records.Entry.is_variant`).
"""

from __future__ import annotations

from typing import Any

from fsarbench.features.cache import FeatureCache
from fsarbench.features.store import FeatureStore
from fsarbench.report.records import base_method_of

__all__ = [
    "CheckpointMismatchError",
    "FeaturesDatasetError",
    "CUSTOM_DATASET",
    "check_checkpoint",
    "features_origin",
    "cache_split_md5",
    "eval_variant_label",
]

#: What ``eval`` records as the dataset of features that do not name one.
CUSTOM_DATASET = "custom"


class CheckpointMismatchError(ValueError):
    """A checkpoint evaluated as another method, or on another dataset, than it was trained."""


class FeaturesDatasetError(ValueError):
    """``--dataset`` names another dataset than the feature cache was extracted from."""


def check_checkpoint(
    data: dict[str, Any], *, method: str, dataset: str, where: str, cross_dataset: bool
) -> str | None:
    """Check a trainer checkpoint's fingerprint against the method and dataset it is about to
    be evaluated and recorded as; returns the dataset it was trained on when that differs
    (allowed only with ``cross_dataset``). A plain state dict has no fingerprint: nothing to
    check (its weights must still fit the method).

    Raises:
        CheckpointMismatchError: the checkpoint is another method's, or another dataset's
            without ``cross_dataset``.
    """
    fingerprint = data.get("fingerprint") if isinstance(data, dict) else None
    if not isinstance(fingerprint, dict):
        return None
    trained_method = fingerprint.get("method")
    if trained_method and base_method_of(str(trained_method)) != base_method_of(method):
        raise CheckpointMismatchError(
            f"{where} holds a {trained_method!r} model, not {method!r}: evaluate it as "
            f"'eval {base_method_of(str(trained_method))} --checkpoint {where}'"
        )
    trained_on = fingerprint.get("dataset")
    if not trained_on or trained_on == dataset or dataset == CUSTOM_DATASET:
        return None  # "custom": features that name no dataset, recorded as such
    if not cross_dataset:
        raise CheckpointMismatchError(
            f"{where} was trained on {trained_on!r}, and --dataset is {dataset!r}: its number "
            f"would be filed as a {dataset} model's. Evaluate it on --dataset {trained_on}, or "
            "pass --cross-dataset to evaluate it across datasets (recorded as the variant "
            f"'trained on {trained_on}', kept out of paper tables)"
        )
    return str(trained_on)


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


def _key_fields(store: FeatureStore) -> dict[str, Any]:
    if not isinstance(store, FeatureCache):
        return {}
    fields = store.index.get("key_fields") if store.key else None
    return dict(fields) if isinstance(fields, dict) else {}


def eval_variant_label(
    *, checkpoint: bool, traceable: bool, trained_on: str | None, split: str
) -> str | None:
    """The variant label of an ``eval`` record that is not a run of the protocol, or ``None``.

    Args:
        checkpoint: weights were loaded (else the head is evaluated as created: untrained).
        traceable: the features came from a dataset's keyed cache (else a tensor file or a
            hand-made cache: nothing ties them to the dataset recorded).
        trained_on: the other dataset a checkpoint was trained on (``--cross-dataset``).
        split: the split the features are of.
    """
    labels = [
        "untrained" if not checkpoint else "",
        "features file" if not traceable else "",
        f"trained on {trained_on}" if trained_on else "",
        f"{split} split" if split != "test" else "",
    ]
    return ", ".join(label for label in labels if label) or None
