"""``python -m fsarbench figures``: every figure the records support, as PNG and PDF."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsarbench.cli.common import writable_folder
from fsarbench.report.cli_args import (
    add_filter_args,
    add_runs_arg,
    add_stats_args,
    load_filtered_entries,
)
from fsarbench.report.figure_set import render_all


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "figures",
        help="accuracy vs way, vs masking ratio, per-class bars, forest plots",
        description="Render the figures the records under --runs support: accuracy vs N-way "
        "with CI bands (Table 6), accuracy vs masking ratio (Figure 4), per-class accuracy "
        "(Figure 2) and forest plots of paired differences.",
    )
    add_runs_arg(p)
    p.add_argument(
        "--out", type=writable_folder, default=None, help="output folder (default: RUNS/figures)"
    )
    p.add_argument(
        "--forest",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        default=None,
        help="forest plot of A vs B (repeatable; default: the paper's methods vs "
        "every other method with records)",
    )
    p.add_argument("--published", default=None, help="folder of the published tables")
    fig3 = p.add_argument_group("Figure 3 (from finetune checkpoints)")
    fig3.add_argument("--figure", type=int, choices=[3], default=None, help="draw Figure 3")
    fig3.add_argument("--checkpoint", default=None, help="an SGTM finetune best.pt")
    fig3.add_argument(
        "--compare", nargs="+", default=[], metavar="CKPT", help="other finetune checkpoints"
    )
    fig3.add_argument("--video", default=None, help="a test video id of --dataset")
    fig3.add_argument("--root", default=None, help="data root (default $FSAR_DATA)")
    add_filter_args(p)
    add_stats_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.figure == 3:
        return _figure3(args)
    left_out: list[str] = []
    entries = load_filtered_entries(args, left_out=left_out)
    out = Path(args.out) if args.out else Path(args.runs) / "figures"
    pairs = [tuple(p) for p in args.forest] if args.forest else None
    paths = render_all(
        args.runs,
        entries,
        out,
        forest_pairs=pairs,
        alpha=args.alpha,
        test=args.test,
        published=args.published,
        left_out=left_out,
    )
    if not paths:
        print(f"no figure is supported by the records under {args.runs}")
        return 0
    for path in paths:
        print(path)
    return 0


def _planted_window(ds, record, options) -> list[bool] | None:
    """Which frames of the clip show a ``synth-planted`` video's action window (``None``
    for other videos: no known answer)."""
    from fsarbench.data.synth import SynthDataset
    from fsarbench.report.figure3 import shown_frames

    if not isinstance(ds, SynthDataset):
        return None
    window = ds.windows("test").get(record.video_id)
    if window is None:
        return None
    start, stop = window
    return [start <= i < stop for i in shown_frames(record, options)]


def _figure3(args: argparse.Namespace) -> int:
    """``--figure 3``: saliency boxes, actionness and Grad-CAM of one test video."""
    import numpy as np

    from fsarbench.data.datasets import get_dataset
    from fsarbench.report.figure3 import load_finetune_model, plot_figure3
    from fsarbench.report.figures import save_figure
    from fsarbench.training.clip_data import ClipSplit, ClipStore

    if not (args.checkpoint and args.dataset and args.video):
        raise ValueError("--figure 3 needs --checkpoint SGTM_CKPT --dataset D --video ID")
    sgtm = load_finetune_model(args.checkpoint)
    others = [load_finetune_model(c) for c in args.compare]
    ds = get_dataset(args.dataset, root=args.root)
    videos = {v.video_id: v for v in ds.videos("test")}
    if args.video not in videos:
        some = ", ".join(list(videos)[:5])
        raise ValueError(f"no test video {args.video!r} in {args.dataset} (e.g. {some})")
    record = videos[args.video]
    store = ClipStore(ClipSplit([record], ds.variant), sgtm.options)
    clip = store.get(np.array([0]))[0]
    title = f"{args.dataset} / {args.video} ({record.class_name})"
    window = _planted_window(ds, record, sgtm.options)
    fig = plot_figure3(sgtm, others, clip, title, window)
    out = Path(args.out) if args.out else Path(args.runs) / "figures"
    for path in save_figure(fig, out, f"figure3_{args.video}"):
        print(path)
    return 0
