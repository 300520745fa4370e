"""Named protocols (``seed``, ``trx``, ``hyrsm``): per dataset, the frame samplers, transform
presets, flip and normalisation a reference used (``protocols.yaml``; PROTOCOL.md).

``get_protocol(name, dataset)`` resolves one protocol for one dataset into a
:class:`Protocol`; both tracks build their clips from it (frozen: the feature extraction,
finetune: the clip pipeline), and its fields enter cache keys, config hashes and records.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from fsarbench.config import ConfigError, build_config, check_names, load_yaml

__all__ = [
    "DEFAULT_PROTOCOL",
    "Protocol",
    "ProtocolSpec",
    "get_protocol",
    "list_protocols",
    "protocol_description",
]

DEFAULT_PROTOCOL = "seed"
PROTOCOLS_FILE = "protocols.yaml"


@dataclass(frozen=True)
class Protocol:
    """One protocol resolved for one dataset.

    Attributes:
        name: the protocol's name (``seed``, ``trx``, ``hyrsm``).
        train_sampler, test_sampler: names of ``fsarbench.data.sampling.SAMPLERS``.
        train_transform, test_transform: presets of ``fsarbench.data.transforms.PRESETS``.
        flip: random horizontal flip of training clips: ``True`` every clip, ``"query"`` the
            query clips only (HyRSM's few-shot loader), ``False`` none. The frozen track's
            training views have no role: they are flipped unless ``flip`` is ``False``.
        norm: pixel normalisation (``none``, ``hyrsm``, ``imagenet``, ``clip``).
        color_jitter: HyRSM's colour jitter of training clips
            (:mod:`fsarbench.data.color_jitter`): ``"query"`` the query clips only (its
            few-shot loader's ``SUPPORT_QUERY_DIFF``), ``True`` every clip, ``False`` none.
            The finetune track's alone: the frozen track's training views are not
            jittered (:func:`~fsarbench.experiments.features.frozen_protocol`). Left out of
            :meth:`to_dict` while ``False`` (cache keys and records made before it existed
            keep their identity).
    """

    name: str = DEFAULT_PROTOCOL
    train_sampler: str = "tsn"
    test_sampler: str = "tsn"
    train_transform: str = "seed-train"
    test_transform: str = "seed-test"
    flip: bool | Literal["query"] = True
    norm: str = "imagenet"
    color_jitter: bool | Literal["query"] = False

    def __post_init__(self) -> None:
        from fsarbench.data.sampling import SAMPLERS
        from fsarbench.data.transforms import NORMS, PRESETS

        where = f"protocol {self.name!r}"
        check_names(f"{where}: samplers", [self.train_sampler, self.test_sampler], list(SAMPLERS))
        check_names(
            f"{where}: transforms", [self.train_transform, self.test_transform], list(PRESETS)
        )
        check_names(f"{where}: norm", [self.norm], list(NORMS))

    def sampler(self, train: bool) -> str:
        return self.train_sampler if train else self.test_sampler

    def transform(self, train: bool) -> str:
        return self.train_transform if train else self.test_transform

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not self.color_jitter:
            del out["color_jitter"]
        return out


@dataclass(frozen=True)
class ProtocolSpec:
    """A protocol as the file states it: a description, defaults, per-dataset overrides."""

    description: str
    default: dict[str, Any]
    datasets: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, ProtocolSpec]:
    text = resources.files("fsarbench.data").joinpath(PROTOCOLS_FILE).read_text()
    return check_protocols_table(load_yaml(text) or {}, PROTOCOLS_FILE)


def check_protocols_table(table: dict[str, Any], where: str) -> dict[str, ProtocolSpec]:
    """Parse and validate a protocols file: every protocol resolved for every dataset."""
    from fsarbench.data.datasets import list_datasets

    specs = {}
    for name, entry in table.items():
        spec = build_config(ProtocolSpec, entry, where=f"{where}: {name}")
        check_names(f"{where}: {name}.datasets", list(spec.datasets), list_datasets())
        specs[name] = spec
        for dataset in list_datasets():
            _resolve(name, spec, dataset, where)
    return specs


def _resolve(name: str, spec: ProtocolSpec, dataset: str, where: str) -> Protocol:
    """The protocol's ``default``, then the dataset's entry (or that of the dataset whose
    settings it shares). A dataset registered with ``flip_ok=False`` is not flipped unless
    its entry says ``flip`` itself (a reference's own quirk, e.g. TRX flipping SSv2)."""
    from fsarbench.data.datasets import dataset_flip_ok, settings_dataset

    entry = spec.datasets.get(dataset, spec.datasets.get(settings_dataset(dataset), {}))
    values = {**spec.default, **entry, "name": name}
    if "flip" not in entry and not dataset_flip_ok(dataset):
        values["flip"] = False
    return build_config(Protocol, values, where=f"{where}: {name} on {dataset}")


def list_protocols() -> list[str]:
    return list(_table())


def protocol_description(name: str) -> str:
    return _spec(name).description


def _spec(name: str) -> ProtocolSpec:
    table = _table()
    if name not in table:
        from fsarbench.config import nearest

        close = nearest(name, list(table))
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown protocol {name!r}.{hint} Protocols: {', '.join(table)}")
    return table[name]


def get_protocol(name: str, dataset: str) -> Protocol:
    """Protocol ``name`` resolved for ``dataset`` (its ``default``, then the dataset's entry)."""
    return _resolve(name, _spec(name), dataset, PROTOCOLS_FILE)
