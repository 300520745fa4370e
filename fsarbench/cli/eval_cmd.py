"""``python -m fsarbench eval``: one method on stored features and a manifest, or a trained
checkpoint (frozen or finetune track) on a dataset's seeded test episodes.

With ``--dataset D --way N --shot K --episodes E`` (no ``--features``), the test manifest is
the one ``run`` draws for that setting, and the features are the frozen track's cache — or,
for a finetune checkpoint, the test split extracted once by the checkpoint's backbone (the
cache key names the backbone's weights by their digest): one evaluation path for both tracks.

Under ``torchrun`` the unique videos and the episode batches are spread over the ranks and
the predictions gathered to rank 0, which prints and writes exactly the records of a
1-process run (see :mod:`fsarbench.distributed.sharded_eval`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsarbench.cli.common import (
    add_splits_dir_argument,
    apply_splits_dir,
    at_least,
    device_name,
    episode_count,
    episodes_help,
    parse_hparams,
    seed_value,
    writable_folder,
)
from fsarbench.cli.eval_checks import (
    CUSTOM_DATASET,
    CheckpointMismatchError,
    CheckpointOrigin,
    cache_protocol,
    cache_split_md5,
    changed_hparams,
    check_cache_fits,
    check_checkpoint,
    check_num_train_classes,
    episodes_note,
    eval_variant_label,
    features_origin,
    trained_name,
)
from fsarbench.data.protocols import list_protocols
from fsarbench.environment import compute_environment
from fsarbench.episode_streams import draw_test_manifest_fast
from fsarbench.episodes import (
    Manifest,
    ManifestError,
    check_unique_video_ids,
    manifest_class_names,
)
from fsarbench.evaluate import autocast_name, device_of
from fsarbench.features.made_with import store_made_with
from fsarbench.features.open import feature_identity, open_feature_store
from fsarbench.guards import NONFINITE_POLICIES
from fsarbench.io import CUT_WRITE_AGE_S, remove_cut_writes, stable_hash
from fsarbench.methods import FewShotMethod
from fsarbench.provenance import code_digest, code_parts, pipeline_digest
from fsarbench.registry import create_method, stored_hparams
from fsarbench.results import make_record, rebuild_summary, save_result
from fsarbench.stats.bounds import caveat_line
from fsarbench.stats.rounding import fixed

#: Seed of the initial weights of a method evaluated without a checkpoint.
UNTRAINED_SEED = 0

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a method on stored features and an episode manifest",
        description="Evaluate METHOD on the episodes of MANIFEST over FEATURES and print "
        "accuracy ± 95% CI; with --out, write a result record. Under torchrun the episodes "
        "are sharded over the processes and the records gathered to rank 0.",
    )
    p.add_argument("method", help="registered method name (see 'list methods')")
    p.add_argument(
        "--features",
        default=None,
        help="[N, T, D] .pt file or feature-cache folder (with --manifest); without it, "
        "--dataset's test split is used",
    )
    p.add_argument(
        "--manifest",
        default=None,
        help="manifest JSON (Manifest.save), or a run's stored test episodes "
        "(RUNS/manifests/*.npz: the official ones)",
    )
    p.add_argument("--way", type=at_least(2), default=None, help="dataset mode: N-way (5)")
    p.add_argument("--shot", type=at_least(1), default=None, help="dataset mode: K-shot (1)")
    p.add_argument(
        "--episodes",
        type=episode_count,
        default=None,
        help=episodes_help("dataset mode: test episodes"),
    )
    p.add_argument(
        "--seed", type=seed_value, default=None, help="dataset mode: seed of the test episodes (0)"
    )
    p.add_argument("--root", default=None, help="dataset mode: data root (default $FSAR_DATA)")
    p.add_argument("--cache", default=None, help="dataset mode: feature cache root")
    add_splits_dir_argument(p)
    p.add_argument(
        "--protocol",
        default=None,
        choices=list_protocols(),
        help="dataset mode, frozen track: the features' protocol (default seed; a checkpoint "
        "is evaluated on the protocol and feature preset it was trained with)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="a best.pt/last.pt written by 'train', or a plain method state dict (.pt), "
        "whose number is recorded as the variant 'weights from FILE' (nothing in it says how "
        "or on what it was trained)",
    )
    p.add_argument(
        "--hparams",
        default="{}",
        help="JSON of method hyper-parameters, e.g. '{\"lam\": 0.5}' (over a trainer "
        "checkpoint's own: a value other than it was trained with is recorded as the variant "
        "'evaluated with ...')",
    )
    p.add_argument(
        "--num-train-classes",
        type=at_least(1),
        default=None,
        help="meta-train classes of methods with a class head (default: the checkpoint's; "
        "another count than the checkpoint's is refused)",
    )
    p.add_argument(
        "--batch-episodes",
        type=at_least(1),  # refused before any extraction (0 was refused after it)
        default=None,
        help="episodes matched per call (default: the head's fastest in make bench, else 500; "
        "the same predictions; see docs/speed.md 2b)",
    )
    p.add_argument(
        "--interval",
        choices=["normal", "t"],
        default="normal",
        help="95%% CI: 1.96 std / sqrt(n) as the reference code (normal) or Student's t "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--device", type=device_name, default=None, help="cpu or cuda (default: cuda if available)"
    )
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset name recorded with the result; it also selects the method's "
        "per-dataset reference presets (e.g. HyRSM on kinetics100). With --features, a "
        "feature cache names its own dataset (default: that one; 'custom' for a tensor file)",
    )
    p.add_argument(
        "--cross-dataset",
        action="store_true",
        help="evaluate a checkpoint trained on another dataset than --dataset (recorded as "
        "the variant 'trained on <dataset>', kept out of paper tables)",
    )
    p.add_argument(
        "--out",
        type=writable_folder,
        default=None,
        help="results folder for the record (an interrupted eval into it resumes its "
        "finished batches)",
    )
    add_nonfinite_argument(p)
    p.set_defaults(func=run)


def add_nonfinite_argument(p: argparse.ArgumentParser) -> None:
    """``--nonfinite error|count_wrong`` (shared by ``eval`` and ``run``)."""
    p.add_argument(
        "--nonfinite",
        choices=list(NONFINITE_POLICIES),
        default="error",
        help="queries with NaN/inf logits: 'error' stops and names them (default); "
        "'count_wrong' counts them as wrong and records how many",
    )


def read_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """``--checkpoint``'s contents (``{}`` without one), read once per command: every later
    use (weights, recipe, training seed) then sees the same file, even if a training still
    running replaces it meanwhile."""
    from fsarbench.training.loop import load_checkpoint

    return load_checkpoint(args.checkpoint) if args.checkpoint else {}


def method_state(
    data: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(state dict, recipe, hyper-parameters) of a plain state-dict file's or a trainer
    checkpoint's contents (its hyper-parameters are those the weights were trained with)."""
    if isinstance(data.get("method"), dict):
        return data["method"], dict(data.get("recipe") or {}), dict(data.get("hparams") or {})
    return data, {}, {}


