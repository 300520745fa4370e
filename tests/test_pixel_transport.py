"""Clips that travel as uint8 pixels and are normalised by their consumer (extraction and
the finetune loader): the same float clips, features and episodes as the float path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from data_fixtures import write_test_video
from finetune_fixtures import TINY_SYNTH, tiny_recipe

from fsarbench.data.clips import ClipDataset, ClipOptions
from fsarbench.data.datasets import VideoRecord, get_dataset
from fsarbench.data.transforms import NORMS, PRESETS, PixelNorm, get_transform
from fsarbench.features.backbones import create_backbone
from fsarbench.features.extract import extract_features


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("preset", list(PRESETS))
def test_pixel_norm_gives_the_float_pipeline_bit_for_bit(preset, norm):
    transform = get_transform(preset, resize=40, crop=32, norm=norm)
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    frames[0, :16, :16] = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)  # every level
    expected = transform(frames, np.random.default_rng(7))
    pixels = transform.pixels(frames, np.random.default_rng(7))
    assert pixels.dtype == torch.uint8 and pixels.shape == expected.shape
    assert torch.equal(transform.pixel_norm()(pixels), expected)
    # every level of every channel: the table is the float path's own arithmetic
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    assert torch.equal(transform.pixel_norm()(levels), transform.normalise(levels))


def test_pixel_norm_of_non_contiguous_clips():
    """Slices of a micro-batch (the finetune loader's support/query) are not contiguous."""
    norm = get_transform("seed-test").pixel_norm()
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (4, 5, 3, 6, 7), dtype=torch.uint8, generator=g)
    for view in (batch[::2], batch[:, 1:4], batch.transpose(-1, -2)):
        assert not view.is_contiguous()
        got = norm(view)
        assert got.shape == view.shape
        assert torch.equal(got, norm(view.contiguous()))
        assert torch.equal(got, norm.table[torch.arange(3).view(3, 1, 1), view.long()])


