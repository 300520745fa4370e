"""HyRSM's colour jitter of training query clips (``SUPPORT_QUERY_DIFF``): the arithmetic
against a direct port of its ``ColorJitter`` (the reference's ``[C, T, H, W]`` layout,
Python-float factors, its ``matmul`` greyscale and ``einsum`` HSV selection), the draws, the
protocol and recipe fields, and the finetune track's pipeline (drawn by the decode workers,
applied on the device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from finetune_fixtures import TINY_SYNTH, tiny_recipe

from fsarbench.config import ConfigError
from fsarbench.data.clips import ClipOptions
from fsarbench.data.color_jitter import (
    NO_JITTER,
    OPERATIONS,
    ColorJitter,
    apply_color_jitter,
    draw_color_jitter,
)
from fsarbench.data.datasets import get_dataset
from fsarbench.data.protocols import get_protocol
from fsarbench.experiments.features import frozen_protocol
from fsarbench.training.clip_data import ClipSplit, TrainEpisodes, to_clip_episodes
from fsarbench.training.finetune import build_video_method, finetune_recipe
from fsarbench.training.finetune_recipe import checkpoint_options, options_to_dict
from fsarbench.training.video_method import ClipEpisodes


# -- the reference, ported as written (layout [C, T, H, W]) -----------------------------------
def _ref_gray(img):
    g = img.float().permute(1, 2, 3, 0).matmul(torch.tensor([0.299, 0.587, 0.114]))
    return torch.stack([g, g, g], 0)


def _ref_blend(a, b, r):
    return (r * a + (1 - r) * b).clamp(0, 1)


def _ref_brightness(img, f):
    return _ref_blend(img, torch.zeros_like(img), f)


def _ref_contrast(img, f):
    return _ref_blend(img, torch.mean(_ref_gray(img), dim=(-4, -2, -1), keepdim=True), f)


def _ref_saturation(img, f):
    return _ref_blend(img, _ref_gray(img), f)


def _ref_hue(img, f):
    r, g, b = img.unbind(0)
    maxc, minc = img.max(dim=0).values, img.min(dim=0).values
    eqc, cr = maxc == minc, maxc - minc
    s = cr / torch.where(eqc, maxc.new_ones(()), maxc)
    crd = torch.where(eqc, maxc.new_ones(()), cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    h = (maxc == r) * (bc - gc)
    h = h + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    h = h + ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = (torch.fmod(h / 6.0 + 1.0, 1.0) + f) % 1.0
    v = maxc
    i = torch.floor(h * 6.0)
    fr = h * 6.0 - i
    i = i.to(torch.int32) % 6
    p = torch.clamp(v * (1.0 - s), 0.0, 1.0)
    q = torch.clamp(v * (1.0 - s * fr), 0.0, 1.0)
    t = torch.clamp(v * (1.0 - s * (1.0 - fr)), 0.0, 1.0)
    mask = (i == torch.arange(6)[:, None, None, None]).to(img.dtype)
    a4 = torch.stack(
        (
            torch.stack((v, q, p, p, t, v)),
            torch.stack((t, v, v, q, p, p)),
            torch.stack((p, p, t, v, v, q)),
        )
    )
    return torch.einsum("itjk, xitjk -> xtjk", mask, a4)


_REF_OPS = (_ref_brightness, _ref_contrast, _ref_saturation, _ref_hue)


def _reference(clip: torch.Tensor, row: np.ndarray) -> torch.Tensor:
    """The reference's ColorJitter with the draws of ``row``, on ``clip [T, 3, H, W]``."""
    x = clip.permute(1, 0, 2, 3)
    if row[1]:
        x = _ref_gray(x)
    for op in row[6:]:
        if op >= 0:
            x = _REF_OPS[int(op)](x, float(row[2 + int(op)]))
    return x.permute(1, 0, 2, 3)


def _clip(seed: int = 0, t: int = 3, size: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, size, size + 4), generator=g).float() / 255


