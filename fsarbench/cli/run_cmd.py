"""``python -m fsarbench run``: experiment grids end to end, on the frozen or finetune track."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import re
import time
from pathlib import Path

import torch

from fsarbench.cli.common import (
    UsageError,
    add_protocol_argument,
    add_splits_dir_argument,
    apply_splits_dir,
    at_least,
    crop_alone_note,
    device_name,
    episode_count,
    episodes_help,
    folder_path,
    parse_overrides,
    seed_value,
    torchrun_threads_note,
    unwritable_reason,
)
from fsarbench.cli.eval_cmd import add_nonfinite_argument
from fsarbench.config import ConfigError, _unknown_key_message, build_config
from fsarbench.distributed.env import DistEnv, dist_env, gather_when_done, select_device
from fsarbench.experiments.cells import Cell
from fsarbench.experiments.grids import (
    STAND_IN,
    add_grid_file,
    all_grids,
    available_datasets,
    datasets_without_split_lists,
    expand_grid,
    grid_names,
    standard_shots,
)
from fsarbench.experiments.plan import DEFAULT_THROUGHPUT
from fsarbench.interrupts import raise_if_interrupted
from fsarbench.io import CUT_WRITE_AGE_S, remove_cut_writes
from fsarbench.report.cli_args import DEFAULT_RUNS
from fsarbench.results import rebuild_summary, records_held
from fsarbench.stats.bounds import caveat_line
from fsarbench.stats.rounding import fixed

log = logging.getLogger("fsarbench.run")
DEFAULT_OUT = Path(DEFAULT_RUNS)

WHERE_DATA = (
    "No real dataset found, so the embedded synthetic benchmark 'synth' stands in (labelled as "
    "such in every result). To run on real data, put the videos under $FSAR_DATA (or --root): "
    "kinetics/ (train_256/<class>/<id>.mp4 or <class>/<id>.mp4), ucf101/UCF-101/<Class>/<id>.avi, "
    "hmdb51/<class>/<id>.avi, ssv2/<id>.webm; check them with 'python -m fsarbench data check "
    "DATASET --root DIR' and the split lists with 'python -m fsarbench splits verify'."
)


def _where_data(root: str | None) -> str:
    """Why no real dataset is used: the videos are not where a dataset looks for them
    (:data:`WHERE_DATA`), or they are and its split lists are not found (then the layout
    advice sent the user to lay out videos that were laid out)."""
    no_lists = datasets_without_split_lists(root)
    if not no_lists:
        return WHERE_DATA
    return (
        "No real dataset can be used, so the embedded synthetic benchmark 'synth' stands in "
        "(labelled as such in every result): the videos of "
        + "; of ".join(no_lists)
        + ". Pass --splits-dir DIR (or set FSAR_SPLITS) to the folder of the published split "
        "lists, unmodified; 'python -m fsarbench splits verify --splits-dir DIR' checks it."
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        # the launcher rebuilds each job's command line from the exact flag names
        allow_abbrev=False,
        help="run experiment grids: train (frozen features or end to end), evaluate, tabulate",
        description="Train and evaluate methods on the available datasets and write "
        "DIR/summary.csv, per-cell records and Markdown tables. One model is trained per "
        "(method, hyper-parameters, dataset, track, protocol, train shot, training seed) at "
        "5-way and the cell's shot; N-way cells evaluate the 5-way model of their shot. "
        "Re-running with the same --out skips finished cells and resumes interrupted ones. "
        "Under torchrun (--nproc_per_node=N) each process trains and evaluates whole model "
        "units of its own, as --shard deals them, one per GPU; rank 0 prints the tables once "
        "all are done.",
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
    what.add_argument("--shots", nargs="+", type=at_least(1), default=None, help="K-shot settings")
    what.add_argument("--ways", nargs="+", type=at_least(2), default=None, help="N-way settings")
    what.add_argument(
        "--episodes",
        type=episode_count,
        default=10_000,
        help=episodes_help("test episodes per cell"),
    )
    what.add_argument("--seed", type=seed_value, default=0, help="seed of the test episodes")
    what.add_argument(
        "--train-seeds",
        nargs="+",
        type=seed_value,
        default=[0],
        help="training seeds (several give mean ± std over seeds)",
    )
    how = p.add_argument_group("how")
    how.add_argument(
        "--track",
        choices=["frozen", "finetune"],
        default="frozen",
        help="frozen: heads on cached features of a fixed backbone (default); finetune: "
        "backbone + head trained end to end per the method's recipe (the paper's protocol)",
    )
    add_protocol_argument(how)
    how.add_argument(
        "--option",
        nargs="+",
        action="extend",  # given twice: both, not the last alone
        default=[],
        metavar="KEY=VALUE",
        help="finetune options for every cell, e.g. backbone=resnet18 weights=none crop=64 "
        "(see FinetuneOptions)",
    )
    how.add_argument(
        "--features",
        nargs="+",
        action="extend",  # given twice: both, not the last alone
        default=[],
        metavar="KEY=VALUE",
        help="frozen track: frame features for every dataset over its preset and the grid's "
        "(FeaturePreset: backbone, weights, resolution, num_frames, train_views, tiny), e.g. "
        "weights=none tiny=true resolution=64 for a CPU smoke run of --table clip",
    )
    how.add_argument(
        "--share-model-across-shots",
        dest="share_shots",
        action="store_true",
        help="train one model per method at the recipe's shot (--recipe shot=K sets it) and "
        "evaluate every shot with it (faster; the references train one model per shot)",
    )
    how.add_argument(
        "--plan",
        action="store_true",
        help="print the models this run would train, the cells each feeds and an estimate "
        "of the work, then stop (nothing is trained); cells whose episodes their dataset's "
        "splits cannot serve are marked INFEASIBLE and named, with exit status 2, as the run "
        "would refuse them",
    )
    how.add_argument(
        "--throughput",
        type=float,
        default=DEFAULT_THROUGHPUT,
        metavar="FRAMES_PER_S",
        help=f"--plan: backbone training frames per second per GPU assumed for the GPU-hour "
        f"estimate (default {DEFAULT_THROUGHPUT:.0f}, a ResNet-50 at 224 px with AMP on one "
        "A100-class GPU)",
    )
    how.add_argument(
        "--bad-videos",
        choices=["skip", "error"],
        default="skip",
        help="finetune: missing or unreadable videos are left out and recorded (skip) or stop "
        "the run (error)",
    )
    how.add_argument(
        "--out",
        type=folder_path,
        default=DEFAULT_OUT,
        help="results folder (default $FSARBENCH_RUNS, else results/runs/default)",
    )
    how.add_argument("--root", default=None, help="data root (default $FSAR_DATA)")
    add_splits_dir_argument(how)
    how.add_argument("--cache", default=None, help="feature cache root (default $FSAR_CACHE)")
    how.add_argument(
        "--device",
        type=device_name,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda (default: cuda if available)",
    )
    how.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding workers of either track (default: 2 on the CPU; on CUDA one per spare "
        "core, 2-12; on the finetune track --option workers=N takes precedence)",
    )
    how.add_argument(
        "--recipe",
        nargs="+",
        action="extend",  # given twice: both, not the last alone
        default=[],
        metavar="KEY=VALUE",
        help="override recipe fields for every method, e.g. steps=50 (val_shot is kept, and "
        "named in the tables; shot only with --share-model-across-shots: otherwise each model "
        "trains at its cells' shot, and shot=K is refused)",
    )
    how.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run shard I of N (machines sharing --out): whole model units are dealt out in "
        "turn (ordered by a stable hash), so each model is trained on one machine only",
    )
    how.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default=None,
        help="run the model units as submitit jobs sharing --out (slurm: on a SLURM cluster; "
        "local: as local processes), then render the tables here",
    )
    how.add_argument(
        "--slurm",
        nargs="+",
        action="extend",  # given twice: both, not the last alone
        default=[],
        metavar="KEY=VALUE",
        help="job settings, e.g. partition=gpu gpus_per_node=1 time=12 (hours) cpus_per_task=8 "
        "mem_gb=64",
    )
    how.add_argument(
        "--jobs",
        type=at_least(1),
        default=None,
        help="--launcher: number of jobs (default: one per model unit)",
    )
    how.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_nonfinite_argument(how)
    how.add_argument(
        "--reuse-stale",
        action="store_true",
        help="reuse finished cells made by other code, data, weights or test episodes instead "
        "of re-running them, including records made with another --episodes count: such a "
        "record keeps its own count (each reuse is logged, recorded in the record's "
        "stale_accepted and shown marked ‡stale with its episode count)",
    )
    p.set_defaults(func=run)


def _grid_for_table(arg: str) -> str:
    return f"table{arg}" if arg.isdigit() else arg


def select_cells(args: argparse.Namespace, available: list[str]) -> list[Cell]:
    """The cells the arguments ask for (grids, or methods x datasets x settings)."""
    grids = list(all_grids()) if args.all else [_grid_for_table(t) for t in args.table]
    cells: list[Cell] = []
    empty: list[str] = []
    for g in grids:
        mine = [
            c
            for c in expand_grid(
                g,
                available,
                seed=args.seed,
                train_seeds=tuple(args.train_seeds),
                shots=args.shots,
                ways=args.ways,
                track=args.track,
                protocol=args.protocol,
            )
            if (not args.method or c.method in args.method)
            and (not args.dataset or c.dataset in args.dataset)
        ]
        if not mine:
            empty.append(g)
        cells += mine
    if grids:
        _check_filters_matched(args, grids, available, cells)
    if empty and not args.all:  # 'run --table figure4 3 4 --dataset synth' ran figure4 alone
        log.warning(
            "grid(s) %s select no cell with these filters and are not run (run each alone "
            "to see what it offers)",
            ", ".join(empty),
        )
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
                                Cell(
                                    m,
                                    ds,
                                    way,
                                    shot,
                                    track=args.track,
                                    seed=args.seed,
                                    train_seed=ts,
                                    label=m,
                                    protocol=args.protocol,
                                )
                            )
    return cells


#: Filters of ``run --all/--table`` and the cell field each selects on.
_FILTERS = (("--method", "method", "method"), ("--dataset", "dataset", "dataset"))
_FILTERS += (("--shots", "shots", "shot"), ("--ways", "ways", "way"))


def _check_filters_matched(args, grids: list[str], available: list[str], cells: list[Cell]) -> None:
    """Refuse a ``--method/--dataset/--shots/--ways`` value that selects no cell of the grids
    (a misspelled method ran 0 cells and exited 0), naming what the grids offer."""
    offered = [
        c
        for g in grids
        for c in expand_grid(g, available, track=args.track, protocol=args.protocol)
    ]
    # each flag alone first: '--ways 50' was reported as '--method clip-fsar selects no cell'
    for within, pool in (("", offered), (" (with the other filters)", cells)):
        for flag, arg, field in _FILTERS:
            chosen = {getattr(c, field) for c in pool}
            missing = [v for v in getattr(args, arg) or [] if v not in chosen]
            if missing:
                values = sorted({getattr(c, field) for c in offered}, key=str)
                raise ValueError(
                    f"{flag} {' '.join(map(str, missing))} selects no cell of grid(s) "
                    f"{', '.join(grids)}{within}; they offer {flag} "
                    f"{' '.join(map(str, values))}"
                )


def _shard(cells: list[Cell], spec: str | None, tracks: dict, share: bool) -> list[Cell]:
    """The cells of shard ``I/N``: whole model units go to one shard, so no model is trained
    on two machines, dealt in turn over the units ordered by a stable hash (every process
    orders the same units alike). A unit's hash modulo N left a third of the launcher's
    one-job-per-unit jobs empty and gave one job five units."""
    from fsarbench.io import stable_hash

    if spec is None:
        return cells
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard takes I/N (e.g. 0/4), got {spec!r}") from None
    if not 0 <= i < n:
        named = ", ".join(f"{k}/{n}" for k in range(min(n, 3))) + (" ..." if n > 3 else "")
        raise UsageError(
            f"--shard I/N needs 0 <= I < N, got {spec}"
            + (f": shards count from 0 ({named}, {n - 1}/{n})" if n > 3 else "")
            + (f": shards count from 0 ({named})" if 0 < n <= 3 else "")
        )

    units = [stable_hash(_unit_key(cell, tracks, share)) for cell in cells]
    slot = {unit: p % n for p, unit in enumerate(sorted(set(units)))}
    return [c for c, unit in zip(cells, units) if slot[unit] == i]


def _unit_key(cell: Cell, tracks: dict, share: bool) -> tuple:
    """The model unit of ``cell`` as a tuple (its recipe looked up, no data touched)."""
    from fsarbench.experiments.units import unit_for

    track = tracks[cell.track]
    way, shot = track.way_shot(track.recipe(cell))
    unit = unit_for(cell, recipe_way=way, recipe_shot=shot, share_shots=share)
    return dataclasses.astuple(unit)


def run(args: argparse.Namespace) -> int:
    from fsarbench.cli.common import FROZEN_BAD_VIDEOS
    from fsarbench.features.backbones import BackboneWeightsError

    if args.track == "frozen" and args.bad_videos == "error":
        raise ValueError(FROZEN_BAD_VIDEOS)
    if not args.launcher and (args.jobs or args.slurm):  # they were ignored
        raise UsageError("--jobs and --slurm set --launcher's jobs: add --launcher local|slurm")
    unwritable = "" if args.plan else unwritable_reason(Path(args.out))  # --plan reads it
    if unwritable:
        raise UsageError(f"--out {unwritable}")
    try:
        return _run(args)
    except BackboneWeightsError as err:  # its hint names extract's --weights, not run's flags
        plan = " ('run --plan' builds each model to count its cost)" if args.plan else ""
        raise BackboneWeightsError(
            f"{err}{plan}. In 'run', weights are set with --option weights=PATH|none on the "
            "finetune track and --features weights=PATH|none on the frozen track"
        ) from None


def _run(args: argparse.Namespace) -> int:
    from fsarbench.experiments.feasibility import (
        check_class_names_of,
        empty_classes,
        find_shortfalls,
    )
    from fsarbench.experiments.runner import CellRunner, unique_cells

    apply_splits_dir(args)
    if args.grids:
        add_grid_file(args.grids)
    env = _torchrun_share(args)
    if args.plan and not env.is_main:  # rank 0 prints the whole run's plan
        return 0
    say = print if env.is_main else _silent
    options, tracks = _setup(args)
    available = available_datasets(args.root)
    cells = select_cells(args, available)
    mine = _shard(cells, _shard_spec(args, env), tracks, args.share_shots)
    # said when synth stands in by default, not when --dataset asked for it
    if any(c.dataset == STAND_IN for c in cells) and not available and not args.dataset:
        say(_where_data(args.root))
    elif not args.dataset:  # the others run; these were dropped without a word
        for line in datasets_without_split_lists(args.root, skip=available):
            say(f"warning: left out of this run, its split lists refused: {line}")
    runner = CellRunner(tracks, options)
    # every cell of every shard, before anything is trained or extracted: a setting a split
    # cannot serve was found mid-run, after other cells had trained
    check_class_names_of(runner, unique_cells(cells))  # clip-fsar's split-tag names
    shortfalls = find_shortfalls(runner, cells)
    missing = empty_classes(runner, cells)
    if args.plan and not args.launcher:
        return _plan(args, runner, mine, shortfalls, len(unique_cells(cells)), missing)
    _refuse(shortfalls, len(unique_cells(cells)), missing)
    if args.launcher:
        return _launch(args, mine, tracks)
    shard = None if env.distributed else args.shard
    share = f"shard {shard}: {len(unique_cells(mine))} of " if shard else ""
    say(
        f"{share}{len(unique_cells(cells))} cells ({len(cells)} grid entries; {args.track} "
        f"track, {args.protocol} protocol) -> {args.out}"
    )
    if env.distributed:
        say(
            f"torchrun: {env.world_size} processes, each training whole model units of its "
            f"own (as --shard deals them); rank 0 prints its own cells as they finish "
            f"({len(unique_cells(mine))}), then the tables of all once every process is done"
        )
        if torch.device(options.device).type == "cpu":
            say(torchrun_threads_note(torch.get_num_threads()))
    if env.is_main:
        _remove_old_cut_writes(Path(args.out))
    t0 = time.perf_counter()
    failure = _run_shard(args, shard, runner, mine, env, say)
    done = gather_when_done(env, (len(runner.trained_units), failure))  # every rank's records
    failed = any(f for _, f in done)
    if not env.is_main:
        if failed:  # rank 0 reports first: torchrun stops the job when a process exits 2
            gather_when_done(env, None)
        return 2 if failure else 0
    try:
        print(f"{sum(n for n, _ in done)} model(s) trained, resumed or reloaded in this run")
        with runner.timed("tables and figures"):
            outputs = _write_outputs(args, cells if env.distributed else mine, asked=cells)
        with runner.timed("report"):
            report = write_run_report(args.out, figure_files=outputs)
        _stop_if_a_rank_failed(done)  # after the tables of the cells that did finish
    finally:
        if failed:
            gather_when_done(env, None)
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in runner.seconds.items())
    print(f"time per stage{' (rank 0)' if env.distributed else ''}: {stages}")
    print(f"done in {time.perf_counter() - t0:.0f} s; summary: {args.out / 'summary.csv'}")
    _print_report(report)
    return 0


def _run_shard(args, shard: str | None, runner, mine: list, env: DistEnv, say) -> str | None:
    """:func:`_run_share`, leaving ``--shard``'s plan in ``--out`` (what it set out to run,
    stamped finished or failed) for ``merge`` to name a missing or unfinished shard."""
    from fsarbench.experiments.runner import unique_cells
    from fsarbench.experiments.shard_plans import mark_shard_done, write_shard_plan

    if shard is None:
        return _run_share(runner, mine, env, say)
    write_shard_plan(Path(args.out), shard, unique_cells(mine), list(args.argv))
    try:
        failure = _run_share(runner, mine, env, say)
    except Exception:
        mark_shard_done(Path(args.out), shard, failed=True)
        raise
    mark_shard_done(Path(args.out), shard, failed=False)
    return failure


def _run_share(runner, mine: list, env: DistEnv, say) -> str | None:
    """Run this process's cells, grid by grid (one runner for every grid: features extracted
    once, models and pair tables reused). Under torchrun a rank's error is returned, not
    raised, so that it still joins the final wait: rank 0 then names it instead of waiting
    for a rank that is gone."""
    from fsarbench.experiments.runner import unique_cells

    _PRINTED.clear()  # a run that failed before its tables left them in this process
    try:
        for grid, group in itertools.groupby(mine, key=lambda c: c.tags_dict.get("grid", "cells")):
            group = list(group)
            t_grid = time.perf_counter()
            runner.run_cells(group, on_record=_printed_record if env.is_main else None)
            count = f"{len(unique_cells(group))} cells ({len(group)} grid entries)"
            say(f"grid {grid}: {count}, {time.perf_counter() - t_grid:.0f} s", flush=True)
    except Exception as err:
        if not env.distributed:
            raise
        log.exception("rank %d stopped", env.rank)
        return f"{type(err).__name__}: {err}"
    return None


def _stop_if_a_rank_failed(done: list[tuple[int, str | None]]) -> None:
    """Raise, naming every rank that stopped with an error (the cells the others finished
    are saved, and a re-run of the same command reuses them)."""
    failed = [f"rank {rank}: {failure}" for rank, (_, failure) in enumerate(done) if failure]
    if failed:
        raise RankFailedError(
            f"{len(failed)} of {len(done)} processes stopped with an error; the other "
            "processes' cells are saved and the same command resumes the rest. " + "; ".join(failed)
        )


class RankFailedError(RuntimeError):
    """A torchrun process of ``run`` stopped with an error (named by rank 0)."""


def _plan(
    args: argparse.Namespace,
    runner,
    cells: list[Cell],
    shortfalls: list,
    planned: int,
    missing: list[tuple[str, str]],
) -> int:
    """``--plan``: print the units, cells and work of the run, marking the cells their
    datasets cannot serve; then refuse those as the run would (exit status 2)."""
    from fsarbench.experiments.plan import plan_cells, print_plan

    print_plan(plan_cells(runner, cells, {s.cell for s in shortfalls}), args.throughput)
    _refuse(shortfalls, planned, missing)
    return 0


def _refuse(shortfalls: list, planned: int, missing: list[tuple[str, str]]) -> None:
    """Raise :class:`MissingClassesError` where a split list's class has no usable video
    (:func:`~fsarbench.experiments.feasibility.empty_classes`), else
    :class:`InfeasibleCellsError` naming ``shortfalls`` (of ``planned`` cells), if any
    (:func:`~fsarbench.experiments.feasibility.find_shortfalls`)."""
    from fsarbench.experiments.feasibility import (
        InfeasibleCellsError,
        MissingClassesError,
        infeasible_message,
        missing_classes_message,
    )

    if missing:
        raise MissingClassesError(missing_classes_message(missing))
    if shortfalls:
        raise InfeasibleCellsError(infeasible_message(shortfalls, planned))


def _silent(*args: object, **kwargs: object) -> None:
    """``print`` of the ranks other than 0 under torchrun (rank 0 speaks for the run)."""


def _torchrun_share(args: argparse.Namespace) -> DistEnv:
    """This process's place under torchrun (rank 0 of 1 without it). Under torchrun with
    several processes, each runs its share of the model units (:func:`_shard_spec`) on its
    own device (``cuda:LOCAL_RANK``), with no process group while it works: a unit trains
    in one process, as in a plain run, so every number is a plain run's. Ranks other than 0
    show no progress bars and log warnings only (everything with ``-v``). ``--shard`` and
    ``--launcher`` deal out units themselves and are refused here."""
    env = dist_env()
    if not env.distributed:
        return env
    if args.shard or args.launcher:
        raise ValueError(
            "under torchrun each process takes its share of the model units itself: drop "
            "--shard / --launcher, or run those without torchrun"
        )
    device = select_device(args.device, env)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    args.device = str(device)
    args.no_progress = args.no_progress or not env.is_main
    if not env.is_main and not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 logs the run's progress
    return env


def _shard_spec(args: argparse.Namespace, env: DistEnv) -> str | None:
    """The ``--shard I/N`` of this process: its torchrun rank of the world size (whole model
    units per rank, dealt as ``--shard`` deals them), else ``--shard`` itself. ``--plan``
    plans the whole run."""
    if env.distributed and not args.plan:
        return f"{env.rank}/{env.world_size}"
    return args.shard


def _launch(args: argparse.Namespace, cells: list[Cell], tracks: dict) -> int:
    """``--launcher``: one submitit job per model unit (or ``--jobs``), then the outputs."""
    from fsarbench.experiments.launch import make_executor, submit_shards

    if args.shard or args.plan:
        raise ValueError("--launcher deals out the shards itself: drop --shard / --plan")
    units = len({_unit_key(c, tracks, args.share_shots) for c in cells})
    jobs = min(args.jobs or units, units)
    executor = make_executor(
        args.launcher, Path(args.out) / "submitit", parse_overrides(args.slurm, "--slurm")
    )
    print(f"{units} model unit(s) in {jobs} {args.launcher} job(s) -> {args.out}")
    submit_shards(executor, args.argv, jobs)
    outputs = _write_outputs(args, cells)
    report = write_run_report(args.out, figure_files=outputs)
    print(f"done; summary: {args.out / 'summary.csv'}")
    _print_report(report)
    return 0


def _remove_old_cut_writes(out: Path) -> None:
    """Temporary files that writes cut short by a kill left in ``out`` and its folders
    (records, manifests, partial evaluations, lock holders, tables, figures, report). Unit
    folders under ``models/`` are cleared when their unit is next used, under its lock."""
    if not out.is_dir():
        return
    for folder in [out, *(p for p in out.iterdir() if p.is_dir() and p.name != "models")]:
        remove_cut_writes(folder, older_than=CUT_WRITE_AGE_S)


def _setup(args: argparse.Namespace):
    """Run options and the tracks of ``args`` (overrides checked before any work)."""
    from fsarbench.experiments.features import FrozenFeatureProvider
    from fsarbench.experiments.runner import FinetuneTrack, FrozenTrack, RunOptions
    from fsarbench.training.recipe import Recipe

    overrides = parse_overrides(args.recipe, "--recipe")
    options_over = parse_overrides(args.option, "--option")
    features = run_features(args)
    build_config(Recipe, overrides, where="--recipe")  # unknown keys fail before any work
    if options_over and args.track != "finetune":
        raise UsageError("--option applies to --track finetune only")
    if args.features and args.track != "frozen":
        raise ValueError("--features applies to --track frozen; use --option backbone=... here")
    if args.track == "finetune":  # a grid's backbone choice, under explicit --option values
        keys = ("backbone", "weights", "tiny")
        options_over = {**{k: v for k, v in features.items() if k in keys}, **options_over}
        if args.workers is not None:  # under an explicit --option workers=N
            options_over = {"workers": args.workers, **options_over}
        if note := crop_alone_note(options_over):
            print(note)
    # keys only: values are checked against each method's recipe on its dataset when the
    # cells are planned (the bare defaults refused resize=100 by synth's crop of 224)
    for key in [k for k in options_over if k not in _option_names()]:
        raise ConfigError(_unknown_key_message(key, _option_names(), "--option"))
    if "protocol" in options_over:
        raise ValueError(f"choose the protocol with --protocol {options_over['protocol']}")
    if args.throughput <= 0:
        raise ValueError(f"--throughput must be positive frames/s, not {args.throughput}")
    progress = not args.no_progress
    options = RunOptions(
        out_dir=args.out,
        episodes=args.episodes,
        device=args.device,
        progress=progress,
        recipe_overrides=overrides,
        nonfinite=args.nonfinite,
        reuse_stale=args.reuse_stale,
        share_shots=args.share_shots,
    )
    provider = FrozenFeatureProvider(
        root=args.root,
        cache_root=args.cache,
        device=args.device,
        workers=args.workers,
        progress=progress,
        protocol=args.protocol,
        preset_overrides=features,
    )
    tracks = {
        "frozen": FrozenTrack(
            provider,
            recipe_overrides=overrides,
            device=args.device,
            progress=progress,
            listing=provider.listing,
            cached=provider.cached,
            outline=provider.outline,
        ),
        "finetune": FinetuneTrack(
            root=args.root,
            cache_root=args.cache,
            recipe_overrides=overrides,
            option_overrides=options_over,
            device=args.device,
            progress=progress,
            bad_videos=args.bad_videos,
        ),
    }
    return options, tracks


def run_features(args: argparse.Namespace) -> dict:
    """Frame-feature overrides of the run: the selected grids' ``features`` (one set per
    run), then ``--features`` (checked against FeaturePreset's fields)."""
    from fsarbench.experiments.features import FeaturePreset
    from fsarbench.experiments.grids import grid_features

    grids = list(all_grids()) if args.all else [_grid_for_table(t) for t in args.table]
    features = {**grid_features(grids), **parse_overrides(args.features, "--features")}
    build_config(FeaturePreset, features, where="--features")
    return features


def _write_outputs(
    args: argparse.Namespace, cells: list[Cell], asked: list[Cell] | None = None
) -> list[Path]:
    """Summary tables, paper tables and figures of ``args.out``; the paper files written.
    ``cells``: those this process ran (its paper tables are printed); ``asked``: every cell
    of the command (all shards), default ``cells``."""
    from fsarbench.experiments.outputs import paper_tables_written, write_paper_outputs
    from fsarbench.experiments.summary_tables import write_summary_tables

    # jobs of a launched run each rebuild summary.csv after their own records; rebuilt here
    # from every record once they are done
    with records_held(args.out):  # no record half-moved by another run into this folder
        records = rebuild_summary(args.out)
        tables = write_summary_tables(args.out, records)
    _warn_replaced_meanwhile(records)
    _warn_stale(records)
    _warn_mixed_episodes(records)
    _note_other_seeds(records, asked if asked is not None else cells)
    for _, path in sorted(tables.items()):
        print(f"\n{path}:\n{path.read_text()}")
    numbers = {number for c in cells if (number := paper_table_number(c)) is not None}
    # tables an earlier run wrote are written again (their cells may have changed since),
    # and printed only when this run has cells in them
    outputs = write_paper_outputs(args.out, sorted(numbers | paper_tables_written(args.out)))
    for number in sorted(numbers):
        path = args.out / "tables" / f"paper_table{number}.md"
        print(f"\n{path}:\n{path.read_text()}")
    if outputs:
        print(f"paper tables and figures: {args.out / 'tables'}, {args.out / 'figures'}")
    return outputs


def paper_table_number(cell: Cell) -> int | None:
    """N of a cell of the built-in grid ``tableN`` (a user's grid named ``table_mine`` stopped
    the run after every cell had trained, reading ``_mine`` as a number)."""
    from fsarbench.experiments.grids import builtin_grid_names

    grid = cell.tags_dict.get("grid", "")
    match = re.fullmatch(r"table(\d+)", grid)
    return int(match.group(1)) if match and grid in builtin_grid_names() else None


def write_run_report(out: Path, figure_files: list[Path] | None = None) -> Path | None:
    """The HTML report of ``out`` (``out/report/index.html``), or ``None`` with a warning when
    it cannot be written: the run's records and tables are saved either way. ``figure_files``:
    the figures the run has just drawn, embedded instead of drawn again."""
    from fsarbench.report.page import build_report

    try:
        return build_report(out, figure_files=figure_files)
    except Exception as err:  # the report must never cost the run its results
        raise_if_interrupted()
        log.debug("report failed", exc_info=True)
        print(
            f"warning: the HTML report was not written ({type(err).__name__}: {err}); the "
            f"records, summary and tables are saved. Retry with 'python -m fsarbench report "
            f"--runs {out}' (add -v for the traceback)."
        )
        return None


def _print_report(path: Path | None) -> None:
    if path is not None:
        from fsarbench.cli.report_cmd import print_report_path

        print_report_path(path)


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


def _warn_mixed_episodes(records) -> None:
    """Say where ``--out`` holds records of other test episodes than the rest (a run into a
    folder of earlier runs with another ``--episodes`` or ``--seed``, or of a machine that
    lost other test videos): the tables name those cells, and the console says so too.
    ``eval`` variants are left out, as the tables leave them out."""
    from fsarbench.report.episode_protocol import protocol_mismatches

    records = [r for r in records if "variant_label" not in r.tags]
    for mismatch in protocol_mismatches(records):
        groups = "; ".join(
            f"{label}: {len(recs)} record(s)" for label, recs in mismatch.groups.items()
        )
        print(
            f"\nwarning: mixed test episodes in this folder: {mismatch.text} ({groups}). The "
            "tables name the cells apart from the rest and do not rank them against it; run "
            "every cell with the same --episodes/--seed, or into its own --out."
        )


def _note_other_seeds(records, cells: list[Cell]) -> None:
    """Say where the tables pool training seeds of this run's cells that the run did not ask
    for (``--train-seeds 0`` into a folder that holds seeds 0-2): the cells printed above are
    this run's, the tables every seed in the folder (labelled ``n=3``)."""
    from fsarbench.report.records import config_key, system_of

    asked: dict[tuple, set[int]] = {}
    for c in cells:
        key = (c.name, c.dataset, c.track, c.way, c.shot, c.seed, c.protocol)
        asked.setdefault(key, set()).add(c.train_seed)

    def key_of(r) -> tuple:  # a stale or variant record is its own system: never pooled
        return (system_of(r), r.dataset, r.track, r.way, r.shot, r.seed, r.protocol)

    pooled = [r for r in records if r.train_seed is not None and key_of(r) in asked]
    # the configurations of this run's own records: only their other seeds are pooled
    mine = {(key_of(r), config_key(r)) for r in pooled if r.train_seed in asked[key_of(r)]}
    found: dict[tuple, set[int]] = {}
    for r in pooled:
        if (key_of(r), config_key(r)) in mine:
            found.setdefault(key_of(r), set()).add(r.train_seed)
    extra = {k: sorted(found[k]) for k in found if found[k] - asked[k]}
    if not extra:
        return
    shown = [
        f"{k[0]} {k[1]} {k[3]}-way {k[4]}-shot: seeds {', '.join(map(str, seeds))} (this run: "
        f"{', '.join(map(str, sorted(asked[k])))})"
        for k, seeds in sorted(extra.items(), key=str)
    ]
    more = f"; and {len(shown) - 3} more" if len(shown) > 3 else ""
    print(
        "\nnote: the tables pool every training seed this folder holds, more than this run "
        f"asked for: {'; '.join(shown[:3])}{more}. For this run's seeds alone, run into "
        "another --out."
    )


#: Records this process printed as it made them (:func:`_warn_replaced_meanwhile`).
_PRINTED: list = []


def _printed_record(r) -> None:
    _PRINTED.append(r)
    _print_record(r)


def _warn_replaced_meanwhile(records) -> None:
    """Name the records this process printed that another run into the folder has since
    replaced: the tables printed after them show the other run's numbers, and the console
    read as if this run had made them."""
    by_setting = {r.setting: r for r in records}
    present = {(r.cell, r.created) for r in records}
    printed = {(r.cell, r.created) for r in _PRINTED}
    for mine in _PRINTED:
        if (mine.cell, mine.created) in present:
            continue
        now = by_setting.get(mine.setting)
        if now is not None and (now.cell, now.created) in printed:
            continue  # this run replaced it itself
        instead = (
            f"{now.method} {fixed(now.accuracy)} ± {fixed(now.ci95)} (config "
            f"{now.config_hash[:8]}, made {now.created[:19]})"
            if now is not None
            else "no record"
        )
        print(
            f"\nwarning: {mine.cell} ({fixed(mine.accuracy)} ± {fixed(mine.ci95)}, config "
            f"{mine.config_hash[:8]}) printed above was replaced by another run into this "
            f"folder meanwhile; the tables below show {instead} for its setting"
        )
    _PRINTED.clear()


def _print_record(r) -> None:
    print(
        f"  {r.method:<28} {r.dataset:<10} {r.way}-way {r.shot}-shot  "
        f"{fixed(r.accuracy):>6} ± {fixed(r.ci95)}  ({r.episodes} episodes)",
        flush=True,
    )
    if caveat := caveat_line(r):
        print(f"    {caveat}", flush=True)


def _option_names() -> list[str]:
    import dataclasses

    from fsarbench.training.finetune_recipe import FinetuneOptions

    return [f.name for f in dataclasses.fields(FinetuneOptions) if f.init]
