"""ViT presets (CLIP, DINOv2): specs, tiny random builds, offline errors, normalisation
precedence over the protocol, train_blocks and block-wise activation checkpointing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fsarbench.cli.main import main
from fsarbench.features import extract
from fsarbench.features.backbones import (
    BackboneWeightsError,
    UnknownBackboneError,
    backbone_spec,
    create_backbone,
    effective_norm,
)
from fsarbench.features.vit_presets import VIT_PRESETS, TrainBlocksError
from fsarbench.training.finetune_recipe import FinetuneOptions, finetune_recipe
from fsarbench.training.video_method import VideoMethod, backbone_trainable

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.mark.parametrize(
    ("name", "dim", "norm", "mean"),
    [
        ("clip-vit-b16", 512, "clip", CLIP_MEAN),
        ("clip-vit-l14", 768, "clip", CLIP_MEAN),
        ("dinov2-vit-s14", 384, "imagenet", (0.485, 0.456, 0.406)),
        ("dinov2-vit-b14", 768, "imagenet", (0.485, 0.456, 0.406)),
    ],
)
def test_preset_specs_known_answers(name, dim, norm, mean):
    spec = backbone_spec(name)
    assert (spec.input_size, spec.feature_dim, spec.norm, spec.mean) == (224, dim, norm, mean)
    if norm == "clip":
        assert spec.std == CLIP_STD
    assert backbone_spec("resnet50").norm is None  # the protocol decides for ResNets


@pytest.mark.parametrize("name", sorted(k for k, p in VIT_PRESETS.items() if p.arch == "vit"))
def test_tiny_preset_keeps_architecture_class_and_output_dim(name):
    model = create_backbone(name, weights="none", seed=3, tiny=True)
    again = create_backbone(name, weights="none", seed=3, tiny=True)
    x = torch.rand(2, 3, 56, 56)  # any multiple of the patch: position embedding interpolated
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, again(x))  # seeded
    assert out.shape == (2, VIT_PRESETS[name].feature_dim)
    assert type(model.trunk).__name__ == "VisionTransformer" and len(model.trunk.blocks) == 2
    assert model.weights_id == "none:seed3:tiny" and model.norm == VIT_PRESETS[name].norm


def test_clip_presets_run_openai_weights_with_quickgelu(monkeypatch):
    """OpenAI trained CLIP with QuickGELU: the CLIP presets load their weights into timm's
    QuickGELU variants (plain ``vit_*_clip_224`` is GELU, another network), which read the
    same Hugging Face repositories; the weights id names the variant (so features made with
    GELU are not served again) and DINOv2 keeps its GELU."""
    from timm.layers.activations import QuickGELU
    from timm.models import get_pretrained_cfg

    from fsarbench.features import backbones
    from fsarbench.features.vit_presets import TINY_DIMS

    asked = []

    def no_download(factory, model_name, hint, **kwargs):  # the weights' name, not the weights
        asked.append((model_name, hint))
        return factory(model_name.split(".")[0], pretrained=False, **{**kwargs, **TINY_DIMS})

    monkeypatch.setattr(backbones, "_timm_pretrained", no_download)
    for name, repo in [
        ("clip-vit-b16", "timm/vit_base_patch16_clip_224.openai"),
        ("clip-vit-l14", "timm/vit_large_patch14_clip_224.openai"),
    ]:
        model = create_backbone(name, weights="pretrained")
        timm_name, hint = asked[-1]
        assert "_clip_quickgelu_" in timm_name and timm_name.endswith(".openai")
        assert model.weights_id == f"timm:{timm_name}"
        assert isinstance(model.trunk.blocks[0].mlp.act, QuickGELU)
        assert get_pretrained_cfg(timm_name).hf_hub_id.rstrip("/") == repo  # no new download
        assert VIT_PRESETS[name].hf_repo == repo and repo in hint
        tiny = create_backbone(name, weights="none", tiny=True)  # one network whatever weights
        assert isinstance(tiny.trunk.blocks[0].mlp.act, QuickGELU)
    dino = create_backbone("dinov2-vit-s14", weights="none", tiny=True)
    assert type(dino.trunk.blocks[0].mlp.act) is torch.nn.GELU


def test_tiny_and_weights_errors():
    with pytest.raises(UnknownBackboneError, match="ViT presets"):
        create_backbone("resnet18", weights="none", tiny=True)
    with pytest.raises(BackboneWeightsError, match="weights=none"):
        create_backbone("clip-vit-b16", weights="pretrained", tiny=True)
    with pytest.raises(BackboneWeightsError, match="'pretrained' \\(= openai\\)"):
        create_backbone("clip-vit-b16", weights="imagenet")


def test_missing_pretrained_weights_offline_name_the_folder(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(BackboneWeightsError) as err:
        create_backbone("dinov2-vit-s14", weights="pretrained")
    folder = tmp_path / "models--timm--vit_small_patch14_dinov2.lvd142m"
    assert str(folder) in str(err.value) and "huggingface-cli download" in str(err.value)


def test_checkpoint_file_round_trip(tmp_path):
    source = create_backbone("clip-vit-b16", weights="none", seed=1, tiny=True)
    path = tmp_path / "tiny.pt"
    torch.save(source.trunk.state_dict(), path)
    loaded = create_backbone("clip-vit-b16", weights=str(path), tiny=True)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))
    assert loaded.weights_id.startswith("file:")


def test_backbone_norm_beats_protocol_and_option_beats_both():
    assert effective_norm("clip-vit-b16", "imagenet") == "clip"
    assert effective_norm("dinov2-vit-b14", "none") == "imagenet"
    assert effective_norm("resnet50", "hyrsm") == "hyrsm"
    clip = {"options": {"backbone": "clip-vit-b16"}}
    assert finetune_recipe("otam", "synth", clip).options.norm == "clip"
    assert finetune_recipe("otam", "synth", clip, protocol="trx").options.norm == "clip"
    explicit = {"options": {"backbone": "clip-vit-b16", "norm": "none"}}
    assert finetune_recipe("otam", "synth", explicit).options.norm == "none"
    assert finetune_recipe("otam", "synth", protocol="hyrsm").options.norm == "hyrsm"


def test_extraction_uses_clip_statistics_and_keys_them(monkeypatch):
    """extract_split with a CLIP tower and no explicit norm: the clips are normalised with
    CLIP's mean/std and the cache key says so (so an ImageNet-normalised cache is never reused)."""
    seen = {}

    def fake_extract(dataset, backbone, **kw):
        seen["transform"], seen["key"] = dataset.transform, kw["key"]
        return None, None

    monkeypatch.setattr(extract, "extract_features", fake_extract)
    video = SimpleNamespace(video_id="v0", class_name="a", class_index=0, path="/nonexistent")
    ds = SimpleNamespace(
        videos=lambda split: [video],
        flip_ok=True,
        name="synth",
        variant="synth-v1-seed0",
        split_md5s=lambda: {"test": "md5"},
    )
    config = extract.SplitExtractConfig(
        backbone="clip-vit-b16", weights="none", tiny=True, resolution=32, progress=False
    )
    extract.extract_split("synth", "test", config=config, dataset=ds, cache_root="/nonexistent")
    transform = seen["transform"]
    assert transform.config.norm == "clip"
    assert torch.allclose(transform._mean.flatten(), torch.tensor(CLIP_MEAN))
    assert seen["key"].transform == "seed-test+norm=clip"
    assert seen["key"].weights_id == "none:seed0:tiny"


