"""``python -m fsarbench train``: train one method on one dataset (frozen or finetune track).

The finetune track runs under ``torchrun`` as it is: every rank trains on its share of each
step's episodes, rank 0 writes the checkpoints, validation and test evaluation are sharded.
The frozen track trains a head on stored features in one process: under torchrun with more
than one process it stops at once, on every rank, saying what to run instead.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from fsarbench.cli.common import (
    FROZEN_BAD_VIDEOS,
    UsageError,
    add_protocol_argument,
    add_splits_dir_argument,
    apply_splits_dir,
    at_least,
    crop_alone_note,
    device_name,
    episode_count,
    parse_hparams,
    parse_overrides,
    seed_value,
    torchrun_threads_note,
    writable_folder,
)
from fsarbench.data.decode import VideoDecodeError
from fsarbench.environment import compute_environment
from fsarbench.features.extract import files_stamp
from fsarbench.io import remove_cut_writes
from fsarbench.provenance import training_fingerprint
from fsarbench.stats.bounds import caveat_line
from fsarbench.stats.rounding import fixed
from fsarbench.training.loop import RunMismatchError, loss_trend
from fsarbench.training.timing import format_step_times

DEFAULT_OUT = Path("results") / "train"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a method on a dataset (frozen features or end-to-end finetune)",
        description="Train METHOD on the train split of DATASET, select the checkpoint on the "
        "val split, save last.pt (resume point) and best.pt under --out and print the val "
        "accuracy. Re-running with the same --out resumes. The finetune track works under "
        "torchrun (e.g. torchrun --nproc_per_node=2 -m fsarbench train ... --track finetune); "
        "the frozen track runs in one process and refuses several.",
    )
    p.add_argument("method", help="registered method name (see 'list methods')")
    p.add_argument(
        "--dataset", required=True, help="dataset name (see 'list datasets'), e.g. synth"
    )
    p.add_argument("--track", choices=["frozen", "finetune"], default="frozen")
    p.add_argument(
        "--out",
        type=writable_folder,
        default=None,
        help=f"default {DEFAULT_OUT}/<method>/<dataset>-<track>",
    )
    p.add_argument("--seed", type=seed_value, default=0, help="training seed")
    p.add_argument("--hparams", default="{}", help="JSON of method hyper-parameters")
    p.add_argument(
        "--recipe",
        nargs="+",
        action="extend",  # given twice: both, not the last alone
        default=[],
        metavar="KEY=VALUE",
        help="override recipe fields, e.g. steps=50 lr=1e-4",
    )
    p.add_argument(
        "--option",
        nargs="+",
        action="extend",  # given twice: both, not the last alone
        default=[],
        metavar="KEY=VALUE",
        help="finetune options, e.g. backbone=resnet18 resize=128 crop=112 "
        "checkpoint_backbone=true (see FinetuneOptions)",
    )
    add_protocol_argument(p)
    p.add_argument("--root", default=None, help="data root (default $FSAR_DATA)")
    add_splits_dir_argument(p)
    p.add_argument(
        "--cache",
        default=None,
        help="cache root: features (frozen track), video probe results (finetune track)",
    )
    p.add_argument(
        "--device", type=device_name, default=None, help="cpu or cuda (default: cuda if available)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding workers: the frozen track's extraction, the finetune track's clips "
        "(--option workers=N wins; default: 2 on the CPU; on CUDA one per spare core, 2-12)",
    )
    p.add_argument(
        "--test-episodes",
        type=episode_count,
        default=None,
        help="finetune: then evaluate this many test episodes per --shots setting "
        "and write records under --out (1 to 1,000,000)",
    )
    p.add_argument(
        "--shots",
        nargs="+",
        type=at_least(1),
        default=None,
        help="finetune: the test shots of --test-episodes (default 1 5)",
    )
    p.add_argument(
        "--bad-videos",
        choices=["skip", "error"],
        default="skip",
        help="finetune: missing or unreadable videos are left out and recorded with their "
        "cause (skip, as the frozen track does) or stop the run (error); a split left unable "
        "to serve the episodes is always an error",
    )
    p.add_argument(
        "--overwrite",
        "--no-resume",
        dest="overwrite",
        action="store_true",
        help="start this run afresh in --out, deleting its checkpoints (without it, --out is "
        "resumed only if it holds this same run, and refused otherwise)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--step-timing",
        action="store_true",
        help="time every training step's phases (waiting for data, forward, backward, "
        "optimiser) also on CUDA, where measuring synchronises the device; by default "
        "CUDA times one step in ten, the CPU every step, and the breakdown is printed",
    )
    p.set_defaults(func=run)


FROZEN_ALTERNATIVES = (
    "run it without torchrun, or use --track finetune (data-parallel under torchrun), or train "
    "several models at once with 'run --launcher local --jobs N' (one process per model)"
)


#: What ``train`` tells a user whose --out holds another run (or its selected weights are
#: missing, unreadable or another run's).
MISMATCH_REMEDY = (
    "Resume only continues the same run: choose another --out for this one (the folder's run "
    "is kept), or pass --overwrite to replace that run's checkpoints with this one's."
)


def run(args: argparse.Namespace) -> int:
    apply_splits_dir(args)
    if args.track == "frozen":  # before anything is read, written or deleted
        _require_one_process_frozen()
        if args.bad_videos == "error":
            raise ValueError(FROZEN_BAD_VIDEOS)
    hparams = parse_hparams(args.hparams)
    # one folder per method, dataset and track: a second dataset's run was refused, and the
    # remedy offered (--overwrite) deleted the first one's model
    out = args.out or DEFAULT_OUT / args.method / f"{args.dataset}-{args.track}"
    recipe_over = parse_overrides(args.recipe, "--recipe")
    option_over = parse_overrides(args.option, "--option")
    if "protocol" in option_over:
        raise ValueError(f"choose the protocol with --protocol {option_over['protocol']}")
    if args.track == "frozen" and option_over:
        raise UsageError("--option applies to --track finetune only")
    if args.track == "finetune" and args.workers is not None:  # as run: under --option workers
        option_over = {"workers": args.workers, **option_over}
    if note := crop_alone_note(option_over):
        from fsarbench.distributed.env import dist_env

        if dist_env().is_main:  # once under torchrun
            print(note)
    if args.track == "frozen" and (args.test_episodes or args.shots):
        raise UsageError(
            "--test-episodes and --shots apply to --track finetune only: evaluate a frozen "
            "model with 'eval METHOD --checkpoint OUT/best.pt --dataset D --way N --shot K', or "
            "train and evaluate it with 'run'"
        )
    if args.shots and not args.test_episodes:
        raise UsageError("--shots names the test shots of --test-episodes: give both")
    args.shots = args.shots or [1, 5]
    _check_settings(args, hparams, recipe_over, option_over)
    _check_method_class_names(args.method, args.dataset, args.root, hparams)
    with _folder_held(out):
        if args.overwrite:  # only once every setting is known good: a typo deleted the old run
            _check_splits_apart(args.dataset, args.root)
            _clear_checkpoints(out)
        try:
            if args.track == "frozen":
                return _run_frozen(args, out, hparams, recipe_over)
            return _run_finetune(args, out, hparams, recipe_over, option_over)
        except RunMismatchError as err:  # told in this command's flags, not the API's
            raise err.with_remedy(MISMATCH_REMEDY) from None


@contextlib.contextmanager
def _folder_held(out: Path) -> Iterator[None]:
    """The training folder ``out``, locked by torchrun's rank 0 (or the one process): a
    second ``train`` into it waits, then resumes or reloads what the first finished, instead
    of both writing its checkpoints. Under torchrun a folder in use is an error at once: the
    other ranks would wait for rank 0 only until the process group's timeout, then fail
    (torchrun stops them when rank 0 exits). Checkpoint writes a killed process left there
    are deleted first (``.last.pt.<random>.tmp``, never read)."""
    from fsarbench.distributed.env import dist_env
    from fsarbench.locks import held

    env = dist_env()
    if not env.is_main:
        yield
        return
    with held(
        out / ".train.lock",
        what=f"training folder {out}",
        wait=not env.distributed,
        busy_remedy=": under torchrun a second train does not wait for it (its other ranks "
        "would time out first). Wait for that run to end and start this one again (it "
        "resumes or reloads what the first finished), or choose another --out",
    ):
        remove_cut_writes(out)
        yield


def _check_settings(args, hparams: dict, recipe_over: dict, option_over: dict) -> None:
    """Compose the method's hyper-parameters and the recipe as the run will (every key and
    value checked, nothing read or written), so that bad arguments stop before
    ``--overwrite`` deletes anything."""
    from fsarbench.registry import method_config

    method_config(args.method, args.dataset, **hparams)
    if args.track == "frozen":
        from fsarbench.training import frozen_recipe

        frozen_recipe(args.method, recipe_over, dataset=args.dataset)
    else:
        from fsarbench.training.finetune import finetune_recipe

        over = {"recipe": recipe_over, "options": option_over}
        finetune_recipe(args.method, args.dataset, over, protocol=args.protocol)


def _require_one_process_frozen() -> None:
    """The frozen track under torchrun with several processes: a named error on every rank.
    Its small head trains on stored features in one process (there is no data-parallel
    path), so every rank would train the same model and write the same checkpoints."""
    from fsarbench.distributed.env import require_one_process

    require_one_process("the frozen track (a head trained on stored features)", FROZEN_ALTERNATIVES)


def _frozen_fingerprint(out: Path, made: dict, info: dict) -> dict:
    """The training fingerprint of a frozen ``train`` into ``out``: ``made`` with the
    features' ``info`` less the test split's cache key (:func:`frozen_model_info`), or, for
    a folder trained before that key was left out, the old form while it still matches."""
    from fsarbench.experiments.tracks import frozen_model_info
    from fsarbench.training.loop import CheckpointError, load_checkpoint

    fingerprint = training_fingerprint(**made, data=frozen_model_info(info))
    if (out / "last.pt").is_file():
        old = training_fingerprint(**made, data=info)
        with contextlib.suppress(CheckpointError, OSError):  # the resume names it
            if load_checkpoint(out / "last.pt").get("fingerprint") == old:
                return old
    return fingerprint


def _run_frozen(args, out: Path, hparams: dict, overrides: dict) -> int:
    import torch

    from fsarbench.experiments.features import FrozenFeatureProvider
    from fsarbench.experiments.runner import build_method
    from fsarbench.training import frozen_recipe, train

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    recipe = frozen_recipe(args.method, overrides, dataset=args.dataset)
    provider = FrozenFeatureProvider(
        root=args.root,
        cache_root=args.cache,
        device=device,
        workers=args.workers,
        progress=not args.no_progress,
        protocol=args.protocol,
    )
    feats = provider(args.dataset)
    method = build_method(args.method, hparams, feats, recipe, args.seed)
    made = {
        "method": args.method,
        "model": method,
        "hparams": method.hparams,
        "recipe": recipe.identity(),
        "seed": args.seed,
        "dataset": args.dataset,
        "track": "frozen",
    }
    # the model is trained on train/val features alone, as run's (a changed test video
    # refused train's own finished model, and --overwrite retrained it)
    fingerprint = _frozen_fingerprint(out, made, feats.info)
    result = train(
        method,
        feats.splits["train"],
        feats.splits.get("val"),
        recipe,
        seed=args.seed,
        out_dir=out,
        device=device,
        progress=not args.no_progress,
        fingerprint=fingerprint,
        step_timing=True if args.step_timing else None,
    )
    _report(args, result, out)
    return 0


def _clear_checkpoints(out: Path) -> None:
    """``--overwrite``: remove the checkpoints of whatever run ``out`` held, and move its
    records (and summary) aside to ``out/replaced-<UTC time>/replaced-records``, a folder
    no report reads: they describe a model that no longer exists, and the leaderboard listed
    them beside the new run's (rank 0 only)."""
    import time

    from fsarbench.distributed.env import dist_env

    if not dist_env().is_main:  # torchrun's rank 0 (before init every rank says rank 0)
        return
    for name in ("last.pt", "best.pt"):
        (out / name).unlink(missing_ok=True)
    old = [out / name for name in ("records", "summary.csv") if (out / name).exists()]
    if old:
        aside = out / time.strftime("replaced-%Y%m%dT%H%M%SZ", time.gmtime())
        aside.mkdir(parents=True, exist_ok=True)
        for path in old:  # not named records/: reports search every records/ folder
            path.rename(aside / f"replaced-{path.name}")
        print(f"--overwrite: the replaced run's records moved to {aside}")