def test_pixel_norm_refuses_float_clips_and_other_channel_counts():
    norm = get_transform("seed-test").pixel_norm()
    with pytest.raises(TypeError, match="uint8 clips"):
        norm(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, H, W\]"):
        norm(torch.zeros(2, 4, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="float32 \\[3, 256\\]"):
        PixelNorm(torch.zeros(3, 255))


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixels")
    out = []
    for i in range(5):
        write_test_video(root / f"v{i}.mp4", frames=12, size=40, seed=i)
        out.append(VideoRecord(f"v{i}", f"c{i % 2}", i % 2, root / f"v{i}.mp4"))
    out.append(VideoRecord("gone", "c0", 0, root / "missing.mp4"))
    return out


def _datasets(records, **options):
    transform = get_transform("seed-train", resize=36, crop=32)
    opts = ClipOptions(frames=3, sampler="tsn", train=True, views=2, seed=4, **options)
    floats = ClipDataset(records, transform, opts)
    pixels = ClipDataset(records, transform, dataclasses.replace(opts, pixels=True))
    return floats, pixels


def test_pixel_clips_normalise_to_the_float_clips(records):
    floats, pixels = _datasets(records)
    norm = pixels.transform.pixel_norm()
    for i in range(len(floats)):
        want, got = floats[i], pixels[i]
        assert got["clip"].dtype == torch.uint8 and got["ok"] == want["ok"]
        if want["ok"]:
            assert torch.equal(norm(got["clip"]), want["clip"])
    failed = pixels[len(pixels) - 1]
    assert not failed["ok"] and "missing.mp4" in failed["error"]
    assert failed["clip"].dtype == torch.uint8 and not failed["clip"].any()


@pytest.mark.parametrize("workers", [0, 2])
def test_extraction_of_pixel_clips_stores_the_float_paths_features(tmp_path, records, workers):
    backbone = create_backbone("resnet18", weights="none", seed=0).eval()
    floats, pixels = _datasets(records)
    common = dict(num_frames=3, num_views=2, batch_size=3, num_workers=workers, progress=False)
    want, _ = extract_features(floats, backbone, cache_dir=tmp_path / "f", **common)
    norm = pixels.transform.pixel_norm()
    got, stats = extract_features(
        pixels, backbone, cache_dir=tmp_path / "p", normalise=norm, **common
    )
    assert stats.written == 10 and stats.failed == 2
    assert np.array_equal(got.done_mask, want.done_mask)
    done = np.flatnonzero(want.done_mask.all(axis=1))
    assert torch.equal(got.get(done), want.get(done))


def test_extraction_refuses_pixels_without_their_norm_and_floats_with_one(tmp_path, records):
    backbone = create_backbone("resnet18", weights="none", seed=0).eval()
    floats, pixels = _datasets(records[:2])
    common = dict(num_frames=3, num_views=2, batch_size=2, num_workers=0, progress=False)
    with pytest.raises(TypeError, match="pixel_norm"):
        extract_features(pixels, backbone, cache_dir=tmp_path / "a", **common)
    norm = pixels.transform.pixel_norm()
    with pytest.raises(TypeError, match="pixel_norm"):
        extract_features(floats, backbone, cache_dir=tmp_path / "b", normalise=norm, **common)


def test_finetune_source_hands_the_model_the_float_paths_clips(tmp_path):
    from fsarbench.training import finetune as ft
    from fsarbench.training.clip_data import TrainEpisodes, to_clip_episodes

    synth = get_dataset("synth", root=tmp_path / "synth", config=TINY_SYNTH)
    split = ft.ClipSplit(synth.videos("train"), synth.variant, synth.flip_ok)
    recipe = ft.finetune_recipe("otam", "synth", tiny_recipe(recipe={"micro_batch": 2}))
    source = ft.ClipSource(split, recipe, seed=3, device=torch.device("cpu"))
    micro = next(next(source.stage("main", 0, 2)))
    floats = TrainEpisodes(split, recipe, 3, "main", 0, 2)
    floats.clip_options = dataclasses.replace(floats.clip_options, pixels=False)
    item = {
        "clips": torch.stack([floats[k]["clips"] for k in range(2)]),
        "classes": torch.stack([torch.as_tensor(floats[k]["classes"]) for k in range(2)]),
    }
    want = to_clip_episodes(item, floats.spec)
    assert micro.batch.support.dtype == torch.uint8  # a quarter of the bytes to copy
    norm = PixelNorm.of(recipe.options.norm)
    assert torch.equal(norm(micro.batch.support), want.support)
    assert torch.equal(norm(micro.batch.query), want.query)


def test_video_method_normalises_pixels_itself_and_val_clips_travel_as_pixels(tmp_path):
    from fsarbench.training import finetune as ft

    synth = get_dataset("synth", root=tmp_path / "synth", config=TINY_SYNTH)
    split = ft.ClipSplit(synth.videos("val")[:4], synth.variant, synth.flip_ok)
    recipe = ft.finetune_recipe("protonet", "synth", tiny_recipe())
    model = ft.build_video_method("protonet", recipe.options, torch.device("cpu")).eval()
    floats = ft.ClipStore(split, recipe.options).get(np.arange(4))
    pixels = ft.ClipStore(split, recipe.options, pixels=True).get(np.arange(4))
    assert pixels.dtype == torch.uint8 and floats.dtype == torch.float32
    with torch.inference_mode():
        assert torch.equal(model.features(pixels), model.features(floats))


def test_query_flip_leaves_support_clips_unflipped(tmp_path):
    """HyRSM's few-shot loader flips training queries, never their support clips: under
    flip='query' an episode's support clips are those of flip=False and its queries those of
    flip=True (each clip draws its crop and flip from its own stream)."""
    from fsarbench.training import finetune as ft
    from fsarbench.training.clip_data import TrainEpisodes

    synth = get_dataset("synth", root=tmp_path / "synth", config=TINY_SYNTH)
    split = ft.ClipSplit(synth.videos("train"), synth.variant, True)
    recipe = ft.finetune_recipe("otam", "synth", tiny_recipe())

    def episodes(flip):
        options = dataclasses.replace(recipe.options, flip=flip)
        return TrainEpisodes(split, dataclasses.replace(recipe, options=options), 3, "main", 0, 4)

    plain, both, queries = episodes(False), episodes(True), episodes("query")
    ns = plain.spec.way * plain.spec.shot

    def flips(a, b):  # clips of a that differ from b
        return int((a != b).flatten(1).any(1).sum())

    support_flips = query_flips = 0
    for k in range(len(plain)):
        mixed, off, on = queries[k]["clips"], plain[k]["clips"], both[k]["clips"]
        assert torch.equal(mixed[:ns], off[:ns])
        assert torch.equal(mixed[ns:], on[ns:])
        support_flips += flips(on[:ns], off[:ns])
        query_flips += flips(on[ns:], off[ns:])
    assert support_flips > 0 and query_flips > 0  # flip=True flips clips of both roles
