"""Experiment grids (``grids.yaml``) expanded into cells over the datasets present."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fsarbench.config import ConfigError, build_config, check_names, check_range, load_yaml, nearest
from fsarbench.experiments.cells import Cell
from fsarbench.registry import list_methods, method_config, method_info

__all__ = [
    "GridError",
    "grid_names",
    "all_grids",
    "standard_shots",
    "expand_grid",
    "available_datasets",
    "STAND_IN",
    "grid_stand_in",
    "GridSpec",
    "load_grid_file",
    "add_grid_file",
    "builtin_grid_names",
    "grid_features",
]

STAND_IN = "synth"

log = logging.getLogger(__name__)


class GridError(ValueError):
    """An unknown grid or a grid that names something that does not exist."""


@dataclass(frozen=True)
class MethodEntry:
    """A grid's method: a registered ``method`` with ``hparams`` overrides, shown as ``label``."""

    method: str
    hparams: dict[str, Any] = field(default_factory=dict)
    label: str = ""


@dataclass(frozen=True)
class GridSpec:
    """One grid of ``grids.yaml`` (or of a user's ``--grids FILE``)."""

    datasets: str | list[str]
    methods: str | list[str | MethodEntry]
    title: str = ""
    shots: list[int] | None = None
    ways: list[int] = field(default_factory=lambda: [5])
    #: The generated dataset that stands in for a paper dataset that is not present;
    #: ``null`` (or ``none``): a dataset of the grid that is not present is an error.
    stand_in: str | None = STAND_IN
    features: dict[str, Any] = field(default_factory=dict)
    #: Registered methods a ``methods: registered`` grid leaves out.
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.stand_in == "none":  # the YAML word for null, normalised once
            object.__setattr__(self, "stand_in", None)

    def check(self, where: str) -> None:
        """Ranges and names (methods must be registered, datasets known, ``features`` fields
        of ``fsarbench.experiments.features.FeaturePreset``)."""
        from fsarbench.data.datasets import is_synthetic, list_datasets
        from fsarbench.experiments.features import FeaturePreset

        build_config(FeaturePreset, self.features, where=f"{where}.features")
        # an empty list gave no cells (ways) or quietly the standard shots (shots)
        if self.shots is not None and not self.shots:
            raise ConfigError(
                f"{where}.shots is empty: list the shots, or leave it out for "
                "the dataset's standard shots"
            )
        if not self.ways:
            raise ConfigError(f"{where}.ways is empty: list the ways (default [5])")
        for shot in self.shots or []:
            check_range(where, "shots", shot, 1, 100)
        for way in self.ways:
            check_range(where, "ways", way, 2, 100)
        synthetic = [d for d in list_datasets() if is_synthetic(d)]
        if self.stand_in is not None:
            check_names(f"{where}.stand_in", [self.stand_in], synthetic)
        if isinstance(self.datasets, str):
            _check_word(f"{where}.datasets", self.datasets, "available", "every dataset present")
        else:
            check_names(f"{where}.datasets", self.datasets, list_datasets())
        if isinstance(self.methods, str):
            _check_word(f"{where}.methods", self.methods, "registered", "every registered method")
            check_names(f"{where}.exclude", self.exclude, list_methods())
        elif self.exclude:  # it was ignored without a word
            raise ConfigError(
                f"{where}.exclude applies to 'methods: registered' only; leave the methods "
                "out of the list instead"
            )
        else:
            names = [m if isinstance(m, str) else m.method for m in self.methods]
            check_names(f"{where}.methods", names, list_methods())
            for m in self.methods:  # a misspelled hyper-parameter fails here, not mid-run
                if not isinstance(m, str) and m.hparams:
                    entry = method_info(m.method)
                    config = build_config(
                        entry.cls.Config,
                        {**entry.presets, **m.hparams},
                        where=f"{where}.methods[{m.label or m.method}].hparams",
                    )
                    # as the method reads them: `1e-1` (text to YAML) named its cells apart
                    # from the same setting written 0.1
                    m.hparams.update({k: getattr(config, k) for k in m.hparams})


def _check_word(where: str, value: str, word: str, meaning: str) -> None:
    """``datasets``/``methods`` take a list or one keyword; any other single name (``datasets:
    synth``) is refused with how to write it, not read as a one-item list."""
    if value != word:
        raise ConfigError(
            f"{where}: {value!r} is not a list; write [{value}] for that one, or {word!r} "
            f"for {meaning}"
        )