def build_method(
    args: argparse.Namespace,
    feature_shape: tuple[int, int],
    checkpoint: dict[str, Any] | None = None,
) -> FewShotMethod:
    """The method of ``args`` with its checkpoint (behind the recipe's adapter, if any);
    ``checkpoint``: its contents when already read (:func:`read_checkpoint`). Without a
    checkpoint, its initial weights drawn from :data:`UNTRAINED_SEED`.

    Hyper-parameters: those stored in the checkpoint, then ``--hparams``; the method's
    presets for ``--dataset`` fill only what neither gives."""
    from fsarbench.training import AdaptedMethod, FrameAdapter

    t, d = feature_shape
    data = read_checkpoint(args) if checkpoint is None else checkpoint
    state, recipe, saved = method_state(data) if args.checkpoint else ({}, {}, {})
    saved = stored_hparams(args.method, saved)
    # initial weights from one seed: without a checkpoint they are the weights evaluated, so
    # two runs (and the ranks of one torchrun) evaluate one model under one record id
    torch.manual_seed(UNTRAINED_SEED)
    method = create_method(
        args.method,
        feature_dim=d,
        seq_len=t,
        num_train_classes=args.num_train_classes,
        dataset=args.dataset,
        **{**saved, **parse_hparams(args.hparams)},
    )
    if not args.checkpoint:
        return method
    from fsarbench.training.export import is_finetune_state

    if is_finetune_state(state):  # torch listed ~120 unexpected backbone keys instead
        raise CheckpointMismatchError(
            f"{args.checkpoint} is a finetune-track checkpoint (backbone and head): it "
            "evaluates on decoded clips, not on stored features. Give --dataset D (with "
            "--way/--shot/--episodes) instead of --features/--manifest"
        )
    if recipe.get("adapter") == "linear_ln" or (not recipe and _adapter_only(state, method)):
        method = AdaptedMethod(method, FrameAdapter(d), d)
    try:
        method.load_state_dict(state)
    except RuntimeError as err:  # torch names the missing, unexpected and mis-shaped keys
        raise CheckpointMismatchError(
            f"the weights in {args.checkpoint} do not fit {args.method!r} at feature size "
            f"{d} and {t} frames: {' '.join(str(err).split())} Is it another method's "
            "checkpoint, or one made on other features?"
        ) from None
    return method


def _adapter_only(state: dict[str, torch.Tensor], method: FewShotMethod) -> bool:
    """A plain state dict saved from a frozen-track model (``best.pt``'s ``"method"``): the
    head behind the frame adapter (keys ``adapter.*``), which the bare head does not have
    (a head with an ``adapter`` of its own loads as it is)."""
    own = method.state_dict()
    return any(k.startswith("adapter.") and k not in own for k in state)