# -- arithmetic ------------------------------------------------------------------------------
@pytest.mark.parametrize("op", range(4))
def test_each_operation_alone_is_the_references(op):
    row = NO_JITTER.copy()
    row[0], row[6] = 1, op
    clip = _clip(op)
    for factor in (0.5, 0.93, 1.5) if op < 3 else (-0.25, 0.07, 0.25):
        row[2 + op] = factor
        got, want = apply_color_jitter(clip, row), _reference(clip, row)
        if OPERATIONS[op] == "contrast":  # the frame mean sums in another order
            torch.testing.assert_close(got, want, rtol=0, atol=2e-7)
        else:
            assert torch.equal(got, want), (OPERATIONS[op], factor)


def test_greyscale_is_the_references_luma_in_every_channel():
    row = NO_JITTER.copy()
    row[:2] = 1
    clip = _clip(5)
    got = apply_color_jitter(clip, row)
    assert torch.equal(got, _reference(clip, row))
    assert torch.equal(got[:, 0], got[:, 1]) and torch.equal(got[:, 1], got[:, 2])


def test_drawn_jitters_match_the_reference_and_leave_pixels_in_range():
    rng = np.random.default_rng(0)
    clip = _clip(1)
    for _ in range(60):
        row = draw_color_jitter(rng)
        got = apply_color_jitter(clip, row)
        torch.testing.assert_close(got, _reference(clip, row), rtol=0, atol=1e-5)
        assert got.shape == clip.shape and got.min() >= 0 and got.max() <= 1


def test_known_answers():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    row = NO_JITTER.copy()
    row[0], row[6], row[5] = 1, 3, 1 / 3  # a third of the colour circle: red -> green
    green = apply_color_jitter(red, row)
    torch.testing.assert_close(green[:, 1], torch.ones(1, 2, 2))
    torch.testing.assert_close(green[:, [0, 2]], torch.zeros(1, 2, 2, 2), atol=1e-6, rtol=0)
    row = NO_JITTER.copy()
    row[0], row[6], row[2] = 1, 0, 0.5  # brightness halves
    assert torch.equal(apply_color_jitter(red, row), red * 0.5)
    row[6], row[3] = 1, 0.0  # contrast 0: every pixel the frame's mean grey
    flat = apply_color_jitter(_clip(2), row)
    assert torch.allclose(flat, flat.mean(dim=(1, 2, 3), keepdim=True), atol=1e-6)
    off = NO_JITTER.copy()
    off[1:] = [1, 0.1, 0.1, 0.1, 0.4, 0, 1, 2, 3]  # "on" is 0: nothing applies
    assert apply_color_jitter(red, off) is red


def test_draws_follow_hyrsm_ranges_order_and_greyscale_rate():
    rows = np.stack([draw_color_jitter(np.random.default_rng(s)) for s in range(2000)])
    assert (rows[:, 0] == 1).all()
    for op in range(3):
        assert rows[:, 2 + op].min() >= 0.5 and rows[:, 2 + op].max() <= 1.5
    assert rows[:, 5].min() >= -0.25 and rows[:, 5].max() <= 0.25
    assert (np.sort(rows[:, 6:], axis=1) == [0, 1, 2, 3]).all()  # each order a permutation
    assert len({tuple(r) for r in rows[:, 6:]}) == 24
    assert abs(rows[:, 1].mean() - 0.3) < 0.04
    again = draw_color_jitter(np.random.default_rng(7))
    assert np.array_equal(again, rows[7])  # a function of the clip's random stream


def test_an_operation_with_a_neutral_range_is_left_out():
    row = draw_color_jitter(np.random.default_rng(0), ColorJitter(contrast=0, hue=0))
    assert sorted(row[6:8]) == [0, 2] and list(row[8:]) == [-1, -1]
    assert row[3] == 1 and row[5] == 0


@pytest.mark.parametrize(
    "bad, match",
    [({"hue": 0.6}, "at most 0.5"), ({"brightness": -1}, ">= 0"), ({"grayscale": 2}, "prob")],
)
def test_bad_jitter_ranges_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        ColorJitter(**bad)


def test_a_row_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="10 values"):
        apply_color_jitter(_clip(), np.ones(4))


def test_jitter_rows_need_uint8_pixel_clips():
    with pytest.raises(ValueError, match="pixels=True"):
        ClipOptions(color_jitter=True)


