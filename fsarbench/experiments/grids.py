"""Experiment grids (``grids.yaml``) expanded into cells over the datasets present."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from fsarbench.config import nearest
from fsarbench.experiments.cells import Cell
from fsarbench.registry import list_methods

__all__ = [
    "GridError",
    "grid_names",
    "all_grids",
    "standard_shots",
    "expand_grid",
    "available_datasets",
    "STAND_IN",
]

STAND_IN = "synth"


class GridError(ValueError):
    """An unknown grid or a grid that names something that does not exist."""


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    text = resources.files("fsarbench.experiments").joinpath("grids.yaml").read_text()
    return yaml.safe_load(text)


def grid_names() -> list[str]:
    return list(_table()["grids"])


def all_grids() -> list[str]:
    """The grids ``run --all`` runs, in order."""
    return list(_table()["all"])


def standard_shots(dataset: str) -> list[int]:
    shots = _table()["standard_shots"]
    return list(shots.get(dataset, shots["default"]))


def grid_title(name: str) -> str:
    return _grid(name).get("title", name)


def _grid(name: str) -> dict[str, Any]:
    grids = _table()["grids"]
    if name not in grids:
        close = nearest(name, list(grids))
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise GridError(f"unknown grid {name!r}.{hint} Grids: {', '.join(grids)}")
    return grids[name]


def available_datasets(root: str | None = None) -> list[str]:
    """Published datasets whose videos are present under ``root`` / ``FSAR_DATA``."""
    from fsarbench.data.datasets import get_dataset, list_datasets

    root = root or os.environ.get("FSAR_DATA")
    if not root:
        return []
    found = []
    for name in list_datasets():
        if name == STAND_IN:
            continue
        try:
            if get_dataset(name, root=root).available():
                found.append(name)
        except (OSError, ValueError, KeyError):
            continue
    return found


@dataclass(frozen=True)
class _MethodSpec:
    method: str
    hparams: tuple[tuple[str, Any], ...] = ()
    label: str = ""


def _methods(grid: dict[str, Any]) -> list[_MethodSpec]:
    entries = grid["methods"]
    if entries == "registered":
        return [_MethodSpec(m, (), m) for m in list_methods(variants=False)]
    out = []
    for e in entries:
        if isinstance(e, str):
            out.append(_MethodSpec(e, (), e))
        else:
            hp = tuple(sorted((e.get("hparams") or {}).items()))
            out.append(_MethodSpec(e["method"], hp, e.get("label", e["method"])))
    return out


def expand_grid(
    name: str,
    available: list[str],
    *,
    seed: int = 0,
    train_seeds=(0,),
    shots: list[int] | None = None,
    ways: list[int] | None = None,
) -> list[Cell]:
    """Cells of grid ``name``; datasets not in ``available`` are stood in for by ``synth``."""
    grid = _grid(name)
    datasets = grid["datasets"]
    if datasets == "available":
        datasets = list(available) or [STAND_IN]
    cells = []
    for paper_ds in datasets:
        ds = paper_ds if paper_ds in available or paper_ds == STAND_IN else STAND_IN
        grid_shots = grid.get("shots") or standard_shots(paper_ds)
        for way in [w for w in grid.get("ways", [5]) if ways is None or w in ways]:
            for shot in [s for s in grid_shots if shots is None or s in shots]:
                for m in _methods(grid):
                    for ts in train_seeds:
                        tags = (("grid", name), ("paper_dataset", paper_ds))
                        cells.append(
                            Cell(
                                m.method,
                                ds,
                                way,
                                shot,
                                m.hparams,
                                "frozen",
                                seed,
                                ts,
                                m.label,
                                tags,
                            )
                        )
    return cells