def run(args: argparse.Namespace) -> int:
    from fsarbench.distributed.env import init_distributed, is_main, shutdown_distributed
    from fsarbench.distributed.sharded_eval import evaluate_sharded, rank_partial_path

    apply_splits_dir(args)
    _check_mode(args)
    env, device = init_distributed(args.device)
    try:
        checkpoint = read_checkpoint(args)
        if args.features:
            opened = open_feature_store(args.features)
            _warn_if_transposed(args.features, opened.feature_shape)
            args.dataset, split = features_origin(opened, args.dataset, args.features)
            _check_feature_flags(args, opened)
            origin = _checked_checkpoint(args, checkpoint)
            check_cache_fits(origin, opened, args.features)
            manifest = Manifest.load(args.manifest)
            _check_manifest_flags(args, manifest)
            store, video_classes = _serving_store(opened, manifest)
            note = episodes_note(manifest, video_classes)
            method, meta, names = (
                build_method(args, store.feature_shape, checkpoint),
                _features_meta(args.features, opened, split),
                _names(opened, video_classes, manifest),
            )
        else:
            origin, split, note = _checked_checkpoint(args, checkpoint), "test", ""
            store, manifest, method, meta, names = _dataset_mode(args, device, checkpoint)
        meta["made_with"] = store_made_with(store)
        meta["name"] = trained_name(origin.name, checkpoint, args.dataset)
        meta["variant"] = eval_variant_label(
            checkpoint=bool(args.checkpoint),
            stored=_stored_kind(args.features, meta["features"]),
            trained_on=origin.trained_on,
            split=split,
            changed=changed_hparams(
                checkpoint, parse_hparams(args.hparams), args.method, args.dataset
            ),
            weights_file=_plain_weights_file(args.checkpoint, checkpoint),
            other_code=_trained_with_other_code(checkpoint, method),
            training=", ".join(
                label
                for label in (
                    _training_state(args.checkpoint, checkpoint, meta, origin.trained_on),
                    _run_model_again(args, checkpoint),
                )
                if label
            ),
            episodes=note,
        )
        meta["training"] = checkpoint_training(checkpoint)
        if args.amp and autocast_name(device, True) == "off":
            log.warning(
                "--amp: mixed precision is for CUDA; on %s this evaluation runs in float32 "
                "(its record says autocast: off)",
                device.type,
            )
        if note:
            log.warning(
                "%s: %s (seed %d, %s %s): recorded as a variant, never ranked as that draw",
                args.manifest,
                note,
                manifest.spec.seed,
                manifest.spec.dataset or "no dataset",
                manifest.spec.split or "no split",
            )
        method = method.to(device)
        partial, partial_tag = _partial_evaluation(args, meta, method, manifest, device)
        result = evaluate_sharded(
            method,
            store,
            manifest,
            batch_episodes=args.batch_episodes,
            interval=args.interval,
            device=device,
            autocast=args.amp,
            progress=is_main(),
            nonfinite=args.nonfinite,
            class_names=names,  # passed only to heads with uses_class_names
            inputs=meta.get("features"),
            partial_path=partial,
            partial_tag=partial_tag,
        )
        if result is not None:
            meta = {**meta, **_weights_identity(args.checkpoint, checkpoint)}
            meta["autocast"] = autocast_name(device, args.amp)
            _report(args, method, manifest, result, env.world_size, meta, names)
        if partial is not None:  # recorded (rank 0), or merged into rank 0's result
            rank_partial_path(partial).unlink(missing_ok=True)
            if is_main():
                _remove_other_layouts(partial, env.world_size)
            with contextlib.suppress(OSError):  # left while other evaluations keep files
                partial.parent.rmdir()
    finally:
        shutdown_distributed()
    return 0


def _remove_other_layouts(partial: Path, world: int) -> None:
    """This evaluation's partial files saved under another number of processes (a resume
    with another world size cannot use them; they stayed behind once it was recorded), and
    the cut writes an earlier killed evaluation left in the folder. The files of this
    evaluation's own ranks are each rank's to delete."""
    stem, suffix = partial.stem, partial.suffix
    own = (
        {partial.name} if world == 1 else {f"{stem}.rank{r}of{world}{suffix}" for r in range(world)}
    )
    for other in [partial, *partial.parent.glob(f"{stem}.rank*of*{suffix}")]:
        if other.name not in own:
            other.unlink(missing_ok=True)
    if partial.parent.is_dir():
        remove_cut_writes(partial.parent, older_than=CUT_WRITE_AGE_S)


def _partial_evaluation(
    args: argparse.Namespace, meta: dict[str, Any], method, manifest: Manifest, device
) -> tuple[Path | None, str]:
    """Where an evaluation into ``--out`` keeps its finished batches (``None`` without
    ``--out``), and the tag a re-run must match to resume them: besides the episodes, the
    method's name, hyper-parameters, weights, code and non-finite policy
    (:func:`fsarbench.evaluate.resume_tag`), the features' identity, the split, the autocast
    dtype and the device type. An interrupted eval of 10,000 episodes on a large pool started
    again from its first batch."""
    if not args.out:
        return None, ""
    identity = {
        "name": meta["name"],
        "variant": meta.get("variant"),
        "features": meta.get("features"),
        "split": meta.get("split", "test"),
        "autocast": autocast_name(device, args.amp),
        "device": torch.device(device).type,  # not the interval: it changes no prediction
        "checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
        "manifest": manifest.hash,
    }
    tag = stable_hash(identity)
    return Path(args.out) / "partial" / f"eval-{tag}.npz", tag


def checkpoint_training(data: Any) -> dict[str, Any]:
    """What a trainer checkpoint says of the training behind its weights, for the record
    (:meth:`~fsarbench.training.loop.TrainResult.summary`'s keys): a ``best.pt``'s selected
    step and val accuracy; a ``last.pt``'s steps and loss trend, with no selected step and the
    step its weights are from (``weights_step``); ``{}`` for a plain weights file."""
    if not isinstance(data, dict):
        return {}
    if "selection" in data:
        val = data.get("val_accuracy")
        val = round(float(val), 4) if isinstance(val, (int, float)) else None
        return {"selected_step": data.get("step"), "val_accuracy": val}
    if isinstance(data.get("history"), list):  # a resume point: the weights of its step
        from fsarbench.training.loop import TrainResult

        history = data["history"]
        try:
            summary = TrainResult(history).summary()
        except (KeyError, TypeError, AttributeError):  # a history of another layout
            return {}
        last = history[-1].get("step") if history else None
        return {**summary, "selected_step": None, "weights_step": last}
    return {}


def _provenance(method: torch.nn.Module, *, from_dataset: bool) -> dict[str, Any]:
    """The code behind a record: the method's, and where ``eval`` made or read the
    dataset's features itself (``--dataset``), the decoding pipeline's, as ``run`` and
    ``train`` record it (a record of ``eval --dataset`` stayed current after a change to
    decoding that marked the run's records of the same features stale). Features from a
    ``--features`` file were made elsewhere: their pipeline is not this one's to name."""
    code = code_parts(method)
    if from_dataset:
        code = {**code, "pipeline": pipeline_digest()}
    return {"code": code, "code_digest": stable_hash(code)}