@dataclass(frozen=True)
class GridFile:
    """The whole grids file: standard shots per dataset, what ``--all`` runs, the grids."""

    grids: dict[str, GridSpec]
    standard_shots: dict[str, list[int]] = field(default_factory=dict)
    all: list[str] = field(default_factory=list)


def load_grid_file(text: str, where: str) -> GridFile:
    """Parse and validate a grids YAML: unknown or missing keys, out-of-range settings and
    unknown method or dataset names fail with ``where``, the key and the nearest valid one."""
    try:
        data = load_yaml(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {err}") from None
    table = build_config(GridFile, data, where=where)
    for name, grid in table.grids.items():
        grid.check(f"{where}: grids.{name}")
    check_names(f"{where}: all", table.all, list(table.grids))
    return table


_USER_GRIDS: dict[str, GridSpec] = {}


def add_grid_file(path: str | os.PathLike) -> list[str]:
    """Make the grids of a user's YAML file (same schema as ``grids.yaml``'s ``grids``)
    available to ``run --table NAME``; returns their names."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"grid file {path} does not exist")
    table = load_grid_file(path.read_text(), str(path))
    if not table.grids:
        raise ConfigError(
            f"{path} defines no grids (its 'grids:' is empty): add one, e.g. "
            "'grids: {mine: {datasets: [synth], methods: [otam]}}'"
        )
    # were read and dropped: only grids.yaml says what --all runs and the standard shots
    for key, value in (("standard_shots", table.standard_shots), ("all", table.all)):
        if value:
            raise ConfigError(
                f"{path}: {key!r} applies to the built-in grids.yaml only; give each grid its "
                "own shots: and run your grids with --table NAME ..."
            )
    shadowing = sorted(set(table.grids) & set(_builtin().grids))
    if shadowing:
        raise ConfigError(
            f"{path}: grid(s) {shadowing} would replace the built-in grids of that name (and "
            "their paper tables); name yours otherwise"
        )
    _USER_GRIDS.update(table.grids)
    return list(table.grids)


@lru_cache(maxsize=1)
def _builtin() -> GridFile:
    text = resources.files("fsarbench.experiments").joinpath("grids.yaml").read_text()
    return load_grid_file(text, "grids.yaml")


def builtin_grid_names() -> list[str]:
    """The grids of the built-in ``grids.yaml`` (``tableN`` of them are paper tables)."""
    return list(_builtin().grids)


def grid_names() -> list[str]:
    return [*_builtin().grids, *(g for g in _USER_GRIDS if g not in _builtin().grids)]


def all_grids() -> list[str]:
    """The grids ``run --all`` runs, in order."""
    return list(_builtin().all)


def standard_shots(dataset: str) -> list[int]:
    shots = _builtin().standard_shots
    return list(shots.get(dataset, shots["default"]))


def grid_features(names: list[str]) -> dict[str, Any]:
    """The frame features grids ``names`` ask for (``features:``, FeaturePreset fields over
    each dataset's preset); grids that ask for different features cannot share a run."""
    asked = {n: _grid(n).features for n in names if _grid(n).features}
    distinct = {tuple(sorted(f.items())) for f in asked.values()}
    if len(distinct) > 1:
        raise GridError(
            f"grids {sorted(asked)} ask for different frame features ({asked}); run them "
            "separately (each with its own --out)"
        )
    plain = sorted(n for n in names if not _grid(n).features)
    if asked and plain:  # the main grid ran on the clip grid's CLIP features, unsaid
        raise GridError(
            f"grid(s) {sorted(asked)} ask for their own frame features ({asked}) and "
            f"{plain} for each dataset's default features; run them separately (each with "
            "its own --out)"
        )
    return dict(next(iter(asked.values()))) if asked else {}


def grid_title(name: str) -> str:
    return _grid(name).title or name


def _stood_in(grid: str, why: str, stand_in: str | None) -> list[str]:
    """``[stand_in]``, or a :class:`ConfigError` for a grid that asked for none."""
    if stand_in is None:
        raise ConfigError(
            f"grid {grid!r}: {why} and the grid sets stand_in: null. Put the videos under "
            "$FSAR_DATA (or --root DIR) and check them with 'python -m fsarbench data check "
            "DATASET --root DIR', or give the grid a stand_in such as synth"
        )
    return [stand_in]


def grid_stand_in(name: str) -> str | None:
    """The stand-in dataset of grid ``name`` (``synth`` for a name that is not a grid;
    ``None`` for a grid that stands in nothing)."""
    grids = {**_builtin().grids, **_USER_GRIDS}
    return grids[name].stand_in if name in grids else STAND_IN


def _grid(name: str) -> GridSpec:
    grids = {**_builtin().grids, **_USER_GRIDS}
    if name not in grids:
        close = nearest(name, list(grids))
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise GridError(f"unknown grid {name!r}.{hint} Grids: {', '.join(grids)}")
    return grids[name]


def _published_datasets(root: str | None) -> Iterator[tuple[str, Any]]:
    """``(name, dataset)`` of every published dataset opened at ``root`` / ``FSAR_DATA``
    (none without either; one that cannot be opened there is passed over). Without ``root``
    each is opened as the cells open it (``$FSAR_DATA/<folder>``): read as a root, a
    ``FSAR_DATA`` set to one dataset's own folder was planned, then not found by the cells."""
    from fsarbench.data.datasets import get_dataset, is_synthetic, list_datasets

    for name in list_datasets() if root or os.environ.get("FSAR_DATA") else []:
        if is_synthetic(name):
            continue
        try:
            yield name, get_dataset(name, root=root)
        except (OSError, ValueError, KeyError):
            continue


def available_datasets(root: str | None = None) -> list[str]:
    """Published datasets whose videos are present under ``root`` / ``FSAR_DATA``."""
    found = []
    for name, ds in _published_datasets(root):
        try:
            if ds.available():
                found.append(name)
        except (OSError, ValueError, KeyError):
            continue
    return found


def datasets_without_split_lists(
    root: str | None = None, *, skip: Collection[str] = ()
) -> list[str]:
    """One line per published dataset whose folder is present under ``root`` /
    ``FSAR_DATA`` but whose split lists are not found or refused (modified, unparsable,
    leaking: :func:`available_datasets` leaves it out, and ``run --all`` dropped it without a
    word, or stood ``synth`` in for it, telling the user to lay out videos that were laid
    out): the dataset, its folder and what the split-list lookup said. ``skip``: datasets
    known available (their test list was read; a refused train or val list stops their
    cells by name), not read again."""
    from fsarbench.data.datasets import SplitListError
    from fsarbench_splits.load import SplitModifiedError
    from fsarbench_splits.parsers import SplitFormatError
    from fsarbench_splits.registry import SplitsNotFoundError

    refused = (SplitsNotFoundError, SplitModifiedError, SplitFormatError, SplitListError)

    given = Path(root or os.environ.get("FSAR_DATA") or ".").expanduser()
    found = []
    for name, ds in _published_datasets(root):
        if name in skip:
            continue
        # a root that is not the dataset's own folder is tried as its layout too: only a
        # folder of the dataset's name (the root itself, or in it) says its videos are there
        if ds.root is None or not ds.root.is_dir():
            continue
        if ds.root == given and given.name != getattr(getattr(ds, "spec", None), "folder", None):
            continue
        try:
            ds.videos("test")
        except refused as err:
            found.append(f"{name} (videos at {ds.root}): {str(err).split('. Run ')[0]}")
        except (OSError, ValueError, KeyError):
            continue
    return found


def _refuse_change(self: Any, *args: Any, **kwargs: Any) -> None:
    raise TypeError(
        "a grid cell's hyper-parameters cannot be changed in place (the cell's hash would "
        "change): copy the value first, e.g. list(value) or dict(value)"
    )


class _FrozenList(list):
    """A list-valued hyper-parameter that can be hashed (``unique_cells`` puts cells in a
    set) yet is still the list the grid wrote: a ``list[...]`` Config field, JSON and the
    cell's name (``widths=[32, 32]``, as ``eval`` names such a model) read it as one."""

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __reduce__(self) -> tuple[type, tuple[list[Any]]]:
        return type(self), (list(self),)  # pickle and copy would fill it through append

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse_change
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse_change


class _FrozenDict(dict):
    """A dict-valued hyper-parameter that can be hashed, likewise still a ``dict``; built
    with its keys sorted, so that one mapping names one cell however the grid ordered it."""

    def __hash__(self) -> int:
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[type, tuple[dict[Any, Any]]]:
        return type(self), (dict(self),)  # pickle and copy would fill it through __setitem__

    __setitem__ = __delitem__ = __ior__ = _refuse_change
    clear = pop = popitem = setdefault = update = _refuse_change


def _freeze(value: Any) -> Any:
    """``value`` made hashable, recursively (lists and dicts as :class:`_FrozenList` and
    :class:`_FrozenDict`), equal to it and of the same kind; scalars and tuples of scalars
    (TRX's ``cardinalities``) come back as they are, so existing cells keep their names."""
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return _FrozenDict((k, _freeze(v)) for k, v in items)
    if isinstance(value, list):
        return _FrozenList(_freeze(v) for v in value)
    if type(value) is tuple:
        return tuple(_freeze(v) for v in value)
    return value


def _frozen_hparams(hparams: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A grid entry's ``hparams`` as a cell holds them: sorted by name, values frozen."""
    return tuple((k, _freeze(v)) for k, v in sorted(hparams.items()))


@dataclass(frozen=True)
class _MethodSpec:
    method: str
    hparams: tuple[tuple[str, Any], ...] = ()
    label: str = ""


def _methods(grid: GridSpec) -> list[_MethodSpec]:
    if grid.methods == "registered":
        chosen = [m for m in list_methods(variants=False) if m not in grid.exclude]
        return [_MethodSpec(m, (), m) for m in chosen]
    out = []
    for e in grid.methods:
        if isinstance(e, str):
            out.append(_MethodSpec(e, (), e))
        else:
            out.append(_MethodSpec(e.method, _frozen_hparams(e.hparams), e.label or e.method))
    return out


def _overrides(
    method: str, hparams: tuple[tuple[str, Any], ...], dataset: str
) -> tuple[tuple[str, Any], ...]:
    """``hparams`` less those equal to ``method``'s own value on ``dataset``: an entry that
    writes a default out (``{method: protonet, hparams: {temperature: 10.0}}``) is the plain
    method, as ``eval`` names such a checkpoint, not a second system with its own model and
    summary row. Each dropped value is logged once per process."""
    if not hparams or _derives_hparams(method):
        return hparams
    default = method_config(method, dataset)
    kept = tuple((k, v) for k, v in hparams if getattr(default, k) != v)
    dropped = [f"{k}={v}" for k, v in hparams if (k, v) not in kept]
    if not dropped:
        return kept
    message = (
        f"{method} on {dataset}: {', '.join(dropped)} {'is' if len(dropped) == 1 else 'are'} "
        f"the method's default there, so the entry is {Cell(method, dataset, hparams=kept).name}"
    )
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.info(message)
    return kept


def _derives_hparams(method: str) -> bool:
    """Whether ``method`` takes hyper-parameters from its frame features
    (``backbone_hparams``: CLIP-FSAR's text tower): its default is then not the value it runs
    with, and an entry writing the default out asks for it over the derived one (two entries
    asking for other text towers ran the same tower and printed the same number)."""
    from fsarbench.methods import FewShotMethod

    own = method_info(method).cls.backbone_hparams
    return own.__func__ is not FewShotMethod.backbone_hparams.__func__


#: Messages :func:`_overrides` has logged (a grid is expanded more than once per command).
_LOGGED: set[str] = set()


def expand_grid(
    name: str,
    available: list[str],
    *,
    seed: int = 0,
    train_seeds=(0,),
    shots: list[int] | None = None,
    ways: list[int] | None = None,
    track: str = "frozen",
    protocol: str = "seed",
) -> list[Cell]:
    """Cells of grid ``name`` on ``track`` under ``protocol``; datasets not in ``available``
    are stood in for by the grid's ``stand_in`` (``synth`` unless the grid says otherwise)."""
    grid = _grid(name)
    stand_in = grid.stand_in
    datasets = grid.datasets
    if datasets == "available":
        datasets = list(available) or _stood_in(name, "no dataset is present", stand_in)
    cells = []
    for paper_ds in datasets:
        kept = paper_ds in available or paper_ds == stand_in
        if not kept:
            _stood_in(name, f"dataset {paper_ds!r} is not present", stand_in)
        ds = paper_ds if kept else stand_in
        grid_shots = grid.shots or standard_shots(paper_ds)
        for way in [w for w in grid.ways if ways is None or w in ways]:
            for shot in [s for s in grid_shots if shots is None or s in shots]:
                for m in _methods(grid):
                    hparams = _overrides(m.method, m.hparams, ds)
                    for ts in train_seeds:
                        tags = (("grid", name), ("paper_dataset", paper_ds))
                        cells.append(
                            Cell(
                                m.method,
                                ds,
                                way,
                                shot,
                                hparams,
                                track=track,
                                seed=seed,
                                train_seed=ts,
                                label=m.label,
                                tags=tags,
                                protocol=protocol,
                            )
                        )
    return cells
