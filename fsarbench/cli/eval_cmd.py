"""``python -m fsarbench eval``: one method on stored features and a manifest.

Under ``torchrun`` the unique videos and the episode batches are spread over the ranks and
the predictions gathered to rank 0, which prints and writes exactly the records of a
1-process run (see :mod:`fsarbench.distributed.sharded_eval`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from fsarbench.episodes import Manifest
from fsarbench.features.open import open_feature_store
from fsarbench.guards import NONFINITE_POLICIES
from fsarbench.methods import FewShotMethod
from fsarbench.provenance import code_digest, code_parts
from fsarbench.registry import create_method
from fsarbench.results import make_record, save_result, write_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a method on stored features and an episode manifest",
        description="Evaluate METHOD on the episodes of MANIFEST over FEATURES and print "
        "accuracy ± 95%% CI; with --out, write a result record. Under torchrun the episodes "
        "are sharded over the processes and the records gathered to rank 0.",
    )
    p.add_argument("method", help="registered method name (see 'list methods')")
    p.add_argument("--features", required=True, help="[N, T, D] .pt file or feature-cache folder")
    p.add_argument("--manifest", required=True, help="manifest JSON written by make_manifest")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="method state dict (.pt), or a best.pt/last.pt written by 'train'",
    )
    p.add_argument(
        "--hparams", default="{}", help="JSON of method hyper-parameters, e.g. '{\"lam\": 0.5}'"
    )
    p.add_argument("--num-train-classes", type=int, default=None)
    p.add_argument("--batch-episodes", type=int, default=500)
    p.add_argument("--interval", choices=["normal", "t"], default="normal")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument(
        "--dataset",
        default="custom",
        help="dataset name recorded with the result; it also selects the method's "
        "per-dataset reference presets (e.g. HyRSM on kinetics100)",
    )
    p.add_argument("--out", default=None, help="results folder for the record")
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


def load_method_state(
    path: str,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(state dict, recipe, hyper-parameters) of a plain state-dict file or of a trainer
    checkpoint (its hyper-parameters are those the weights were trained with)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data.get("method"), dict):
        return data["method"], dict(data.get("recipe") or {}), dict(data.get("hparams") or {})
    return data, {}, {}


def build_method(args: argparse.Namespace, feature_shape: tuple[int, int]) -> FewShotMethod:
    """The method of ``args`` with its checkpoint (behind the recipe's adapter, if any).

    Hyper-parameters: those stored in the checkpoint, then ``--hparams``; the method's
    presets for ``--dataset`` fill only what neither gives."""
    from fsarbench.training import AdaptedMethod, FrameAdapter

    t, d = feature_shape
    state, recipe, saved = load_method_state(args.checkpoint) if args.checkpoint else ({}, {}, {})
    method = create_method(
        args.method,
        feature_dim=d,
        seq_len=t,
        num_train_classes=args.num_train_classes,
        dataset=args.dataset,
        **{**saved, **json.loads(args.hparams)},
    )
    if not args.checkpoint:
        return method
    if recipe.get("adapter") == "linear_ln":
        method = AdaptedMethod(method, FrameAdapter(d), d)
    method.load_state_dict(state)
    return method


def run(args: argparse.Namespace) -> int:
    from fsarbench.distributed.env import init_distributed, is_main, shutdown_distributed
    from fsarbench.distributed.sharded_eval import evaluate_sharded

    env, device = init_distributed(args.device)
    try:
        store = open_feature_store(args.features)
        manifest = Manifest.load(args.manifest)
        method = build_method(args, store.feature_shape).to(device)
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
        )
        if result is not None:
            _report(args, method, manifest, result, env.world_size)
    finally:
        shutdown_distributed()
    return 0


def _report(args, method, manifest, result, world: int) -> None:
    print(
        f"{args.method}: {result.accuracy:.2f} ± {result.ci95:.2f} "
        f"({result.episodes} episodes, {manifest.way}-way {manifest.spec.shot}-shot; "
        f"± is the {result.spread_name}; {world} process(es))"
    )
    if result.extra.get("nonfinite_queries"):
        print(f"{result.extra['nonfinite_queries']} queries had NaN/inf logits: counted wrong")
    if args.out:
        record = make_record(
            result,
            method=args.method,
            dataset=args.dataset,
            split_variant=manifest.spec.dataset or args.dataset,
            manifest=manifest,
            hparams=method.hparams,
            provenance={"code": code_parts(method), "code_digest": code_digest(method)},
        )
        save_result(args.out, record, result)
        write_summary(args.out)
        print(f"record written under {args.out}/records/{record.cell}.json")