def _trained_with_other_code(data: dict[str, Any], method: torch.nn.Module) -> bool:
    """Whether a checkpoint was trained by other code than the installed (method packages,
    harness, and for the finetune track the clip pipeline: its fingerprint's
    ``code_digest``). Its number is then that of a model no run of this code would train,
    scored by this code's head (a model trained with mean pooling was scored with max
    pooling and filed as the current method). A finetune model's digest is its head's code
    plus the pipeline: its backbones come from frameworks or from fsarbench itself
    (:func:`~fsarbench.features.backbones.create_backbone`), neither a method package."""
    fingerprint = data.get("fingerprint")
    if not isinstance(fingerprint, dict) or not fingerprint.get("code_digest"):
        return False
    if fingerprint.get("track") == "frozen":
        return fingerprint["code_digest"] != code_digest(method)
    if fingerprint.get("track") == "finetune":
        return fingerprint["code_digest"] != _provenance(method, from_dataset=True)["code_digest"]
    return False


def _resume_point(data: dict[str, Any]) -> str:
    """A ``last.pt``'s weights in words, from its history's last row: a finished run's holds
    ``step = 0`` of the stage after its last, and was labelled "resume point at step 0" (read
    as the untrained model); a stage's ``step`` counts within the stage."""
    history = data.get("history")
    last = history[-1] if isinstance(history, list) and history else {}
    if not isinstance(last, dict) or not isinstance(last.get("step"), int):
        return f"resume point at step {data.get('step')}"
    stage = f" of stage {last['stage']}" if isinstance(last.get("stage"), str) else ""
    return f"resume point: the weights after step {last['step']}{stage}"


def _training_state(
    path: str | None, data: dict[str, Any], meta: dict[str, Any], trained_on: str | None
) -> str:
    """What makes a trainer checkpoint other than the finished run's val-selected model, in
    words (``""`` when nothing does): a resume point (``last.pt``: the last step's weights),
    a ``best.pt`` whose run is unfinished (its ``last.pt`` stops mid-stage), or, on the frozen
    track, train/val features other than the dataset's now (a video damaged or replaced
    since; on the finetune track, other split lists or train/val files). Each was filed as
    the run of the protocol and replaced its record."""
    if not path or not isinstance(data.get("method"), dict):
        return ""
    labels = []
    if "selection" not in data and "history" in data:
        labels.append(f"{_resume_point(data)}, not val-selected")
    else:
        step = _resume_step(Path(path).with_name("last.pt"), Path(path))
        if step is None:
            labels.append("its last.pt cannot be read: finished training or not is unknown")
        elif step:
            labels.append(f"unfinished training (its last.pt is at step {step})")
    fingerprint = data.get("fingerprint") or {}
    if fingerprint.get("track") == "frozen" and not trained_on:
        trained = (fingerprint.get("data") or {}).get("cache_keys") or {}
        now = (meta.get("features") or {}).get("cache_keys") or {}
        if any(k in trained and k in now and trained[k] != now[k] for k in ("train", "val")):
            labels.append("trained on other train/val features")
    if fingerprint.get("track") == "finetune" and not trained_on:
        labels += _finetune_data_labels(fingerprint.get("data") or {}, meta.get("train_data"))
    return ", ".join(labels)


def _run_model_again(args: argparse.Namespace, data: dict[str, Any]) -> str:
    """A label for a finetune model of ``--out``'s own run (``OUT/models/...``) evaluated
    into that folder: ``eval`` names such a record otherwise than ``run`` does, and the one
    model stood as two ranked systems ('protonet @520bb0e1' and '@e560292c') until the next
    run superseded one; as a variant it stays beside the run's record, not in its place."""
    fingerprint = data.get("fingerprint") or {}
    if not (args.out and args.checkpoint) or fingerprint.get("track") != "finetune":
        return ""
    models = (Path(args.out) / "models").resolve()
    if not Path(args.checkpoint).resolve().is_relative_to(models):
        return ""
    return "the run's model evaluated again (its run record stands)"


def _finetune_data_labels(trained: dict[str, Any], now: dict[str, Any] | None) -> list[str]:
    """Whether a finetune model's train/val data (its fingerprint's ``trained``) is the
    dataset's ``now`` (:func:`_finetune_train_data`): other files, or only other train/val
    split lists (another copy of them, or an edit that moved no file). The test list is not
    the model's (it was compared too: a test-list change made the model a variant)."""
    if not now:
        return []
    if "files" in trained and trained["files"] != now["files"]:
        return ["trained on other train/val videos"]
    lists = trained.get("split_md5")
    if isinstance(lists, dict) and any(
        k in lists and lists[k] != now["split_md5"][k] for k in ("train", "val")
    ):
        return ["trained with other train/val split lists"]
    return []


def _resume_step(last: Path, given: Path) -> int | None:
    """The step within its stage that ``last`` (the run's resume point beside ``given``)
    stopped at: ``0`` at a stage's end or when there is no ``last.pt``, ``None`` when it
    cannot be read (a damaged resume point says nothing either way)."""
    if not last.exists() or last.resolve() == given.resolve():
        return 0
    try:
        state = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
        return int(state.get("step") or 0)
    except Exception:  # noqa: BLE001 - whatever the damage, the answer is "unknown"
        return None


def _plain_weights_file(path: str | None, data: dict[str, Any]) -> str | None:
    """The file name of ``--checkpoint`` when it is a plain state dict (no trainer checkpoint:
    no recipe, dataset or training seed to file its number under), else ``None``."""
    if not path or isinstance(data.get("method"), dict):
        return None
    return Path(path).name


