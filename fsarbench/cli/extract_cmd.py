"""``python -m fsarbench extract``: backbone features of one split into the feature cache."""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from fsarbench.cli.common import add_protocol_argument, device_name, seed_value
from fsarbench.experiments.cache_reuse import extract_reusing
from fsarbench.features.backbones import BackboneWeightsError, effective_norm, list_backbones
from fsarbench.features.extract import PRECISIONS, SplitExtractConfig

_SHOWN_ERRORS = 5


def register(sub: argparse._SubParsersAction) -> None:
    defaults = SplitExtractConfig()
    p = sub.add_parser(
        "extract",
        help="extract backbone frame features of a split into the feature cache",
        description="Decode the videos of DATASET's SPLIT, run the backbone on their frames and "
        "store [T, D] float16 features per video (and view) under "
        "<cache>/features/<dataset>/<split>/<key>/. Interrupted runs resume.",
    )
    p.add_argument("dataset", help="dataset (split variant) name, e.g. ucf101, ssv2-full")
    p.add_argument("--split", default="test", help="split name (default: test)")
    p.add_argument(
        "--backbone",
        default=None,
        help=f"one of {list_backbones()} or timm:<model> (default: the dataset's feature "
        "preset, the one run extracts with)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="imagenet (torch hub cache, offline-safe), none (random init) or a checkpoint path "
        "(default: the dataset's feature preset)",
    )
    p.add_argument(
        "--views",
        type=int,
        default=None,
        help="augmented views per video (default: the preset's train_views on the train "
        "split, else 1)",
    )
    add_protocol_argument(p)
    p.add_argument(
        "--frames",
        default=None,
        help="frame sampler overriding the protocol's (trx, tsn, tsn-random, uniform, "
        "hyrsm-interval50, hyrsm-interval35, hyrsm-segment)",
    )
    p.add_argument(
        "--transform",
        default=None,
        help="transform preset overriding the protocol's (e.g. seed-test, trx-train)",
    )
    p.add_argument(
        "--mode",
        choices=["auto", "train", "test"],
        default="auto",
        help="train = random frames, crops and flips per view; auto: train split only",
    )
    p.add_argument(
        "--num-frames", type=int, default=None, help="frames per video (default: the preset's)"
    )
    p.add_argument(
        "--resolution", type=int, default=None, help="crop size in px (default: the preset's)"
    )
    p.add_argument("--seed", type=seed_value, default=defaults.seed)
    p.add_argument("--root", default=None, help="dataset root folder (videos)")
    p.add_argument("--splits-dir", default=None, help="folder of split lists (or FSAR_SPLITS)")
    p.add_argument(
        "--cache", default=None, help="cache root (default: $FSAR_CACHE or the user cache folder)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding workers (default: 2 on the CPU; on CUDA one per spare core, 2-12)",
    )
    p.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="videos per backbone forward"
    )
    p.add_argument(
        "--device",
        type=device_name,
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="cpu or cuda (default: cuda if available)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=defaults.precision,
        help="what the backbone computes in (part of the cache key); auto: float16 autocast "
        "on CUDA, float32 elsewhere",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fsarbench.data.datasets import get_dataset
    from fsarbench.data.protocols import get_protocol

    if args.precision in ("fp16", "bf16") and torch.device(args.device).type == "cpu":
        logging.getLogger("fsarbench.extract").warning(
            "--precision %s on the CPU: half-precision convolutions run there many times "
            "slower than fp32 (about 30x for a ResNet), and the features differ (a cache of "
            "their own); 'auto' or fp32 is the CPU's precision",
            args.precision,
        )
    train = args.split == "train" if args.mode == "auto" else args.mode == "train"
    protocol = get_protocol(args.protocol, args.dataset)
    preset = _preset_defaults(args)
    config = SplitExtractConfig(
        backbone=args.backbone,
        weights=args.weights,
        tiny=preset.tiny and args.backbone == preset.backbone,
        frames=args.frames or protocol.sampler(train),
        transform=args.transform or protocol.transform(train),
        flip=protocol.flip is not False,  # views have no role: 'query' flips them
        norm=effective_norm(args.backbone, protocol.norm),  # CLIP towers: CLIP's statistics
        train=train,
        num_frames=args.num_frames,
        resolution=args.resolution,
        views=args.views,
        seed=args.seed,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        precision=args.precision,
    )
    try:
        dataset = get_dataset(args.dataset, **_dataset_options(args))
        cache, stats = extract_reusing(
            args.dataset, args.split, dataset=dataset, config=config, cache_root=args.cache
        )
    except BackboneWeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyError as err:  # unknown dataset, sampler or transform preset
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    if stats is None:
        print(f"features already cached: {cache.path}")
    else:
        print(
            f"{stats.written} clips extracted ({stats.already_done} already done, "
            f"{stats.failed} failed) at {stats.frames_per_s:.0f} frames/s into {cache.path}"
        )
    for entry, error in list(cache.errors.items())[:_SHOWN_ERRORS]:
        index = int(entry.split("/")[0])
        print(f"  failed: {cache.video_ids[index]}: {error}", file=sys.stderr)
    if not cache.is_complete:
        print(
            f"{int(cache.failed_mask.sum())} clips failed (missing, unreadable or too short; "
            f"listed in {cache.path}/progress.json); the cache serves the other videos",
            file=sys.stderr,
        )
        return 1
    return 0


def _preset_defaults(args: argparse.Namespace):
    """Fill the options left unset from the dataset's feature preset, as ``run`` extracts
    (``extract`` defaulted to ResNet-50 ImageNet at 224 px with one view: a cache ``run``
    never read, which it then extracted again); returns the preset."""
    from fsarbench.experiments.features import feature_preset

    preset = feature_preset(args.dataset)
    for field in ("backbone", "weights", "num_frames", "resolution"):
        if getattr(args, field) is None:
            setattr(args, field, getattr(preset, field))
    if args.views is None:
        args.views = preset.train_views if args.split == "train" else 1
    return preset


def _dataset_options(args: argparse.Namespace) -> dict:
    """``get_dataset``'s options as :func:`extract_split` passes them."""
    if args.splits_dir is None:
        return {"root": args.root}
    return {"root": args.root, "splits_dir": args.splits_dir}