# -- protocols and recipes -------------------------------------------------------------------
def test_protocols_jitter_hyrsm_queries_and_leave_other_identities_alone():
    assert get_protocol("hyrsm", "ucf101").color_jitter == "query"
    assert get_protocol("hyrsm", "synth").color_jitter is False  # classes differ in colour
    assert get_protocol("clip-fsar", "kinetics100").color_jitter == "query"
    assert get_protocol("clip-fsar", "ucf101").color_jitter is False
    assert get_protocol("hyrsm", "ssv2-full").to_dict()["color_jitter"] == "query"
    for name in ("seed", "trx"):  # cache keys and records made before: the same dicts
        assert "color_jitter" not in get_protocol(name, "ucf101").to_dict()
    # the frozen track's views are not jittered, and its records do not say they are
    assert "color_jitter" not in frozen_protocol(get_protocol("hyrsm", "ucf101"))


def test_finetune_recipes_record_the_jitter_only_where_it_is_on():
    hyrsm = finetune_recipe("hyrsm", "hmdb51", protocol="hyrsm")
    assert hyrsm.options.color_jitter == "query"
    assert hyrsm.to_dict()["options"]["color_jitter"] == "query"
    seed = finetune_recipe("hyrsm", "hmdb51")
    assert seed.options.color_jitter is False and "color_jitter" not in seed.to_dict()["options"]
    off = finetune_recipe("hyrsm", "hmdb51", {"options": {"color_jitter": False}}, "hyrsm")
    assert "color_jitter" not in off.to_dict()["options"]
    with pytest.raises(ConfigError, match="set by the protocol"):
        from fsarbench.training.finetune_recipe import check_finetune_table

        check_finetune_table({"methods": {"otam": {"options": {"color_jitter": True}}}}, "f")
    # eval of a checkpoint records the options as train did (one record id for one model)
    for recipe in (hyrsm, seed):
        stored = recipe.to_dict()["options"]
        assert options_to_dict(checkpoint_options(stored, where="ckpt")) == stored


# -- the pipeline ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return get_dataset("synth", root=tmp_path_factory.mktemp("synth"), config=TINY_SYNTH)


def _episodes(synth, **options) -> TrainEpisodes:
    recipe = finetune_recipe("protonet", "synth", tiny_recipe(options=options))
    split = ClipSplit(synth.videos("train"), synth.variant, synth.flip_ok)
    return TrainEpisodes(split, recipe, seed=3, stage="main", first_step=0, steps=2)


def test_workers_draw_rows_for_query_clips_and_leave_the_clips_as_they_were(synth):
    plain, jittered = _episodes(synth), _episodes(synth, color_jitter="query")
    a, b = plain[1], jittered[1]
    assert torch.equal(a["clips"], b["clips"])  # frames, crops, flips: unchanged
    assert "query_jitter" not in a and "support_jitter" not in b
    rows = b["query_jitter"]
    assert rows.shape == (3, 10) and rows.dtype == torch.float64 and (rows[:, 0] == 1).all()
    assert torch.equal(_episodes(synth, color_jitter="query")[1]["query_jitter"], rows)
    both = _episodes(synth, color_jitter=True)[1]
    assert both["support_jitter"].shape == (3, 10)


def test_the_model_applies_the_rows_before_normalising(synth):
    data = _episodes(synth, color_jitter=True)
    item = {k: v.unsqueeze(0) if torch.is_tensor(v) else v for k, v in data[0].items()}
    batch = to_clip_episodes(item, data.spec)
    assert isinstance(batch, ClipEpisodes) and batch.query_jitter.shape == (1, 3, 10)
    model = build_video_method("protonet", _options(), torch.device("cpu"), seed=0)
    clips, rows = batch.query[0], batch.query_jitter[0]
    got = model.normalise(clips, rows)
    for n in range(len(clips)):
        pixels = clips[n].float() / 255.0
        want = model.standardise(_reference(pixels, rows[n].numpy()))
        torch.testing.assert_close(got[n], want, rtol=0, atol=1e-4)
    off = rows.clone()
    off[1, 0] = 0
    assert torch.equal(model.normalise(clips, off)[1], model.pixel_norm(clips[1:2])[0])
    assert not torch.equal(got, model.pixel_norm(clips))
    with pytest.raises(TypeError, match="uint8"):
        model.features(clips.float(), rows)