def _checked_checkpoint(args: argparse.Namespace, data: dict[str, Any]) -> CheckpointOrigin:
    """:func:`~fsarbench.cli.eval_checks.check_checkpoint` for ``--checkpoint`` (what its
    records are named, and the dataset it was trained on when ``--cross-dataset``)."""
    if not args.checkpoint:
        return CheckpointOrigin(args.method)
    check_num_train_classes(data, args.num_train_classes, args.checkpoint)
    return check_checkpoint(
        data,
        method=args.method,
        dataset=args.dataset,
        where=args.checkpoint,
        cross_dataset=args.cross_dataset,
    )


def _stored_kind(features_path: str | None, features: dict[str, Any]) -> str | None:
    """``"cache"`` or ``"file"`` for ``eval --features`` (a keyed cache, or anything else),
    ``None`` for ``eval --dataset`` (:func:`~fsarbench.cli.eval_checks.eval_variant_label`)."""
    if not features_path:
        return None
    return "cache" if "cache_key" in features else "file"


def _features_meta(path: str, store, split: str) -> dict[str, Any]:
    """What an ``eval --features`` record says it was evaluated on: the features' identity
    and, for a dataset's cache, the md5 of the split list it was extracted from (so that the
    record pairs only with records of the same test videos) and the videos it could not
    extract."""
    from fsarbench.features.cache import FeatureCache

    features: dict[str, Any] = feature_identity(path, store)
    md5 = cache_split_md5(store)
    if md5:
        features["split_md5"] = {split: md5}
    meta = {"features": features, "split": split, "protocol": cache_protocol(store)}
    if isinstance(store, FeatureCache):
        meta["skipped_videos"] = _failed_videos(store, split)
    return meta


def _weights_identity(checkpoint: str | None, data: dict[str, Any]) -> dict[str, Any]:
    """What tells the evaluated weights apart in the record: the training seed of a trainer
    checkpoint (records of several seeds then pool as seeds of one system), or, for weights
    without one, the file's md5 (``features["checkpoint_md5"]``), so evaluating a second
    checkpoint never overwrites the first one's record."""
    if not checkpoint:
        return {}
    from fsarbench.io import md5_file

    fingerprint = data.get("fingerprint") or {}
    if isinstance(fingerprint.get("seed"), int):
        return {"train_seed": fingerprint["seed"]}
    return {"checkpoint_md5": md5_file(checkpoint)}


def _serving_store(store, manifest: Manifest):
    """The store ``manifest``'s indices point into, and its videos' class ids (``None`` for
    a tensor file). A cache with failed videos serves either its full index space (a manifest
    over all ``len(cache)`` videos, which must then avoid the failed ones) or its usable
    videos re-indexed ``0..U-1`` (a manifest drawn over ``cache.usable_videos``, told apart by
    its ``num_videos``)."""
    from fsarbench.features.cache import FeatureCache
    from fsarbench.features.store import SubsetFeatureStore

    if not isinstance(store, FeatureCache):
        if store.video_ids is None and len(store) != manifest.num_videos:
            raise ManifestError(
                f"the manifest was drawn over {manifest.num_videos} videos and the features "
                f"file holds {len(store)}: they belong to different pools. Draw the manifest "
                "over this file's videos (fsarbench.make_manifest on their class ids), in the "
                "file's order"
            )
        _check_video_ids(store.video_ids, manifest, "the features file")
        return store, None
    _check_extracted(store)
    classes = np.asarray(store.class_indices) if store.class_indices is not None else None
    usable = store.usable_videos
    if manifest.num_videos == len(store):
        _check_video_ids(store.video_ids, manifest, str(store.path))
        failed = np.setdiff1d(manifest.unique_videos(), usable)
        if len(failed):
            ids = ", ".join(store.video_ids[i] for i in failed[:5])
            raise ManifestError(
                f"the manifest uses {len(failed)} video(s) of {store.path} that have no "
                f"features ({ids}); draw it over the usable videos: make_manifest("
                "np.asarray(cache.class_indices)[cache.usable_videos], ...)"
            )
        return store, classes
    if manifest.num_videos == len(usable):
        _check_video_ids([store.video_ids[i] for i in usable], manifest, f"{store.path} (usable)")
        return SubsetFeatureStore(store, usable), None if classes is None else classes[usable]
    raise ManifestError(
        f"the manifest indexes {manifest.num_videos} videos; {store.path} holds {len(store)} "
        f"({len(usable)} usable): it was drawn for another pool"
    )


def _check_extracted(cache) -> None:
    """A cache whose extraction is unfinished holds videos not yet extracted, which
    ``usable_videos`` leaves out as if they had failed: a manifest over them evaluated a
    partial test pool, and its record listed no left-out video."""
    todo = int((~(cache.done_mask | cache.failed_mask)).any(axis=1).sum())
    if todo:
        raise ManifestError(
            f"the extraction of {cache.path} is unfinished: {todo} of {len(cache)} videos "
            "have no features yet (an interrupted or running extraction). Run the same "
            "'python -m fsarbench extract' command again to finish it, then evaluate"
        )


def _warn_if_transposed(path: str, shape: tuple[int, int]) -> None:
    """A features file of more frames than dims is most likely ``[videos, dims, frames]``:
    the head was built from it as it reads and printed a number (24.60 for 92.20)."""
    frames, dims = (int(x) for x in shape)
    if frames > dims:
        log.warning(
            "%s is read as %d frames of %d dims ([videos, frames, dims]); more frames than "
            "dims is rare: if it is [videos, dims, frames], transpose it",
            path,
            frames,
            dims,
        )


