"""Frame samplers and transforms against slow, obviously-correct versions."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from fsarbench.data.sampling import (
    SAMPLERS,
    TooShortError,
    frame_rng,
    get_sampler,
    sample_frames,
)
from fsarbench.data.transforms import PRESETS, ClipTransform, TransformConfig, get_transform


def trx_reference(n, T, train, rand):
    """TRX video_reader (train jitter with random.randint, int() truncation)."""
    if train:
        excess_pad = int(min(5, (n - T) / 2))
        if excess_pad < 1:
            start, end = 0, n - 1
        else:
            start = rand.randint(0, excess_pad)
            end = rand.randint(n - 1 - excess_pad, n - 1)
    else:
        start, end = 1, n - 2
    if end - start < T:
        end, start = n - 1, 0
    return [int(f) for f in np.linspace(start, end, num=T)]


def test_trx_test_indices_match_reference():
    for n in range(8, 200):
        got = sample_frames("trx", n, 8, train=False, rng=frame_rng(0, n))
        assert got == trx_reference(n, 8, False, None), n
    assert sample_frames("trx", 100, 8, train=False, rng=frame_rng(0, 0)) == [
        1,
        14,
        28,
        42,
        56,
        70,
        84,
        98,
    ]


def test_trx_train_within_reference_support():
    for n in (8, 10, 13, 30, 100):
        ref = {tuple(trx_reference(n, 8, True, random.Random(s))) for s in range(400)}
        ours = {
            tuple(sample_frames("trx", n, 8, train=True, rng=frame_rng(s, n))) for s in range(400)
        }
        assert ours == ref, n


def test_tsn_one_frame_per_segment():
    for n in (8, 9, 31, 64, 300):
        size = (n - 1) / 8
        bounds = [(round(size * i), round(size * (i + 1))) for i in range(8)]
        test = sample_frames("tsn", n, 8, train=False, rng=frame_rng(0, n))
        assert test == [(a + b) // 2 for a, b in bounds]
        for s in range(20):
            idx = sample_frames("tsn", n, 8, train=True, rng=frame_rng(s, n))
            assert all(a <= i <= b for i, (a, b) in zip(idx, bounds))
        rnd = [
            sample_frames("tsn-random", n, 8, train=False, rng=frame_rng(s, n)) for s in range(20)
        ]
        assert all(a <= i <= b for idx in rnd for i, (a, b) in zip(idx, bounds))


def test_uniform_spans_video():
    assert sample_frames("uniform", 16, 8, train=False, rng=frame_rng(0, 0)) == [
        1,
        3,
        5,
        7,
        9,
        11,
        13,
        15,
    ]
    for s in range(30):
        idx = sample_frames("uniform", 40, 8, train=True, rng=frame_rng(s, 0))
        assert idx == sorted(idx) and 0 <= idx[0] < 5 and idx[-1] < 40


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_deterministic_per_seed_video_epoch(name):
    def draw(seed, video, epoch):
        return sample_frames(name, 397, 8, train=True, rng=frame_rng(seed, video, epoch))

    assert draw(0, "v1", 0) == draw(0, "v1", 0)
    draws = {tuple(draw(s, v, e)) for s in range(3) for v in ("a", "b") for e in range(3)}
    assert len(draws) > 1
    for n in (8, 9, 50, 500):
        idx = sample_frames(name, n, 8, train=True, rng=frame_rng(1, n))
        assert len(idx) == 8 and all(0 <= i < n for i in idx)
        # HyRSM's 35-frame interval runs backwards over a video shorter than it, as there
        backwards = name == "hyrsm-interval35" and n < 35
        assert idx == sorted(idx, reverse=backwards)


def test_short_video_policy():
    with pytest.raises(TooShortError, match="too short: 5 frames, clips need 8"):
        sample_frames("trx", 5, 8, train=False, rng=frame_rng(0, 0))
    assert sample_frames("trx", 5, 8, train=False, rng=frame_rng(0, 0), short="repeat") == [
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        4,
    ]
    with pytest.raises(TooShortError):
        sample_frames("tsn", 0, 8, train=False, rng=frame_rng(0, 0), short="repeat")
    with pytest.raises(ValueError, match="short-video policy"):
        sample_frames("trx", 5, 8, train=False, rng=frame_rng(0, 0), short="loop")
    with pytest.raises(KeyError, match="unknown sampler 'otam'"):
        get_sampler("otam")


def _frames(T=3, H=40, W=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def test_test_transform_resize_short_side_and_centre_crop():
    f = _frames(H=40, W=60)
    out = ClipTransform(TransformConfig(resize=20, crop=16, norm="none"))(f)
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32
    x = torch.from_numpy(f).permute(0, 3, 1, 2).float()
    ref = torch.nn.functional.interpolate(
        x, size=(20, 30), mode="bilinear", align_corners=False, antialias=True
    )
    ref = ref[..., 2:18, 7:23] / 255
    # resized in uint8 (fixed-point weights, rounded): at most one grey level off
    torch.testing.assert_close(out, ref, rtol=0, atol=1.01 / 255)
    assert (out - ref).abs().mean() < 0.3 / 255


def test_normalisation_presets():
    f = np.full((2, 8, 8, 3), 255, dtype=np.uint8)
    cfg = TransformConfig(resize=0, crop=8)
    import dataclasses

    none = ClipTransform(cfg)(f)
    hy = ClipTransform(dataclasses.replace(cfg, norm="hyrsm"))(f)
    im = ClipTransform(dataclasses.replace(cfg, norm="imagenet"))(f)
    assert torch.allclose(none, torch.ones_like(none))
    assert torch.allclose(hy, torch.full_like(hy, (1 - 0.45) / 0.225))
    assert torch.allclose(im[:, 0], torch.full_like(im[:, 0], (1 - 0.485) / 0.229))


def test_random_crop_and_flip_same_for_all_frames_and_reproducible():
    f = _frames(T=4, H=32, W=32)
    t = get_transform("trx-train", resize=0, crop=24)
    a, b = t(f, frame_rng(0, "v")), t(f, frame_rng(0, "v"))
    torch.testing.assert_close(a, b)
    outs = [t(f, frame_rng(s, "v")) for s in range(40)]
    x = torch.from_numpy(f).permute(0, 3, 1, 2).float() / 255
    flips = 0
    for o in outs:  # every output is one crop of the clip, possibly flipped
        for flip in (False, True):
            src = x.flip(-1) if flip else x
            hits = [
                (i, j)
                for i in range(9)
                for j in range(9)
                if torch.equal(src[..., i : i + 24, j : j + 24], o)
            ]
            if hits:
                flips += flip
                break
        else:
            raise AssertionError("output is not a crop of the input")
    assert 5 < flips < 35


def test_presets_and_errors():
    assert PRESETS["trx-train"].flip and not PRESETS["trx-test"].flip
    assert PRESETS["hyrsm-test"].norm == "hyrsm" and PRESETS["seed-test"].resize_mode == "square"
    assert get_transform("trx-train", flip=False).config.flip is False
    with pytest.raises(KeyError, match="unknown transform preset"):
        get_transform("trx")
    with pytest.raises(ValueError, match="needs an rng"):
        get_transform("trx-train")(_frames(H=256, W=256))
    with pytest.raises(ValueError, match=r"frames must be \[T, H, W, 3\]"):
        get_transform("trx-test")(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="crop 224 is larger"):
        get_transform("trx-test", resize=100)(_frames())