def _video_method(options: FinetuneOptions) -> VideoMethod:
    from fsarbench.registry import create_method

    backbone = create_backbone("clip-vit-b16", weights="none", tiny=True)
    head = create_method("protonet", feature_dim=512, seq_len=2)
    return VideoMethod(backbone, head, options)


def test_train_blocks_trains_exactly_the_last_blocks_and_the_layers_after_them():
    model = _video_method(FinetuneOptions(backbone="clip-vit-b16", train_blocks=1))
    trained = {n for n, p in model.backbone.trunk.named_parameters() if p.requires_grad}
    expected = {
        n
        for n, _ in model.backbone.trunk.named_parameters()
        if n.startswith(("blocks.1.", "norm.", "fc_norm.", "head."))
    }
    assert trained == expected and "blocks.0.attn.qkv.weight" not in trained
    assert "head.weight" in trained and "patch_embed.proj.weight" not in trained
    stage = model.training_stages()[-1]
    assert {id(p) for p in stage.parameters()} >= {
        id(p) for p in model.backbone.parameters() if p.requires_grad
    }
    with pytest.raises(TrainBlocksError, match="0..2"):
        _video_method(FinetuneOptions(backbone="clip-vit-b16", train_blocks=3))
    resnet = create_backbone("resnet18", weights="none")
    with pytest.raises(TrainBlocksError, match="ViT"):
        backbone_trainable(resnet, FinetuneOptions(train_blocks=1))


def test_vit_checkpointing_is_block_wise_and_gives_the_same_gradients():
    clips = torch.rand(1, 2, 3, 32, 32)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = _video_method(FinetuneOptions(checkpoint_backbone=ckpt, frame_chunk=1))
        assert model.backbone.trunk.grad_checkpointing is ckpt
        model.train()
        model.features(clips).sum().backward()
        grads.append(model.backbone.trunk.blocks[0].attn.qkv.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_list_backbones_shows_size_norm_and_dim(capsys):
    assert main(["list", "backbones"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["clip-vit-b16"].split()[1:3] == ["224", "clip"]
    assert "0.481/0.458/0.408" in rows["clip-vit-b16"] and " 512 " in rows["clip-vit-b16"]
    assert " 384 " in rows["dinov2-vit-s14"] and "imagenet" in rows["dinov2-vit-s14"]
    assert "protocol's" in rows["resnet50"] and " 2048 " in rows["resnet50"]


def test_docs_clip_commands_parse_with_the_real_cli():
    from pathlib import Path

    from test_readme_commands import _code_commands, _inline_commands, argv_of

    from fsarbench.cli.main import build_parser

    text = (Path(__file__).resolve().parents[1] / "docs" / "clip.md").read_text()
    commands = _code_commands(text) + _inline_commands(text)
    assert any("--table clip" in c for c in commands)
    for command in commands:
        args = build_parser().parse_args(argv_of(command))
        assert args.command in {"list", "run", "compare", "check-method"}, command