def _run_finetune(args, out: Path, hparams: dict, recipe_over: dict, option_over: dict) -> int:
    from fsarbench.distributed.env import init_distributed, is_main, shutdown_distributed
    from fsarbench.experiments.feasibility import check_split_classes
    from fsarbench.experiments.tracks import training_precision
    from fsarbench.training.finetune import _check_split as check_rank_split
    from fsarbench.training.finetune import build_video_method, finetune, finetune_recipe
    from fsarbench.training.finetune_recipe import precision_entry

    recipe = finetune_recipe(
        args.method,
        args.dataset,
        {"recipe": recipe_over, "options": option_over},
        protocol=args.protocol,
    )
    env, device = init_distributed(args.device)
    if env.distributed and device.type == "cpu" and env.is_main:  # 1 thread unless set
        import torch

        print(torchrun_threads_note(torch.get_num_threads()), flush=True)
    try:
        check_rank_split(recipe.recipe)  # before the probe of every video, not after it
        ds = _dataset_main_first(args.dataset, args.root)
        splits, skipped = {}, []
        for name in ("train", "val"):
            splits[name], bad = _usable_as_rank0(
                ds, name, recipe, args.bad_videos, shot=None, cache=args.cache
            )
            skipped += bad
            # as run refuses it: a class without a usable video trained (or selected) on the
            # other classes, under the dataset's name; val only where validation runs
            if name == "train" or recipe.recipe.val_episodes > 0:
                check_split_classes(args.dataset, name, splits[name].classes, ds.class_names(name))
        test_skipped = []
        if args.test_episodes:  # before training: --bad-videos error stops here
            usable, test_skipped = _usable_as_rank0(
                ds, "test", recipe, args.bad_videos, shot=max(args.shots), cache=args.cache
            )
            check_split_classes(args.dataset, "test", usable.classes, ds.class_names("test"))
        model = build_video_method(
            args.method,
            recipe.options,
            device,
            seed=args.seed,
            num_train_classes=splits["train"].num_classes,
            hparams=hparams,
            dataset=args.dataset,
        )
        if is_main():
            print(
                f"finetune {args.method} on {args.dataset}: {env.world_size} process(es), "
                f"device {device}, precision {model.precision.name}, "
                f"{recipe.recipe.steps} steps x {recipe.recipe.episodes_per_step} episodes"
            )
        fingerprint = training_fingerprint(
            method=args.method,
            model=model,
            hparams=model.hparams,
            recipe=recipe.identity(),
            seed=args.seed,
            dataset=args.dataset,
            track="finetune",
            data={
                "split_md5": ds.split_md5s(),
                "skipped_videos": sorted(skipped),
                "files": files_stamp([*splits["train"].records, *splits["val"].records]),
                **precision_entry(training_precision(str(device), recipe.options.amp)),
            },
        )
        try:
            result = finetune(
                model,
                splits["train"],
                splits["val"],
                recipe,
                seed=args.seed,
                out_dir=out,
                device=device,
                progress=not args.no_progress,
                fingerprint=fingerprint,
                step_timing=True if args.step_timing else None,
            )
        except VideoDecodeError as err:  # damaged past the frames the probe decodes
            raise _damaged(args, ds, splits, recipe, err) from None
        if is_main():
            _report(args, result, out)
        if args.test_episodes:
            _test(args, ds, model, recipe, device, out, skipped, test_skipped, result.summary())
    finally:
        shutdown_distributed()
    return 0


