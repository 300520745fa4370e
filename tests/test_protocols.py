"""Protocol presets: each draws the frames its reference draws, and its fields reach the clip
pipelines of both tracks, cache keys and recipes."""

from __future__ import annotations

import pytest

from fsarbench.config import ConfigError
from fsarbench.data.protocols import get_protocol, list_protocols
from fsarbench.data.sampling import frame_rng, sample_frames
from oracles.hyrsm_sampling import hyrsm_interval_based_sampling

N = 40  # a 40-frame video


def _test_frames(protocol: str, dataset: str) -> list[int]:
    p = get_protocol(protocol, dataset)
    return sample_frames(p.test_sampler, N, 8, train=False, rng=frame_rng(0, "v"))


def test_seed_test_frames_are_tsn_segment_centres():
    # 8 equal segments of the 39 frame gaps, the centre (floor) of each
    assert _test_frames("seed", "kinetics100") == [2, 7, 12, 17, 22, 26, 31, 36]


def test_trx_test_frames_are_linspace_1_to_n_minus_2_truncated():
    # TRX's video reader: np.linspace(1, n - 2, 8) then int()
    assert _test_frames("trx", "ssv2-full") == [1, 6, 11, 16, 22, 27, 32, 38]


def test_trx_train_frames_jitter_both_ends_by_at_most_five():
    p = get_protocol("trx", "ucf101")
    for s in range(50):
        idx = sample_frames(p.train_sampler, N, 8, train=True, rng=frame_rng(s, "v"))
        assert 0 <= idx[0] <= 5 and 34 <= idx[-1] <= 39
        assert idx == sorted(idx)


@pytest.mark.parametrize("dataset", ["hmdb51", "ucf101", "ssv2-full", "ssv2-small"])
@pytest.mark.parametrize("protocol", ["hyrsm", "clip-fsar"])
def test_hyrsm_samples_as_its_configs_do_outside_kinetics(protocol, dataset):
    """HyRSM's configs (SAMPLING_RATE 50) take its interval sampler's integer-segment branch:
    fsarbench ported its segment sampler, which they never reach (other frames per slot)."""
    p = get_protocol(protocol, dataset)
    assert p.test_sampler == p.train_sampler == "hyrsm-interval50"
    for n in (8, 9, 15, 40, 100, 301):
        for train in (True, False):
            ours = sample_frames(p.test_sampler, n, 8, train=train, rng=frame_rng(n, "v"))
            draws = frame_rng(n, "v")
            theirs = hyrsm_interval_based_sampling(
                n,
                8,
                50,
                train=train,
                randint=lambda a, b, g=draws: int(g.integers(a, b + 1)),
                uniform=None,
            )
            assert ours == theirs
    # n = 100: segments of 12 frames, frames 96-99 never drawn
    seen = [set() for _ in range(8)]
    for s in range(300):
        idx = sample_frames(p.test_sampler, 100, 8, train=False, rng=frame_rng(s, "v"))
        for i, f in enumerate(idx):
            seen[i].add(f)
    assert seen == [set(range(12 * i, 12 * i + 12)) for i in range(8)]


@pytest.mark.parametrize("protocol", ["hyrsm", "clip-fsar"])
def test_hyrsm_kinetics_clip_is_its_interval_sampler_at_rate_35(protocol):
    """The clip shrinks to the video when the video is shorter (fsarbench clamped 5 of a
    120-frame video's 8 frames to its last one), ends ``35`` before ``start + clip``, and
    starts at ``(n - clip + 1) / 2`` at test, as HyRSM's sampler computes them."""
    p = get_protocol(protocol, "kinetics100")
    assert p.test_sampler == p.train_sampler == "hyrsm-interval35"
    assert sample_frames(p.test_sampler, 120, 8, train=False, rng=frame_rng(0, "v")) == [
        0, 12, 24, 36, 49, 61, 73, 85
    ]  # fmt: skip
    for frames in (8, 16):
        for n in [*range(frames, 700, 7), 280, 281, 279, 35, 34]:
            for train in (True, False):
                ours = sample_frames(p.test_sampler, n, frames, train=train, rng=frame_rng(n, "v"))
                draws = frame_rng(n, "v")
                theirs = hyrsm_interval_based_sampling(
                    n,
                    frames,
                    35,
                    train=train,
                    randint=None,
                    uniform=lambda a, b, g=draws: float(g.uniform(a, b)),
                )
                assert ours == theirs, (n, frames, train)
    starts = {
        sample_frames(p.train_sampler, 400, 8, train=True, rng=frame_rng(s, "v"))[0]
        for s in range(30)
    }
    assert len(starts) > 10 and min(starts) >= 0 and max(starts) <= 121