def _failed_videos(cache, split: str) -> list[str]:
    """``"split/video: cause"`` of every video the cache could not extract (a record lists
    the videos its numbers leave out)."""
    from fsarbench.experiments.features import failure_causes

    failed = np.flatnonzero(cache.failed_mask.any(axis=1)).tolist()
    return [f"{split}/{v}: {cause}" for v, cause in failure_causes(cache, failed).items()]


def _check_video_ids(ids: list[str] | None, manifest: Manifest, where: str) -> None:
    """The videos a manifest names (when it names them) must be those its indices point to
    in ``where``: position ``i`` is ``ids[i]``."""
    if ids is not None:
        check_unique_video_ids(ids, f"the video ids of {where}")
    if ids is None or manifest.video_ids is None:
        return
    wanted = manifest.video_ids
    if len(ids) != len(wanted):
        raise ManifestError(
            f"the manifest was drawn over {len(wanted)} videos and {where} holds {len(ids)}: "
            "they belong to different pools; draw the manifest over these features' videos"
        )
    differ = np.flatnonzero(np.asarray(ids, dtype=object) != np.asarray(wanted, dtype=object))
    if len(differ):
        i = int(differ[0])
        raise ManifestError(
            f"{len(differ)} of the manifest's {len(wanted)} videos are not those of {where} "
            f"at the same positions (position {i}: {wanted[i]!r} in the manifest, {ids[i]!r} "
            "in the features); draw the manifest over these features' videos"
        )


def _names(store, video_classes, manifest: Manifest) -> list[str] | None:
    """Class names of ``manifest``'s ids from a feature cache that has them (after checking
    the manifest fits the classes of the videos it indexes, ``video_classes``; see
    ``manifest_class_names``); ``None`` for a tensor file (then heads that use class names
    stop with ``ClassNamesError``)."""
    from fsarbench.features.cache import FeatureCache

    table = store.class_name_table() if isinstance(store, FeatureCache) else None
    if table is None or video_classes is None:
        return None
    return manifest_class_names(manifest, video_classes, table)


#: Dataset mode's episode settings and their defaults (a manifest fixes them itself).
EPISODE_DEFAULTS = {"way": 5, "shot": 1, "episodes": 10_000, "seed": 0}


def _check_manifest_flags(args: argparse.Namespace, manifest: Manifest) -> None:
    """``--way/--shot/--episodes/--seed`` given with ``--manifest`` must be the manifest's:
    they were ignored, and its own episodes evaluated without a word."""
    own = {
        "way": manifest.spec.way,
        "shot": manifest.spec.shot,
        "episodes": manifest.episodes,
        "seed": manifest.spec.seed,
    }
    wrong = [f"--{k} {args.given[k]}" for k in own if k in args.given and args.given[k] != own[k]]
    if wrong:
        raise ValueError(
            f"{', '.join(wrong)} contradict{'s' if len(wrong) == 1 else ''} --manifest "
            f"{args.manifest} ({own['way']}-way {own['shot']}-shot, {own['episodes']} "
            f"episodes, seed {own['seed']}), whose episodes are evaluated: those flags set the "
            "episodes of --dataset mode. Leave them out, or draw another manifest"
        )


def _check_feature_flags(args: argparse.Namespace, store) -> None:
    """``--root``, ``--cache`` and ``--protocol`` say how ``--dataset`` mode makes its
    features; with ``--features`` they were ignored, and a record said protocol 'seed' for a
    run asked to follow 'trx'."""
    given = [f"--{k}" for k in ("root", "cache") if getattr(args, k) is not None]
    if given:
        raise ValueError(
            f"{' and '.join(given)} set where --dataset mode reads videos and caches "
            f"features; --features {args.features} holds them made already: leave "
            f"{'them' if len(given) > 1 else 'it'} out"
        )
    made = cache_protocol(store)
    if not args.protocol or args.protocol == made:
        return
    if made != CUSTOM_DATASET:
        raise ValueError(
            f"--protocol {args.protocol}: --features {args.features} was extracted under the "
            f"'{made}' protocol; evaluate --dataset D --protocol {args.protocol} to extract "
            "features under it"
        )
    raise ValueError(
        f"--protocol {args.protocol}: --features {args.features} does not say which "
        "protocol made it, so none can be checked or recorded; leave --protocol out"
    )


def _check_mode(args: argparse.Namespace) -> None:
    args.given = {k: getattr(args, k) for k in EPISODE_DEFAULTS if getattr(args, k) is not None}
    for key, default in EPISODE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    if bool(args.features) != bool(args.manifest):
        raise ValueError(
            "--features and --manifest go together; or give neither and evaluate on "
            "--dataset D (with --way, --shot, --episodes, and usually --checkpoint)"
        )
    if args.cross_dataset and not args.checkpoint:
        raise ValueError("--cross-dataset evaluates a --checkpoint on another dataset: give one")
    if not args.features and args.dataset in (None, CUSTOM_DATASET):
        raise ValueError(
            "say what to evaluate on: --features F --manifest M, or --dataset D (a dataset "
            "of 'list datasets') with --way/--shot/--episodes"
        )