def _damaged(args, ds, splits, recipe, err: VideoDecodeError) -> RuntimeError:
    """The error to stop with once every damaged train and val video is found and recorded
    (by the rank that met the video: under torchrun another rank may not)."""
    from fsarbench.distributed.env import dist_env
    from fsarbench.training.damaged import (
        damaged_message,
        find_damaged,
        met,
        record_damaged,
        split_of,
    )

    first = met(err)
    record_damaged(ds.variant, first, args.cache)  # kept, whatever stops the search below
    rerun = (
        "Re-run with --overwrite and they are left out (named in the records; the model's "
        "episodes change, so it trains from its first step), or replace the files first"
    )
    if args.bad_videos == "error":  # --overwrite alone meets the same refusal again
        rerun = (
            "Replace the files (--bad-videos error stops at a damaged video), or re-run with "
            "--bad-videos skip --overwrite to leave them out (named in the records)"
        )
    where = split_of(splits, err.path)
    if dist_env().world_size > 1:  # the other ranks wait in a collective: no long search
        root = f" --root {args.root}" if args.root else ""
        rerun += (
            f"; first run 'python -m fsarbench data check {args.dataset}{root} --full' to "
            "find any other damaged file (searching here would outlast the process group's "
            "timeout)"
        )
        return RuntimeError(damaged_message(args.dataset, where, err, first, rerun))
    found = find_damaged(splits, err, min_frames=recipe.options.min_frames)
    record_damaged(ds.variant, found, args.cache)
    return RuntimeError(damaged_message(args.dataset, where, err, found, rerun))


