"""``python -m fsarbench eval``: one method on stored features and a manifest."""

from __future__ import annotations

import argparse
import json

import torch

from fsarbench.episodes import Manifest
from fsarbench.evaluate import evaluate
from fsarbench.features.open import open_feature_store
from fsarbench.registry import create_method
from fsarbench.results import make_record, save_result, write_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a method on stored features and an episode manifest",
        description="Evaluate METHOD on the episodes of MANIFEST over FEATURES and print "
        "accuracy ± 95%% CI; with --out, write a result record.",
    )
    p.add_argument("method", help="registered method name (see 'list methods')")
    p.add_argument("--features", required=True, help="[N, T, D] .pt file or feature-cache folder")
    p.add_argument("--manifest", required=True, help="manifest JSON written by make_manifest")
    p.add_argument("--checkpoint", default=None, help="method state dict (.pt) to load")
    p.add_argument("--hparams", default="{}", help='JSON of method hyper-parameters, e.g. \'{"lam": 0.5}\'')
    p.add_argument("--num-train-classes", type=int, default=None)
    p.add_argument("--batch-episodes", type=int, default=500)
    p.add_argument("--interval", choices=["normal", "t"], default="normal")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dataset", default="custom", help="dataset name recorded with the result")
    p.add_argument("--out", default=None, help="results folder for the record")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = open_feature_store(args.features)
    manifest = Manifest.load(args.manifest)
    t, d = store.feature_shape
    hparams = json.loads(args.hparams)
    method = create_method(args.method, feature_dim=d, seq_len=t,
                           num_train_classes=args.num_train_classes, **hparams)
    if args.checkpoint:
        method.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
    method.to(args.device)
    result = evaluate(method, store, manifest, batch_episodes=args.batch_episodes,
                      interval=args.interval, device=args.device)
    print(f"{args.method}: {result.accuracy:.2f} ± {result.ci95:.2f} "
          f"({result.episodes} episodes, {manifest.way}-way {manifest.spec.shot}-shot; "
          f"± is the {result.spread_name})")
    if args.out:
        record = make_record(result, method=args.method, dataset=args.dataset,
                             split_variant=manifest.spec.dataset or args.dataset,
                             manifest=manifest, hparams=method.hparams)
        save_result(args.out, record, result)
        write_summary(args.out)
        print(f"record written under {args.out}/records/{record.cell}.json")
    return 0