def test_hyrsm_segment_sampler_stays_an_option_with_one_rounded_frame_per_segment():
    seen = [set() for _ in range(8)]
    for s in range(300):
        idx = sample_frames("hyrsm-segment", N, 8, train=False, rng=frame_rng(s, "v"))
        for i, f in enumerate(idx):
            seen[i].add(f)
    # bounds linspace(0, 40, 9): segment i covers [5i, 5i+5), rounded -> 5i..5i+5, clamped 39
    for i in range(8):
        assert seen[i] <= set(range(5 * i, min(5 * i + 5, 39) + 1))
        assert len(seen[i]) >= 4


@pytest.mark.parametrize(
    ("protocol", "dataset", "flip", "norm"),
    [
        ("seed", "kinetics100", True, "imagenet"),
        ("seed", "ssv2-full", False, "imagenet"),  # left/right labels
        ("trx", "ssv2-full", True, "none"),  # TRX flips SSv2 and feeds 0-1 pixels
        ("hyrsm", "ucf101", "query", "hyrsm"),  # HyRSM flips its training queries only
        ("hyrsm", "ssv2-full", "query", "hyrsm"),
    ],
)
def test_flip_and_normalisation_per_dataset(protocol, dataset, flip, norm):
    p = get_protocol(protocol, dataset)
    assert (p.flip, p.norm) == (flip, norm)


@pytest.fixture
def registered():
    """Registers datasets for one test and removes them afterwards."""
    from fsarbench.data import datasets

    names: list[str] = []

    def register(name: str, factory, **kwargs) -> None:
        names.append(name)
        datasets.register_dataset(name, factory, **kwargs)

    yield register
    for name in names:
        datasets.DATASETS.pop(name, None)
        datasets.NO_FLIP.discard(name)
        datasets.SETTINGS_OF.pop(name, None)


class _Mirrored:
    """A user dataset whose classes are 'move left' / 'move right'."""

    name = variant = "mirrored"
    flip_ok = False


@pytest.mark.parametrize("protocol", ["seed", "trx", "hyrsm", "clip-fsar"])
def test_no_protocol_flips_a_dataset_registered_as_not_flippable(registered, protocol):
    registered("mirrored", _Mirrored, flip_ok=False)
    registered("mirrored-small", _Mirrored, settings_of="mirrored")
    assert get_protocol(protocol, "mirrored").flip is False
    assert get_protocol(protocol, "mirrored-small").flip is False  # a variant of it
    assert get_protocol(protocol, "synth").flip is False  # trx flipped synth before


def test_a_dataset_contradicting_its_registration_is_refused(registered):
    from fsarbench.data.datasets import DatasetFlipError, get_dataset

    registered("mirrored", _Mirrored)  # registered as flippable, objects say flip_ok=False
    with pytest.raises(
        DatasetFlipError, match=r"register_dataset\('mirrored', \.\.\., flip_ok=False\)"
    ):
        get_dataset("mirrored")
    registered("no-attribute", object)
    with pytest.raises(DatasetFlipError, match="need a bool attribute flip_ok"):
        get_dataset("no-attribute")
    registered("mirrored", _Mirrored, flip_ok=False)
    assert get_dataset("mirrored").flip_ok is False


