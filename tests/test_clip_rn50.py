"""CLIP's RN50 image tower (``clip-rn50``, CLIP-FSAR's released backbone) through timm,
against open_clip's ``ModifiedResNet`` (OpenAI's code) on the same weights."""

from __future__ import annotations

import pytest
import torch

from fsarbench.features.backbones import (
    BackboneWeightsError,
    UnknownBackboneError,
    backbone_spec,
    create_backbone,
)
from fsarbench.features.vit_presets import CLIP_MEAN, VIT_PRESETS, TrainBlocksError
from fsarbench.training.finetune_recipe import FinetuneOptions, finetune_recipe
from fsarbench.training.video_method import backbone_trainable

open_clip = pytest.importorskip("open_clip")


def _openai_rn50(seed: int) -> torch.nn.Module:
    """open_clip's RN50 (OpenAI's architecture), random, with BatchNorm statistics and
    affines away from their defaults so that a wrong mapping of them shows."""
    torch.manual_seed(seed)
    model = open_clip.create_model("RN50", pretrained=None)
    with torch.no_grad():
        for m in model.visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    return model.eval()


def test_clip_rn50_is_openais_modified_resnet_on_a_clip_checkpoint(tmp_path):
    """A whole open_clip RN50 state dict (image and text keys) given as weights=PATH: the
    preset converts its ``visual.*`` keys and gives the OpenAI tower's features."""
    clip = _openai_rn50(0)
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(clip.state_dict(), path)
    ours = create_backbone("clip-rn50", weights=str(path))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = clip.visual(x)
        got = ours(x)
    assert got.shape == (2, 1024)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert ours.weights_id.startswith("file:") and ours.norm == "clip"


def test_clip_rn50_spec_and_other_input_sizes():
    spec = backbone_spec("clip-rn50")
    assert (spec.input_size, spec.norm, spec.feature_dim, spec.mean) == (
        224,
        "clip",
        1024,
        CLIP_MEAN,
    )
    model = create_backbone("clip-rn50", weights="none", seed=2)
    again = create_backbone("clip-rn50", weights="none", seed=2)
    x = torch.rand(2, 3, 64, 64)  # the attention pool resamples its position table
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, again(x))
    assert out.shape == (2, 1024) and model.weights_id == "none:seed2"


def test_clip_rn50_refuses_tiny_train_blocks_and_other_weights():
    with pytest.raises(UnknownBackboneError, match="weights=none and a small crop"):
        create_backbone("clip-rn50", weights="none", tiny=True)
    with pytest.raises(BackboneWeightsError, match="'pretrained' \\(= openai\\)"):
        create_backbone("clip-rn50", weights="imagenet")
    model = create_backbone("clip-rn50", weights="none")
    with pytest.raises(TrainBlocksError, match="train_blocks=0"):
        backbone_trainable(model, FinetuneOptions(backbone="clip-rn50", train_blocks=1))


def test_clip_rn50_offline_names_the_weights_folder(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(BackboneWeightsError) as err:
        create_backbone("clip-rn50", weights="pretrained")
    assert str(tmp_path / "models--timm--resnet50_clip.openai") in str(err.value)


def test_clip_fsar_on_clip_rn50_takes_rn50s_text_tower():
    from fsarbench.features.text_towers import create_text_tower
    from fsarbench_baselines.clip_fsar import CLIPFSAR

    assert VIT_PRESETS["clip-rn50"].text_tower == "RN50"
    hp = CLIPFSAR.backbone_hparams({"backbone": "clip-rn50", "weights": "none"})
    assert hp == {"text_tower": "RN50", "text_weights": "none"}
    tower = create_text_tower("RN50", weights="none")
    assert tower.embed_dim == 1024  # the image tower's feature size: no projection between
    assert tower.encode(["a photo of archery"]).shape == (1, 1024)


def test_clip_fsar_finetune_recipe_trains_clip_rn50():
    """CLIP-FSAR's released configs train CLIP's RN50 (BACKBONE_NAME RN50)."""
    options = finetune_recipe("clip-fsar", "hmdb51").options
    assert (options.backbone, options.weights, options.norm) == ("clip-rn50", "pretrained", "clip")
    assert finetune_recipe("clip-fsar", "synth").options.backbone == "resnet18"  # CPU smoke