def _check_test_class_names(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """A method that uses class names (clip-fsar) refuses test class names it cannot use
    before the test features are made."""
    from fsarbench.data.datasets import get_dataset
    from fsarbench.registry import check_class_names, method_info

    if not method_info(args.method).cls.uses_class_names:
        return
    saved = stored_hparams(args.method, method_state(data)[2]) if args.checkpoint else {}
    names = get_dataset(args.dataset, root=args.root).class_names("test")
    check_class_names(args.method, args.dataset, {**saved, **parse_hparams(args.hparams)}, names)


def _dataset_mode(
    args: argparse.Namespace, device, data: dict[str, Any]
) -> tuple[Any, Manifest, FewShotMethod, dict, list[str]]:
    """Test features, manifest and method for ``--dataset`` (see the module docstring);
    ``data``: the checkpoint's contents."""
    from fsarbench.experiments.feasibility import check_split_classes
    from fsarbench.training.export import is_finetune_state

    state = data.get("method") if isinstance(data.get("method"), dict) else data
    _check_test_class_names(args, data)
    if args.checkpoint and is_finetune_state(state):
        feats, names, variant, method, meta = _finetune_checkpoint(args, data, device)
    else:
        feats, names, variant, method, meta = _frozen(args, data)
    check_split_classes(args.dataset, "test", feats.classes, names)
    manifest = draw_test_manifest_fast(
        feats.classes,
        split_variant=variant,
        way=args.way,
        shot=args.shot,
        queries=1,
        episodes=args.episodes,
        seed=args.seed,
        class_names=names,
    )
    return feats.store, manifest, method, meta, names


def _frozen(args, data: dict[str, Any]):
    from fsarbench.experiments.features import FrozenFeatureProvider

    trained = _trained_features(data) if args.checkpoint else {}
    protocol = args.protocol or (trained.get("protocol") or {}).get("name") or "seed"
    provider = FrozenFeatureProvider(
        root=args.root,
        cache_root=args.cache,
        device=args.device or "cpu",
        protocol=protocol,
        preset_overrides=_trained_preset(trained),
    )
    feats = provider(args.dataset)
    _check_same_features(trained, feats.info, args.checkpoint)
    if args.num_train_classes is None:
        args.num_train_classes = feats.splits["train"].num_classes
    method = build_method(args, feats.feature_shape, data)
    _, recipe, _ = method_state(data) if args.checkpoint else ({}, {}, {})
    meta = {
        "track": "frozen",
        "protocol": protocol,
        "recipe": recipe,
        "features": feats.info,
        "skipped_videos": feats.listed_skips,
    }
    test = feats.splits["test"]
    return test, feats.class_names["test"], feats.split_variant, method, meta


#: Feature fields a frozen head depends on (not the dataset's own: split md5s, cache keys);
#: a fingerprint made before one of them was recorded is not judged on it.
_FEATURE_FIELDS = ("backbone", "weights", "resolution", "num_frames", "test_frames", "protocol")
#: Recorded only when they differ from the default (absent: the default on both sides).
_SPARSE_FEATURE_FIELDS = ("norm", "tiny")


def _trained_features(data: dict[str, Any]) -> dict[str, Any]:
    """The features a frozen-track checkpoint was trained on (its fingerprint's data)."""
    fingerprint = data.get("fingerprint") or {}
    if fingerprint.get("track", "frozen") != "frozen":
        return {}
    return dict(fingerprint.get("data") or {})


def _trained_preset(trained: dict[str, Any]) -> dict[str, Any]:
    """Feature-preset values of the features a checkpoint was trained on (those its
    fingerprint recorded), so that a head trained under ``run --features resolution=48``
    is evaluated on features made the same way, not on the dataset's default preset."""
    from fsarbench.experiments.features import FeaturePreset

    fields = {f.name for f in dataclasses.fields(FeaturePreset)}
    return {k: v for k, v in trained.items() if k in fields}


def _check_same_features(trained: dict[str, Any], info: dict[str, Any], where: str) -> None:
    """A head is evaluated on features made as those it was trained on (a head trained on
    ``--protocol trx`` features scored 68.80 on the default seed features, 89.08 on its own)."""
    if not trained:
        return
    fields = [k for k in _FEATURE_FIELDS if k in trained] + list(_SPARSE_FEATURE_FIELDS)
    differ = [k for k in fields if trained.get(k) != info.get(k)]
    if differ:
        shown = "; ".join(f"{k}: trained {trained.get(k)!r}, here {info.get(k)!r}" for k in differ)
        raise ValueError(
            f"{where} was trained on other features than eval builds ({shown}). Leave "
            "--protocol out (eval then takes the checkpoint's), or evaluate it where it was "
            "made ('python -m fsarbench run' with the same --features and --protocol reuses "
            "its models)"
        )


def _finetune_checkpoint(args, data: dict, device):
    from fsarbench.data.datasets import get_dataset, listed_apart
    from fsarbench.experiments.tracks import extract_finetune_test, training_precision
    from fsarbench.training.export import load_head
    from fsarbench.training.finetune_recipe import (
        checkpoint_options,
        options_to_dict,
        record_identity,
    )

    recipe = dict(data.get("recipe") or {})
    if "options" not in recipe:
        raise ValueError(f"{args.checkpoint} holds backbone weights but no finetune options")
    options = checkpoint_options(recipe["options"], where=str(args.checkpoint))
    recipe["options"] = options_to_dict(options)  # recorded as used (with legacy defaults)
    if args.protocol and args.protocol != options.protocol:
        print(
            f"note: the checkpoint was trained under the {options.protocol!r} protocol; its "
            f"test clips follow it (--protocol {args.protocol} applies to frozen features)"
        )
    ds = get_dataset(args.dataset, root=args.root)
    listed_apart(args.dataset, ds)
    feats, bad = extract_finetune_test(
        ds,
        data["method"],
        options,
        cache_root=args.cache,
        device=str(device),
        progress=True,
    )
    t, d = feats.store.feature_shape
    hparams = {**(data.get("hparams") or {}), **parse_hparams(args.hparams)}
    classes = data.get("num_train_classes") or args.num_train_classes
    head = load_head(
        args.method,
        data["method"],
        feature_dim=d,
        seq_len=t,
        num_train_classes=classes,
        hparams=hparams,
        dataset=args.dataset,
    )
    precision = training_precision(str(device), options.amp)  # extract_finetune_test's
    identity, features = record_identity(recipe, ds.split_md5s(), precision)
    meta = {
        "train_data": _finetune_train_data(ds, data),
        "track": "finetune",
        "protocol": options.protocol,
        "recipe": identity,
        "features": features,
        "skipped_videos": [f"test/{v}: {cause}" for v, cause in bad.items()],
    }
    return feats, ds.class_names("test"), ds.variant, head, meta


def _finetune_train_data(ds, data: dict) -> dict[str, Any]:
    """The dataset's split lists and train/val files now, as a finetune checkpoint's
    fingerprint holds them from its training (``split_md5``, ``files``: the stamp of every
    train and val video it used, its left-out ones excepted), for :func:`_training_state`."""
    from fsarbench.features.extract import files_stamp

    fingerprint = data.get("fingerprint")
    trained = fingerprint.get("data") if isinstance(fingerprint, dict) else None
    if not isinstance(trained, dict) or not isinstance(trained.get("skipped_videos"), list):
        return {}
    # "train/ID: cause" -> (split, ID)
    left_out = {tuple(s.split(": ", 1)[0].split("/", 1)) for s in trained["skipped_videos"]}
    used = [
        v
        for split in ("train", "val")
        for v in ds.videos(split)
        if (split, v.video_id) not in left_out
    ]
    md5s = ds.split_md5s()
    return {"split_md5": {k: md5s[k] for k in ("train", "val")}, "files": files_stamp(used)}


def _report(
    args, method, manifest, result, world: int, meta: dict, names: list[str] | None
) -> None:
    """Print the result and, with ``--out``, record it (``names``: class id -> name, for
    the record's per-class accuracies; ``None`` keys them by id)."""
    name = f"{meta['name']} [{meta['variant']}]" if meta["variant"] else meta["name"]
    print(
        f"{name}: {fixed(result.accuracy)} ± {fixed(result.ci95)} "
        f"({result.episodes} episodes, {manifest.way}-way {manifest.spec.shot}-shot; "
        f"± is the {result.spread_name}; {world} process(es))"
    )
    if caveat := caveat_line(result):
        print(caveat)
    if result.extra.get("nonfinite_queries"):
        print(f"{result.extra['nonfinite_queries']} queries had NaN/inf logits: counted wrong")
    if args.out:
        record = make_record(
            result,
            method=meta["name"],
            dataset=args.dataset,
            split_variant=manifest.spec.dataset or args.dataset,
            manifest=manifest,
            hparams=method.hparams,
            provenance=_provenance(method, from_dataset=not args.features),
            track=meta.get("track", "frozen"),
            recipe=meta.get("recipe"),
            features=_with_checkpoint(meta),
            protocol=meta.get("protocol", "seed"),
            train_seed=meta.get("train_seed"),
            train_way=_trained(meta, "way"),
            train_shot=_trained(meta, "shot"),
            skipped_videos=meta.get("skipped_videos"),
            compute=compute_environment(device_of(method), features=meta.get("made_with")),
            split=meta.get("split", "test"),
            tags={"variant_label": meta["variant"]} if meta.get("variant") else None,
            class_names=names,
            training=meta.get("training"),
        )
        save_result(args.out, record, result)
        records = rebuild_summary(args.out)
        _refresh_run_outputs(Path(args.out), records)
        print(f"record written under {args.out}/records/{record.cell}.json")
        if meta.get("variant"):
            print(
                f"recorded as the variant {name!r} ({meta['variant']}): not a run of the "
                "protocol, so it is kept out of paper tables and the leaderboard "
                "('leaderboard --include-variants' shows it)"
            )


def _refresh_run_outputs(out: Path, records) -> None:
    """In a run's folder, redraw what shows its records (per-dataset and paper tables,
    figures, the report): they showed the record the eval replaced until the next run."""
    from fsarbench.experiments.outputs import refresh_paper_outputs
    from fsarbench.experiments.summary_tables import write_summary_tables

    if not (out / "tables").is_dir():
        return
    write_summary_tables(out, records)
    redrawn = ["its per-dataset tables"]
    written = refresh_paper_outputs(out)
    redrawn += ["paper tables"] if any(p.parent.name == "tables" for p in written) else []
    redrawn += ["figures"] if any(p.parent.name == "figures" for p in written) else []
    if (out / "report" / "index.html").is_file():
        from fsarbench.cli.run_cmd import write_run_report

        if write_run_report(out, figure_files=written or None) is not None:
            redrawn.append("report")
    print(f"{out} is a run's folder: {', '.join(redrawn)} redrawn with the new record")


def _with_checkpoint(meta: dict) -> dict[str, Any] | None:
    """The record's ``features``: what was evaluated on, plus the weights' md5 where the
    training seed does not tell them apart, the autocast dtype of a mixed-precision
    evaluation, and the variant label (so that a variant's cell id and config never equal a
    run record's, which it would then overwrite)."""
    features = dict(meta.get("features") or {})
    if "checkpoint_md5" in meta:
        features["checkpoint_md5"] = meta["checkpoint_md5"]
    if meta.get("autocast", "off") != "off":  # a mixed-precision number overwrote float32's
        features["eval_autocast"] = meta["autocast"]
    if meta.get("variant"):
        features["eval_variant"] = meta["variant"]
    return features or None


def _trained(meta: dict, key: str) -> int | None:
    """The way or shot the evaluated model was trained for (from its checkpoint's recipe; a
    recipe's ``train_shot`` episodes show in ``ResultRecord.episode_shot``)."""
    recipe = meta.get("recipe") or {}
    return recipe.get("recipe", recipe).get(key)