def test_per_episode_and_joint_backbone_calls_jitter_the_same_clips(synth):
    data = _episodes(synth, color_jitter="query")
    items = [data[k] for k in range(2)]
    item = {k: torch.stack([it[k] for it in items]) for k in ("clips", "classes", "query_jitter")}
    batch = to_clip_episodes(item, data.spec)
    model = build_video_method(
        "protonet", _options(bn="frozen"), torch.device("cpu"), seed=0
    ).train()
    with torch.no_grad():
        joint = model.episode_features(batch, backbone_trains=False)
        split = [model.features(q, r) for q, r in zip(batch.query, batch.query_jitter, strict=True)]
    torch.testing.assert_close(joint.query, torch.stack(split), rtol=1e-5, atol=1e-6)
    plain = ClipEpisodes(*[getattr(batch, f) for f in ClipEpisodes.__dataclass_fields__][:7])
    with torch.no_grad():
        unjittered = model.episode_features(plain, backbone_trains=False)
    torch.testing.assert_close(unjittered.support, joint.support, rtol=0, atol=0)
    assert not torch.allclose(unjittered.query, joint.query)


def _options(**over):
    return finetune_recipe(
        "protonet", "synth", tiny_recipe(options={"color_jitter": "query", **over})
    ).options


def test_training_batches_carry_the_rows_to_the_model(synth):
    """The finetune loop's source hands each micro-batch's query rows to the model (on the
    host): dropping them there trained ``--protocol hyrsm`` without its jitter, silently."""
    from fsarbench.training.finetune import ClipSource

    recipe = finetune_recipe("protonet", "synth", tiny_recipe(options={"color_jitter": "query"}))
    split = ClipSplit(synth.videos("train"), synth.variant, synth.flip_ok)
    (first, *_), *_ = ClipSource(split, recipe, 3, "cpu").stage("main", 0, 1)
    rows = first.batch.query_jitter
    assert rows is not None and rows.shape == (1, 3, 10) and rows.device.type == "cpu"
    assert first.batch.support_jitter is None
    data = TrainEpisodes(split, recipe, seed=3, stage="main", first_step=0, steps=1)
    assert torch.equal(rows[0], data[0]["query_jitter"])


def test_batch_statistics_path_jitters_each_episodes_queries(synth):
    """``bn: train`` (the default) calls the backbone per episode and role: the rows must
    follow each episode's query clips there too."""
    data = _episodes(synth, color_jitter="query")
    items = [data[k] for k in range(2)]
    item = {k: torch.stack([it[k] for it in items]) for k in ("clips", "classes", "query_jitter")}
    batch = to_clip_episodes(item, data.spec)
    model = build_video_method("protonet", _options(bn="train"), torch.device("cpu"), seed=0)
    model.train()
    with torch.no_grad():
        got = model.episode_features(batch)
        want = [model.features(q, r) for q, r in zip(batch.query, batch.query_jitter, strict=True)]
        bare = model.features(batch.query[0])
    torch.testing.assert_close(got.query, torch.stack(want), rtol=0, atol=0)
    assert not torch.allclose(got.query[0], bare)


def test_rows_on_the_device_or_in_an_episode_dataset_are_refused(synth):
    from fsarbench.data.clips import EpisodeClipDataset

    model = build_video_method("protonet", _options(), torch.device("cpu"), seed=0)
    clips = torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8)
    rows = torch.from_numpy(NO_JITTER).unsqueeze(0)
    with pytest.raises(ValueError, match="host"):
        model.normalise(clips, rows.to("meta"))
    with pytest.raises(ValueError, match="one per clip"):  # a row short: a clip left plain
        model.normalise(clips, rows[:0])
    import fsarbench as fb

    split = synth.videos("test")
    manifest = fb.make_manifest(np.array([r.class_index for r in split]), way=2, shot=1, episodes=1)
    transform = data_transform()
    with pytest.raises(ValueError, match="color_jitter"):
        EpisodeClipDataset(manifest, split, transform, ClipOptions(pixels=True, color_jitter=True))


def data_transform():
    from fsarbench.data.transforms import get_transform

    return get_transform("seed-test", resize=32, crop=16)
