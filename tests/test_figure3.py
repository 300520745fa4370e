"""Figure 3 from finetune checkpoints of a tiny synth: saliency boxes, the actionness curve
and Grad-CAM rows for SGTM and OTAM; Grad-CAM maps are non-negative, normalised per frame."""

from __future__ import annotations

import pytest
import torch
from finetune_fixtures import TINY_SYNTH, tiny_recipe

from fsarbench.data.datasets import get_dataset
from fsarbench.report.figure3 import grad_cam, load_finetune_model, saliency_groups
from fsarbench.training.finetune import ClipSplit, build_video_method, finetune, finetune_recipe


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig3")
    ds = get_dataset("synth", root=root / "synth", config=TINY_SYNTH)
    split = ClipSplit(ds.videos("train"), ds.variant)
    out = {}
    for name in ("sgtm-otam", "otam"):
        over = tiny_recipe(recipe={"val_episodes": 0}, options={"frames": 4})
        recipe = finetune_recipe(name, "synth", over)
        model = build_video_method(
            name, recipe.options, torch.device("cpu"), num_train_classes=split.num_classes
        )
        finetune(
            model,
            split,
            None,
            recipe,
            out_dir=root / name,
            progress=False,
            fingerprint={"method": name},
        )
        out[name] = root / name / "last.pt"
    return ds, out


def test_saliency_groups_are_the_frames_the_model_masks():
    """Figure 3 boxed max(1, n // 2) top and bottom frames whatever the model masked: at
    n = 3 a masked frame was shown visible; for top-4 it boxed frames never masked."""
    from fsarbench_sgtm.masks import get_mask_strategy

    logits = torch.tensor([0.1, 3.0, -2.0, 0.5, 1.0, -1.0])  # ranks: 1, 4, 0, 3, 5, 2
    sgtm = get_mask_strategy("saliency").fn(logits[None], 3)[0]  # 2 top, 1 bottom
    assert saliency_groups(logits, sgtm) == [
        "ambiguous", "salient", "non-salient", "ambiguous", "salient", "ambiguous"
    ]  # fmt: skip
    top = get_mask_strategy("top").fn(logits[None], 4)[0]
    assert saliency_groups(logits, top, "top") == [
        "salient", "salient", "visible", "salient", "salient", "visible"
    ]  # fmt: skip


def test_grad_cam_is_normalised_per_frame(checkpoints):
    _, paths = checkpoints
    model = load_finetune_model(paths["otam"])
    cam = grad_cam(model, torch.randn(4, 3, 16, 16))
    assert cam.shape == (4, 16, 16) and (cam >= 0).all()
    peaks = cam.flatten(1).amax(1)
    assert all(abs(p - 1) < 1e-5 or p == 0 for p in peaks.tolist())  # 1, or an all-zero map


def test_figure3_renders_from_finetune_checkpoints(checkpoints, tmp_path, monkeypatch, capsys):
    from fsarbench.cli.main import main
    from fsarbench.data import datasets

    ds, paths = checkpoints
    monkeypatch.setitem(datasets.DATASETS, "synth", lambda **kw: ds)
    video = ds.videos("test")[0].video_id
    argv = ["figures", "--figure", "3", "--checkpoint", str(paths["sgtm-otam"])]
    argv += ["--compare", str(paths["otam"]), "--dataset", "synth", "--video", video]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"figure3_{video}.png").stat().st_size > 10_000
    assert main([*argv[:-1], "nope", "--out", str(tmp_path)]) == 2
    assert "no test video 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must be an SGTM model"):
        from fsarbench.report.figure3 import plot_figure3

        otam = load_finetune_model(paths["otam"])
        plot_figure3(otam, [], torch.randn(4, 3, 16, 16), "x")


def test_an_unreadable_or_foreign_checkpoint_is_named(tmp_path):
    """A text file or a saved bare tensor given to 'figures --figure 3' ended in an
    UnpicklingError or AttributeError traceback."""
    from fsarbench.training.loop import CheckpointError

    (tmp_path / "notes.pt").write_text("not a checkpoint")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint"):
        load_finetune_model(tmp_path / "notes.pt")
    with pytest.raises(CheckpointError, match="holds a Tensor, not a checkpoint mapping"):
        load_finetune_model(tmp_path / "tensor.pt")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    return get_dataset("synth-planted", root=root / "synth", config=TINY_SYNTH)


def test_the_planted_window_is_marked_on_the_frames_the_clip_shows(
    checkpoints, planted, tmp_path, monkeypatch
):
    """Figure 3 boxed salient frames without the known answer beside them: synth-planted's
    action window (the frames that tell its classes apart) was not shown."""
    import dataclasses

    import numpy as np

    from fsarbench.cli import figures_cmd
    from fsarbench.cli.main import main
    from fsarbench.data import datasets
    from fsarbench.data.decode import read_clip
    from fsarbench.report.figure3 import shown_frames, window_note
    from fsarbench.training.clip_data import ClipStore

    _, paths = checkpoints
    options = load_finetune_model(paths["sgtm-otam"]).options
    record = planted.videos("test")[0]
    shown = shown_frames(record, options)
    store = ClipStore(ClipSplit([record], planted.variant), options, pixels=True)
    frames, _ = read_clip(record.path, lambda n: shown)  # those frames are the clip's
    assert torch.equal(store.get(np.array([0]))[0], store.transform.pixels(frames, None))
    start, stop = planted.windows("test")[record.video_id]
    inside = figures_cmd._planted_window(planted, record, options)
    assert inside == [start <= i < stop for i in shown] and any(inside)
    unplanted = dataclasses.replace(record, video_id="not-a-planted-video")
    assert figures_cmd._planted_window(planted, unplanted, options) is None
    groups = ["salient", "non-salient", "salient", "ambiguous"]
    assert window_note([True, True, False, False], groups) == (
        "planted action window: 2 of 4 shown frames; 1 of the 2 salient frames inside"
    )
    monkeypatch.setitem(datasets.DATASETS, "synth-planted", lambda **kw: planted)
    argv = ["figures", "--figure", "3", "--checkpoint", str(paths["sgtm-otam"])]
    argv += ["--dataset", "synth-planted", "--video", record.video_id, "--out", str(tmp_path)]
    assert main(argv) == 0
    assert (tmp_path / f"figure3_{record.video_id}.png").stat().st_size > 10_000
