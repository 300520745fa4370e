"""Backbone registry: shapes, seeded init, offline weights, checkpoint loading."""

from __future__ import annotations

import argparse
from urllib.error import URLError

import pytest
import torch

from fsarbench.features import backbones as bb
from fsarbench.features.backbones import (
    BackboneWeightsError,
    UnknownBackboneError,
    create_backbone,
    list_backbones,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscribing busy shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


IMAGES = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache, offline, with any download attempt failing the test."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("FSAR_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the network must not be contacted offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub" / "checkpoints"


def _out(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(IMAGES)


def test_list_and_unknown_names():
    assert {"resnet18", "resnet34", "resnet50"} <= set(list_backbones())
    with pytest.raises(UnknownBackboneError, match="resnet18"):
        create_backbone("resnet19", weights="none")
    with pytest.raises(UnknownBackboneError, match="timm has no model"):
        create_backbone("timm:not_a_model", weights="none")


@pytest.mark.parametrize(("name", "dim"), [("resnet18", 512), ("resnet50", 2048)])
def test_torchvision_resnet_gap_features(name, dim):
    model = create_backbone(name, weights="none")
    assert model.feature_dim == dim
    assert not model.training
    assert _out(model).shape == (2, dim)


def test_random_init_is_seeded():
    a, b = (
        create_backbone("resnet18", weights="none", seed=1),
        create_backbone("resnet18", weights="none", seed=1),
    )
    c = create_backbone("resnet18", weights="none", seed=2)
    assert torch.equal(_out(a), _out(b))
    assert not torch.allclose(_out(a), _out(c))
    assert a.weights_id == "none:seed1" != c.weights_id


@pytest.mark.parametrize("env", ["FSAR_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_missing_weights_fail_at_once_with_where_to_put_them(hub, monkeypatch, env):
    monkeypatch.delenv("FSAR_OFFLINE")
    monkeypatch.setenv(env, "1")
    with pytest.raises(BackboneWeightsError) as info:
        create_backbone("resnet18", weights="imagenet")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert str(hub / "resnet18-f37072fd.pth") in message
    assert "--weights" in message


def test_online_download_failure_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("FSAR_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refused(url, dst, **kwargs):
        raise URLError("no route")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refused)
    with pytest.raises(BackboneWeightsError, match="resnet34-b627a593.pth.*from https://"):
        create_backbone("resnet34", weights="imagenet")


def _hub_file(hub, seed: int, name: str | None = None):
    """A resnet18 state dict saved in the hub cache under ``name`` (default: the name its
    own sha256 prefix gives, as torchvision names its files), and the backbone it came from."""
    import hashlib

    source = create_backbone("resnet18", weights="none", seed=seed)
    state = {f"{k}": v for k, v in source.trunk.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    hub.mkdir(parents=True, exist_ok=True)
    tmp = hub / "tmp.pth"
    torch.save(state, tmp)
    name = name or f"resnet18-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    return tmp.rename(hub / name), source


def test_imagenet_weights_read_from_the_hub_cache(hub, monkeypatch):
    path, source = _hub_file(hub, 5)
    url = f"https://download.pytorch.org/models/{path.name}"
    monkeypatch.setattr(bb, "torchvision_weights_path", lambda name, member: (path, url))
    loaded = create_backbone("resnet18", weights="imagenet")
    assert loaded.weights_id == "torchvision:resnet18.IMAGENET1K_V1"
    assert torch.equal(_out(loaded), _out(source))


def test_a_hub_file_that_is_not_the_published_one_is_refused(hub):
    """Any file at resnet18-f37072fd.pth was loaded and keyed as the ImageNet weights (a
    cache of one such file was then served for another); torchvision checks the name's
    sha256 prefix."""
    path, _ = _hub_file(hub, 5, name="resnet18-f37072fd.pth")
    with pytest.raises(BackboneWeightsError, match=r"is not the file .* names: its sha256 starts"):
        create_backbone("resnet18", weights="imagenet")


def test_unknown_torchvision_weights_name(hub):
    with pytest.raises(BackboneWeightsError, match="IMAGENET1K_V1"):
        create_backbone("resnet18", weights="imagenet9k")


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module", "backbone"])
def test_checkpoint_file_loads_with_prefixes_stripped(tmp_path, wrap):
    source = create_backbone("resnet18", weights="none", seed=7)
    state = source.trunk.state_dict()
    if wrap in ("module", "backbone"):
        state = {f"{wrap}.{k}": v for k, v in state.items()}
    obj = {"state_dict": state, "epoch": 3} if wrap == "state_dict" else state
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    loaded = create_backbone("resnet18", weights=str(path))
    assert loaded.weights_id.startswith("file:") and len(loaded.weights_id) == 5 + 32
    assert torch.equal(_out(loaded), _out(source))


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(create_backbone("resnet18", weights="none").trunk.state_dict(), path)
    with pytest.raises(BackboneWeightsError, match="do not fit.*size mismatch"):
        create_backbone("resnet50", weights=path)
    state = create_backbone("resnet18", weights="none").trunk.state_dict()
    del state["layer4.1.bn2.bias"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(BackboneWeightsError, match=r"missing \['layer4.1.bn2.bias'\]"):
        create_backbone("resnet18", weights=tmp_path / "partial.pt")
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        create_backbone("resnet18", weights=str(tmp_path / "absent.pth"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneWeightsError, match="cannot read .* as a PyTorch state dict"):
        create_backbone("resnet18", weights=str(tmp_path / "junk.pt"))
    with pytest.raises(BackboneWeightsError, match="is a folder: give the weights file in it"):
        create_backbone("resnet18", weights=str(tmp_path))  # the cache folder, not its file


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=1)}, path)
    with pytest.raises(BackboneWeightsError, match="cannot read"):
        bb.load_checkpoint_state_dict(path)


def test_timm_model_by_name(tmp_path):
    model = create_backbone("timm:resnet10t", weights="none", seed=3)
    assert model.feature_dim == 512
    out = _out(model)
    assert out.shape == (2, 512)
    path = tmp_path / "timm.pth"
    torch.save({"model": model.trunk.state_dict()}, path)
    assert torch.equal(_out(create_backbone("timm:resnet10t", weights=path)), out)


def test_timm_offline_pretrained_fails_with_a_hint(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BackboneWeightsError, match="Hugging Face cache"):
        create_backbone("timm:resnet10t", weights="imagenet")


@pytest.fixture
def no_network(monkeypatch):
    """Every connection fails as without a network (no proxy, offline not set); the
    addresses tried. The probe's cached answer is dropped before and after."""
    import socket
    import urllib.request

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("FSAR_OFFLINE", raising=False)
    tried = []

    def refused(address, *args, **kwargs):
        tried.append(address)
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "getproxies", dict)
    monkeypatch.setattr(socket, "create_connection", refused)
    bb.hub_unreachable.cache_clear()
    yield tried
    bb.hub_unreachable.cache_clear()


def test_an_unreachable_hub_is_read_offline_once(no_network, monkeypatch):
    """Without network and without HF_HUB_OFFLINE, huggingface_hub retried each file for
    about 50 s (a line per try) before it read its cache or failed."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as read without the variable
    seen = []

    def factory(name, pretrained, **kwargs):
        seen.append(constants.HF_HUB_OFFLINE)
        raise FileNotFoundError("not in the cache")

    for _ in range(2):
        with pytest.raises(
            BackboneWeightsError, match="the Hub at huggingface.co:443 is unreachable"
        ):
            bb._timm_pretrained(factory, "resnet18.a1_in1k")
    assert seen == [True, True] and no_network == [("huggingface.co", 443)]  # probed once
    assert constants.HF_HUB_OFFLINE is False  # restored


def test_an_unreachable_hub_names_the_text_tower_folder_without_a_download(
    no_network, monkeypatch, tmp_path
):
    import huggingface_hub
    from huggingface_hub import constants

    from fsarbench.features.text_towers import TextTowerWeightsError, create_text_tower

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("an unreachable Hub was asked for the file")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    create_text_tower.cache_clear()
    with pytest.raises(TextTowerWeightsError, match="offline: the Hub at .* is unreachable") as err:
        create_text_tower("ViT-B-16", weights="openai")
    assert str(tmp_path / "models--timm--vit_base_patch16_clip_224.openai") in str(err.value)


def test_a_proxy_is_not_probed(monkeypatch):
    import urllib.request

    def no_probe(*args, **kwargs):
        raise AssertionError("probed behind a proxy")

    monkeypatch.setattr(urllib.request, "getproxies", lambda: {"https": "http://proxy:3128"})
    monkeypatch.setattr(bb.socket, "create_connection", no_probe)
    bb.hub_unreachable.cache_clear()
    try:
        assert bb.hub_unreachable() is None
    finally:
        bb.hub_unreachable.cache_clear()