def _check_method_class_names(
    method: str, dataset: str, root: str | None, hparams: dict[str, object]
) -> None:
    """A method that uses class names (clip-fsar's prompts) refuses names it cannot use
    before anything is extracted or trained (it met them at the first step, or at the first
    validation: hours in)."""
    from fsarbench.data.datasets import SPLITS, get_dataset
    from fsarbench.registry import check_class_names, method_info

    if method_info(method).cls.uses_class_names:
        ds = get_dataset(dataset, root=root)
        names = [name for split in SPLITS for name in ds.class_names(split)]
        check_class_names(method, dataset, hparams, names)


def _check_splits_apart(name: str, root: str | None) -> None:
    """Before ``--overwrite`` deletes a model: a dataset whose splits share a class or a video
    is refused first (the check where training reads the splits came after the deletion).
    Generated datasets are made apart, and listing them would render their videos here; an
    unregistered name is named where training opens it."""
    from fsarbench.data.datasets import DATASETS, get_dataset, is_synthetic, listed_apart

    if name in DATASETS and not is_synthetic(name):
        listed_apart(name, get_dataset(name, root=root))


def _dataset_main_first(name: str, root: str | None):
    """The dataset, prepared by rank 0 alone (``synth`` generates its videos on first use,
    which ranks must not do at once), then opened by the other ranks."""
    from fsarbench.data.datasets import get_dataset, listed_apart
    from fsarbench.distributed.env import barrier, is_main

    ds = get_dataset(name, root=root)
    if is_main():
        ds.videos("train")
    barrier()
    listed_apart(name, ds)
    return ds


