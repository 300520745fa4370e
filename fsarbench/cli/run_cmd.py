"""``python -m fsarbench run``: experiment grids (frozen track) end to end."""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path

import torch

from fsarbench.cli.eval_cmd import add_nonfinite_argument
from fsarbench.config import build_config
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.grids import (
    STAND_IN,
    add_grid_file,
    all_grids,
    available_datasets,
    expand_grid,
    grid_names,
    standard_shots,
)
from fsarbench.report.cli_args import DEFAULT_RUNS
from fsarbench.results import load_records

log = logging.getLogger("fsarbench.run")
DEFAULT_OUT = Path(DEFAULT_RUNS)

WHERE_DATA = (
    "No real dataset found, so the embedded synthetic benchmark 'synth' stands in (labelled as "
    "such in every result). To run on real data, put the videos under $FSAR_DATA (or --root): "
    "kinetics/ (train_256/<class>/<id>.mp4 or <class>/<id>.mp4), ucf101/UCF-101/<Class>/<id>.avi, "
    "hmdb51/<class>/<id>.avi, ssv2/<id>.webm; check them with 'python -m fsarbench data check "
    "DATASET --root DIR' and the split lists with 'python -m fsarbench splits verify'."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run experiment grids: train on frozen features, evaluate, tabulate",
        description="Train and evaluate methods on the available datasets and write "
        "DIR/summary.csv, per-cell records and Markdown tables. Re-running with the same --out "
        "skips finished cells and resumes interrupted ones.",
    )
    what = p.add_argument_group("what to run")
    what.add_argument("--all", action="store_true", help=f"every grid: {', '.join(all_grids())}")
    what.add_argument(
        "--table",
        nargs="+",
        default=[],
        metavar="N",
        help="seed-paper table(s) 1-6 (or grid names such as figure4)",
    )
    what.add_argument(
        "--grids",
        default=None,
        metavar="FILE",
        help="a YAML file of your own grids (the schema of fsarbench/experiments/grids.yaml's "
        "'grids:'; checked strictly), run with --table NAME",
    )
    what.add_argument("--method", nargs="+", default=[], metavar="NAME", help="methods to run")
    what.add_argument(
        "--dataset",
        nargs="+",
        default=[],
        metavar="NAME",
        help="datasets (default: those available, else synth)",
    )
    what.add_argument("--shots", nargs="+", type=int, default=None, help="K-shot settings")
    what.add_argument("--ways", nargs="+", type=int, default=None, help="N-way settings")
    what.add_argument("--episodes", type=int, default=10_000, help="test episodes per cell")
    what.add_argument("--seed", type=int, default=0, help="seed of the test episodes")
    what.add_argument(
        "--train-seeds",
        nargs="+",
        type=int,
        default=[0],
        help="training seeds (several give mean ± std over seeds)",
    )
    how = p.add_argument_group("how")
    how.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="results folder (default $FSARBENCH_RUNS, else results/runs/default)",
    )
    how.add_argument("--root", default=None, help="data root (default $FSAR_DATA)")
    how.add_argument("--cache", default=None, help="feature cache root (default $FSAR_CACHE)")
    how.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    how.add_argument("--workers", type=int, default=2, help="decoding workers")
    how.add_argument(
        "--recipe",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override recipe fields for every method, e.g. steps=50",
    )
    how.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run only every N-th cell starting at I (machines sharing --out)",
    )
    how.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_nonfinite_argument(how)
    how.add_argument(
        "--reuse-stale",
        action="store_true",
        help="reuse finished cells made by other code, data or weights instead of re-running "
        "them (each reuse is logged and recorded in the record's stale_accepted)",
    )
    p.set_defaults(func=run)


def _parse_overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--recipe takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _grid_for_table(arg: str) -> str:
    return f"table{arg}" if arg.isdigit() else arg