def test_an_explicit_protocol_entry_keeps_a_references_flip_quirk():
    """TRX flips SSv2 (and HyRSM its training queries), although SSv2 is not flippable."""
    from fsarbench.data.datasets import dataset_flip_ok

    assert not dataset_flip_ok("ssv2-small")
    assert get_protocol("trx", "ssv2-small").flip and get_protocol("hyrsm", "ssv2-full").flip
    assert not get_protocol("seed", "ssv2-small").flip


def test_unknown_protocol_names_the_nearest():
    with pytest.raises(ConfigError, match="Did you mean 'trx'"):
        get_protocol("trxx", "ucf101")
    assert list_protocols() == ["seed", "trx", "hyrsm", "clip-fsar"]


def test_finetune_recipe_takes_the_protocol_and_options_override_it():
    from fsarbench.training.finetune_recipe import finetune_recipe

    trx = finetune_recipe("otam", "ssv2-full", protocol="trx").options
    assert (trx.protocol, trx.train_sampler, trx.norm, trx.flip) == ("trx", "trx", "none", True)
    seed = finetune_recipe("otam", "ssv2-full").options
    assert (seed.protocol, seed.test_transform, seed.flip) == ("seed", "seed-test", False)
    over = finetune_recipe("otam", "ucf101", {"options": {"flip": False}}, protocol="hyrsm")
    assert (over.options.protocol, over.options.flip) == ("hyrsm", False)


def test_recipe_files_may_not_set_protocol_fields():
    from fsarbench.training.finetune_recipe import check_finetune_table

    table = {"default": {}, "methods": {"otam": {"options": {"test_sampler": "trx"}}}}
    with pytest.raises(ConfigError, match="set by the protocol"):
        check_finetune_table(table, "x.yaml")


def test_protocol_changes_the_frozen_cache_key():
    from fsarbench.features.extract import SplitExtractConfig, split_cache_key

    def key(protocol: str) -> str:
        p = get_protocol(protocol, "ucf101")
        config = SplitExtractConfig(
            frames=p.test_sampler, transform=p.test_transform, flip=p.flip, norm=p.norm
        ).resolved("test")
        return split_cache_key("ucf101", "test", [], "w", config).digest()

    assert len({key(p) for p in list_protocols()}) == len(list_protocols()) == 4


def test_frozen_track_records_query_flip_as_the_flip_it_applies():
    """Frozen training views have no role: 'query' flips them as True does, and the record's
    protocol says so, so a frozen hyrsm record keeps its id (its features are the same)."""
    from fsarbench.experiments.features import frozen_protocol

    hyrsm, seed = get_protocol("hyrsm", "ucf101"), get_protocol("seed", "ucf101")
    assert hyrsm.flip == "query" and frozen_protocol(hyrsm)["flip"] is True
    # nor are they colour-jittered: the dict (and so the record id) is the one made before
    without_jitter = {k: v for k, v in hyrsm.to_dict().items() if k != "color_jitter"}
    assert frozen_protocol(hyrsm) == {**without_jitter, "flip": True}
    assert list(frozen_protocol(hyrsm)) == [
        "name",
        "train_sampler",
        "test_sampler",
        "train_transform",
        "test_transform",
        "flip",
        "norm",
    ]
    assert frozen_protocol(seed) == seed.to_dict()
    assert frozen_protocol(get_protocol("hyrsm", "synth"))["flip"] is False


def test_clip_fsar_protocol_is_hyrsms_loader_as_clip_fsars_configs_set_it():
    """CLIP-FSAR runs HyRSM's few-shot loader with CLIP's statistics; only its Kinetics
    configs set SUPPORT_QUERY_DIFF (training queries flipped), the others flip nothing."""
    hmdb, k100 = get_protocol("clip-fsar", "hmdb51"), get_protocol("clip-fsar", "kinetics100")
    assert (hmdb.train_sampler, hmdb.flip, hmdb.norm) == ("hyrsm-interval50", False, "clip")
    assert (k100.train_sampler, k100.test_sampler, k100.flip) == (
        "hyrsm-interval35",
        "hyrsm-interval35",
        "query",
    )
    assert get_protocol("clip-fsar", "ssv2-full").flip is False