def _usable_as_rank0(*args, **kwargs):
    """:func:`_usable` on rank 0, and its answer on every rank. Each rank probing for itself
    could keep other videos (a file damaged mid-way decodes or not from one read to the
    next): the ranks trained on different splits, and rank 0's record named only its own
    left-out videos."""
    from fsarbench.distributed.collectives import broadcast_object
    from fsarbench.distributed.env import is_main

    return broadcast_object(_usable(*args, **kwargs) if is_main() else None)


def _usable(ds, split: str, finetune, policy: str, shot: int | None, cache: str | None = None):
    """The usable videos of ``split`` for ``finetune`` (a FinetuneRecipe), left-out ones
    printed and returned with causes; probe results kept under the cache root ``cache``."""
    from fsarbench.data.probe_cache import ProbeCache, probe_cache_path
    from fsarbench.features.cache import default_cache_root
    from fsarbench.training.clip_data import usable_split
    from fsarbench.training.trainer import val_way_shot

    recipe = finetune.recipe
    # validation episodes are capped at the val split's classes, as in run
    way = val_way_shot(recipe, len(ds.class_names(split)))[0] if split == "val" else recipe.way
    kept, skipped = usable_split(
        ds.videos(split),
        split,
        dataset=ds.variant,
        flip_ok=ds.flip_ok,
        way=way,
        shot=shot or (recipe.episode_shot if split == "train" else recipe.val_shot),
        queries=recipe.queries if split == "train" else 1,
        on_bad=policy,
        min_frames=finetune.options.min_frames,
        probes=ProbeCache(probe_cache_path(cache or default_cache_root(), ds.variant)),
    )
    if skipped:
        print(f"{ds.variant}/{split}: left out {len(skipped)} video(s): " + "; ".join(skipped[:3]))
    return kept, skipped