def select_cells(args: argparse.Namespace, available: list[str]) -> list[Cell]:
    """The cells the arguments ask for (grids, or methods x datasets x settings)."""
    grids = list(all_grids()) if args.all else [_grid_for_table(t) for t in args.table]
    cells: list[Cell] = []
    for g in grids:
        cells += expand_grid(
            g,
            available,
            seed=args.seed,
            train_seeds=tuple(args.train_seeds),
            shots=args.shots,
            ways=args.ways,
        )
    if grids and args.method:
        cells = [c for c in cells if c.method in args.method]
    if grids and args.dataset:
        cells = [c for c in cells if c.dataset in args.dataset]
    if not grids:
        if not args.method:
            raise ValueError(
                "say what to run: --all, --table N or --method NAME [...]; "
                f"grids: {', '.join(grid_names())}"
            )
        for ds in args.dataset or available or [STAND_IN]:
            for way in args.ways or [5]:
                for shot in args.shots or standard_shots(ds):
                    for m in args.method:
                        for ts in args.train_seeds:
                            cells.append(
                                Cell(m, ds, way, shot, seed=args.seed, train_seed=ts, label=m)
                            )
    return cells


def _shard(cells: list[Cell], spec: str | None) -> list[Cell]:
    if spec is None:
        return cells
    i, n = (int(x) for x in spec.split("/"))
    if not 0 <= i < n:
        raise ValueError(f"--shard I/N needs 0 <= I < N, got {spec}")
    return cells[i::n]


def run(args: argparse.Namespace) -> int:
    from fsarbench.experiments.features import FrozenFeatureProvider
    from fsarbench.experiments.outputs import write_paper_outputs
    from fsarbench.experiments.runner import CellRunner, RunOptions
    from fsarbench.experiments.summary_tables import write_summary_tables
    from fsarbench.training.recipe import Recipe

    overrides = _parse_overrides(args.recipe)
    build_config(Recipe, overrides, where="--recipe")  # unknown keys fail before any work
    if args.grids:
        add_grid_file(args.grids)
    available = available_datasets(args.root)
    cells = _shard(select_cells(args, available), args.shard)
    if any(c.dataset == STAND_IN for c in cells) and not available:
        print(WHERE_DATA)
    print(f"{len(cells)} cells -> {args.out}")
    provider = FrozenFeatureProvider(
        root=args.root,
        cache_root=args.cache,
        device=args.device,
        workers=args.workers,
        progress=not args.no_progress,
    )
    options = RunOptions(
        out_dir=args.out,
        episodes=args.episodes,
        device=args.device,
        progress=not args.no_progress,
        recipe_overrides=overrides,
        nonfinite=args.nonfinite,
        reuse_stale=args.reuse_stale,
    )
    t0 = time.perf_counter()
    # one runner for every grid: features extracted once, models and pair tables reused
    runner = CellRunner(provider, options)
    for grid, group in itertools.groupby(cells, key=lambda c: c.tags_dict.get("grid", "cells")):
        group = list(group)
        t_grid = time.perf_counter()
        runner.run_cells(group, on_record=_print_record)
        print(f"grid {grid}: {len(group)} cells, {time.perf_counter() - t_grid:.0f} s", flush=True)
    records = load_records(args.out)
    _warn_stale(records)
    for _, path in sorted(write_summary_tables(args.out, records).items()):
        print(f"\n{path}:\n{path.read_text()}")
    tables = sorted(
        {
            int(c.tags_dict["grid"][5:])
            for c in cells
            if c.tags_dict.get("grid", "").startswith("table")
        }
    )
    outputs = write_paper_outputs(args.out, tables)
    for path in outputs:
        if path.suffix == ".md" and path.name.startswith("paper_table"):
            print(f"\n{path}:\n{path.read_text()}")
    if outputs:
        print(f"paper tables and figures: {args.out / 'tables'}, {args.out / 'figures'}")
    print(f"done in {time.perf_counter() - t0:.0f} s; summary: {args.out / 'summary.csv'}")
    return 0


def _warn_stale(records) -> None:
    """Name the records of ``--out`` that the installed code would no longer produce."""
    from fsarbench.results import stale_reasons

    stale = [(r.cell, stale_reasons(r)) for r in records if stale_reasons(r)]
    if stale:
        print(
            f"\nwarning: {len(stale)} record(s) in this folder are stale (column 'stale' of "
            "summary.csv); re-run their cells to replace them:"
        )
        for cell, why in stale[:20]:
            print(f"  {cell}: {', '.join(why)}")


def _print_record(r) -> None:
    print(
        f"  {r.method:<28} {r.dataset:<10} {r.way}-way {r.shot}-shot  "
        f"{r.accuracy:6.2f} ± {r.ci95:.2f}  ({r.episodes} episodes)",
        flush=True,
    )