def _test(
    args,
    ds,
    model,
    recipe,
    device,
    out: Path,
    skipped: list[str],
    probed: list[str],
    training: dict,
) -> None:
    """Test evaluation of the selected weights through the one evaluation path: the trained
    backbone extracts the test split once (rank 0), then the head is evaluated on those
    features, sharded over the ranks; rank 0 writes one record per shot. ``skipped``: the
    train and val videos left out; ``probed``: the test videos the probe left out (the
    extraction leaves them out too, and names them with its own causes in the records);
    ``training``: the training's summary, kept in each record (it was left empty)."""
    from fsarbench.distributed.env import barrier, is_main
    from fsarbench.distributed.sharded_eval import evaluate_sharded
    from fsarbench.episode_streams import draw_test_manifest_fast
    from fsarbench.experiments.feasibility import check_split_classes
    from fsarbench.experiments.tracks import extract_finetune_test, training_precision
    from fsarbench.io import stable_hash
    from fsarbench.provenance import code_parts, pipeline_digest
    from fsarbench.results import make_record, rebuild_summary, save_result
    from fsarbench.training.finetune_recipe import record_identity

    state = model.state_dict()

    def features(retry_failed: bool):
        return extract_finetune_test(
            ds,
            state,
            recipe.options,
            cache_root=args.cache,
            device=str(device),
            progress=not args.no_progress and is_main(),
            retry_failed=retry_failed,
        )

    if is_main():
        features(retry_failed=True)
    barrier()
    # every rank reads the cache rank 0 made as it is: a video failed there and retried on
    # another rank could decode on one and not another (other manifests, a stop after training)
    test, bad = features(retry_failed=False)
    known = {entry.split(": ")[0] for entry in probed}
    unseen = {v: cause for v, cause in bad.items() if f"test/{v}" not in known}
    if unseen:  # damaged past the frames the probe decodes: recorded, so the next probe knows
        _left_out_in_extraction(args, ds, unseen)
    check_split_classes(args.dataset, "test", test.classes, ds.class_names("test"))
    precision = training_precision(str(device), recipe.options.amp)  # the test features'
    identity, record_features = record_identity(recipe.to_dict(), ds.split_md5s(), precision)
    # as run records it: the model's code and the decoding pipeline (a record without code
    # counted as current under any later code)
    code = {**code_parts(model), "pipeline": pipeline_digest()}
    for shot in args.shots:
        manifest = draw_test_manifest_fast(
            test.classes,
            split_variant=ds.variant,
            way=recipe.recipe.way,
            shot=shot,
            queries=1,
            episodes=args.test_episodes,
            seed=0,
            class_names=ds.class_names("test"),
        )
        result = evaluate_sharded(
            model.inner,
            test.store,
            manifest,
            device=device,
            progress=not args.no_progress and is_main(),  # one bar, not one per rank
            class_names=ds.class_names("test"),
        )
        if not is_main():
            continue
        record = make_record(
            result,
            method=args.method,
            dataset=args.dataset,
            split_variant=ds.variant,
            manifest=manifest,
            track="finetune",
            hparams=model.hparams,
            recipe=identity,
            features=record_features,
            train_seed=args.seed,
            class_names=ds.class_names("test"),
            skipped_videos=[*skipped, *(f"test/{v}: {cause}" for v, cause in bad.items())],
            protocol=recipe.options.protocol,
            train_way=recipe.recipe.way,
            train_shot=recipe.recipe.shot,
            compute=compute_environment(device),
            training=training,
            provenance={"code": code, "code_digest": stable_hash(code)},
        )
        save_result(out, record, result)
        rebuild_summary(out)
        print(
            f"test {manifest.way}-way {shot}-shot: {fixed(result.accuracy)} ± {fixed(result.ci95)} "
            f"({result.episodes} episodes; ± is the {result.spread_name})"
        )
        if caveat := caveat_line(result):
            print(caveat)


def _left_out_in_extraction(args, ds, bad: dict[str, str]) -> None:
    """Test videos the probe passed but the extraction could not read: recorded as
    unreadable in the probe cache; an error under ``--bad-videos error``, else printed (and
    named in the records, as the probe's are)."""
    from fsarbench.distributed.env import is_main
    from fsarbench.training.clip_data import UnusableSplitError
    from fsarbench.training.damaged import extraction_failures, record_damaged

    listed = "; ".join(f"test/{v}: {cause}" for v, cause in list(bad.items())[:3])
    if is_main():
        record_damaged(ds.variant, extraction_failures(ds, bad), args.cache)
    if args.bad_videos == "error":
        raise UnusableSplitError(
            f"{len(bad)} test video(s) of {ds.variant} could not be read by the extraction "
            f"(policy 'error'): {listed}; they are now recorded as unreadable"
        )
    if is_main():
        print(f"{ds.variant}/test: left out {len(bad)} more video(s) in extraction: {listed}")


def _report(args, result, out: Path) -> None:
    if result.best_val is None:
        chosen = "no val episodes, so no selection: best.pt holds the last step's weights"
    else:
        chosen = f"best val accuracy {result.best_val:.2f} at step {result.best_step}"
    print(
        f"{args.method} ({args.track}) on {args.dataset}: {chosen} ({result.seconds:.0f} s); "
        f"checkpoints in {out}"
    )
    trend = loss_trend(result.history)
    if trend is not None:
        stage, first, last, window = trend
        print(
            f"training loss ({stage} stage): {first:.4g} over its first {window} steps -> "
            f"{last:.4g} over its last {window}"
        )
    if result.step_times:
        print(format_step_times(result.step_times))
