"""The CUDA paths, run where a GPU is (skipped elsewhere; ``pytest -m cuda`` selects them):
every head's logits on the GPU equal the CPU's in float64, evaluation (per-episode, pair
tables, pool products, autocast) agrees with the CPU, the finetune track trains every head
with AMP, pinned uint8 clips and the prefetcher, extraction's float16 features match the
CPU's (float and uint8 clips; the device's pixel normalisation is the CPU's to the bit),
and ``run``/``torchrun`` work end to end on ``--device cuda``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_fixtures import TINY_SYNTH, tiny_recipe

import fsarbench as fb
from fsarbench.testing.contract import FEATURE_DIM, SEQ_LEN, make_contract_method, random_batch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CUDA = torch.device("cuda")
METHODS = fb.list_methods()
FINETUNED = ["protonet", "otam", "bimhm", "trx", "hyrsm", "sgtm-otam", "sgtm-bimhm"]


def _to(batch: fb.EpisodeBatch, device: torch.device) -> fb.EpisodeBatch:
    moved = {
        f.name: getattr(batch, f.name).to(device)
        for f in dataclasses.fields(batch)
        if isinstance(getattr(batch, f.name), torch.Tensor)
    }
    return dataclasses.replace(batch, **moved)


@pytest.mark.parametrize("name", METHODS)
def test_logits_and_gradients_on_cuda_equal_the_cpu_in_float64(name):
    method = make_contract_method(name)
    batch = random_batch(names=method.uses_class_names, shot=2)
    method.eval()
    with torch.no_grad():
        cpu = method(batch).logits
        gpu = method.to(CUDA)(_to(batch, CUDA)).logits
    assert gpu.device.type == CUDA.type
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-9)

    if not any(p.requires_grad for p in method.parameters()):
        return  # a parameter-free head (Bi-MHM, OTAM): nothing to train
    method.train()
    out = method(_to(batch, CUDA))
    loss = torch.nn.functional.cross_entropy(
        out.logits.flatten(0, 1), batch.query_labels.flatten().to(CUDA)
    )
    (loss + sum(out.losses.values())).backward()
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)


def _pool(classes: int = 8, per_class: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(classes, 1, 1, FEATURE_DIM, generator=g)
    # noisy enough that accuracy is well below 100%: near ties exist, as on real data
    feats = 0.3 * base + torch.rand(classes, per_class, SEQ_LEN, FEATURE_DIM, generator=g)
    return feats.flatten(0, 1), np.repeat(np.arange(classes), per_class)


def _names(method) -> list[str] | None:
    return [f"class {c}" for c in range(8)] if method.uses_class_names else None


@pytest.mark.parametrize("shot", [1, 3])
@pytest.mark.parametrize("name", METHODS)
def test_evaluate_on_cuda_agrees_with_the_cpu(name, shot):
    """Same predictions (float32 may flip a near tie) through every evaluator path: per
    episode, pair tables and pool products (``pair_tables={}``), features already on the
    GPU, and bf16 autocast."""
    feats, classes = _pool()
    manifest = fb.make_manifest(classes, way=5, shot=shot, queries=2, episodes=120, seed=1)
    method = make_contract_method(name, dtype=torch.float32).eval()
    kw = {"progress": False, "class_names": _names(method)}
    cpu = fb.evaluate(method, feats, manifest, device="cpu", **kw)
    method.to(CUDA)
    runs = {
        "episodes": fb.evaluate(method, feats, manifest, device=CUDA, **kw),
        "tables": fb.evaluate(method, feats, manifest, device=CUDA, pair_tables={}, **kw),
        "features on the GPU": fb.evaluate(method, feats.to(CUDA), manifest, device=CUDA, **kw),
    }
    for path, res in runs.items():
        same = (res.records["predicted_label"] == cpu.records["predicted_label"]).mean()
        assert same >= 0.99, f"{path}: {same:.3f} of predictions agree with the CPU"
        assert abs(res.accuracy - cpu.accuracy) <= 1.0, path
    amp = fb.evaluate(method, feats, manifest, device=CUDA, autocast=True, **kw)
    same = (amp.records["predicted_label"] == cpu.records["predicted_label"]).mean()
    assert same >= 0.9 and abs(amp.accuracy - cpu.accuracy) <= 5.0


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from fsarbench.data.datasets import get_dataset

    return get_dataset("synth", root=tmp_path_factory.mktemp("synth"), config=TINY_SYNTH)


def _tiny_finetune(synth, name: str):
    """(recipe, train split, val split, model on the device) of a 2-step finetune of
    ``name`` on the tiny synth, 2 decode workers, validated every step."""
    from fsarbench.training import finetune as ft

    over = tiny_recipe(
        recipe={"val_every": 1, "val_episodes": 4, "val_shot": 1, "lr": 1e-3},
        options={"workers": 2, "crop": 32, "resize": 40, "frames": 4},
    )
    recipe = ft.finetune_recipe(name, "synth", over)
    train = ft.ClipSplit(synth.videos("train"), synth.variant, synth.flip_ok)
    val = ft.ClipSplit(synth.videos("val"), synth.variant, synth.flip_ok)
    kw = {"num_train_classes": train.num_classes} if name.startswith("sgtm") else {}
    return recipe, train, val, ft.build_video_method(name, recipe.options, CUDA, seed=0, **kw)


@pytest.mark.parametrize("name", FINETUNED)
def test_finetune_trains_with_amp_pinned_clips_and_prefetch(synth, name, monkeypatch):
    from fsarbench.distributed.sharded_eval import evaluate_sharded
    from fsarbench.training import finetune as ft

    recipe, train, val, model = _tiny_finetune(synth, name)
    on_gpu = CUDA.type == "cuda"
    assert model.precision.dtype in ((torch.bfloat16, torch.float16) if on_gpu else (None,))

    pinned: list[bool] = []
    moved = ft.ClipSource._to_device

    def spy(self, micro):
        host = micro.batch[0]
        pinned.extend(t.is_pinned() for t in host.values())
        assert host["clips"].dtype == torch.uint8, "clips travel as uint8 pixels"
        out = moved(self, micro)
        assert out.batch.support.device.type == CUDA.type
        return out

    monkeypatch.setattr(ft.ClipSource, "_to_device", spy)
    result = ft.finetune(model, train, val, recipe, device=CUDA, progress=False, step_timing=True)
    assert pinned and all(pinned) == on_gpu, "host clips must be pinned (only) on CUDA"
    assert result.history[-1]["step"] == 2 and "val_accuracy" in result.history[-1]
    assert all(np.isfinite(r["ce"]) for r in result.history if "ce" in r)
    assert set(result.step_times) >= {"data", "forward", "backward", "optimizer", "total"}

    test = ft.ClipSplit(synth.videos("test"), synth.variant, synth.flip_ok)
    manifest = fb.make_manifest(test.classes, way=3, shot=1, episodes=6, seed=0)
    ev = evaluate_sharded(
        model,
        ft.ClipStore(test, model.options),
        manifest,
        device=CUDA,
        autocast=True,
        progress=False,
        class_names=test.class_names if model.uses_class_names else None,
    )
    assert ev.episodes == 6 and 0 <= ev.accuracy <= 100


def test_prefetcher_on_cuda_gives_the_host_values_in_order():
    from fsarbench.training.prefetch import DevicePrefetcher

    host = [torch.randn(64, 64).pin_memory() for _ in range(5)]
    out = list(DevicePrefetcher(host, lambda t: t.to(CUDA, non_blocking=True), CUDA))
    assert len(out) == 5 and all(t.device.type == CUDA.type for t in out)
    for h, d in zip(host, out, strict=True):
        assert torch.equal(d.cpu(), h)


class _Clips(torch.utils.data.Dataset):
    def __init__(self, n: int, pixels: bool = False) -> None:
        self.n, self.pixels = n, pixels

    def __len__(self) -> int:
        return self.n

    def clip(self, i: int) -> torch.Tensor:
        rng = torch.Generator().manual_seed(i)
        if self.pixels:
            return torch.randint(0, 256, (3, 3, 64, 64), generator=rng, dtype=torch.uint8)
        return torch.rand(3, 3, 64, 64, generator=rng)

    def __getitem__(self, i: int) -> dict:
        return {"clip": self.clip(i), "index": i, "view": 0, "ok": True, "error": None}


def test_pixel_norm_on_cuda_equals_the_cpu_bit_for_bit():
    from fsarbench.data.transforms import NORMS, get_transform

    pixels = torch.randint(0, 256, (4, 3, 3, 20, 20), dtype=torch.uint8)
    for norm in NORMS:
        table = get_transform("seed-test", norm=norm).pixel_norm()
        on_gpu = table(pixels.pin_memory().to(CUDA, non_blocking=True))
        assert on_gpu.device.type == CUDA.type and torch.equal(on_gpu.cpu(), table(pixels))


@pytest.mark.parametrize("pixels", [False, True], ids=["float-clips", "uint8-clips"])
def test_extraction_on_cuda_matches_the_cpu_features(tmp_path, pixels):
    from fsarbench.data.transforms import get_transform
    from fsarbench.features.backbones import create_backbone
    from fsarbench.features.cache import FeatureCache
    from fsarbench.features.extract import extract_features

    data = _Clips(7, pixels)
    norm = get_transform("seed-test").pixel_norm() if pixels else None
    backbone = create_backbone("resnet18", weights="none", seed=0)
    with torch.inference_mode():
        inputs = [norm(data.clip(i)) if norm else data.clip(i) for i in range(7)]
        expect = torch.stack([backbone.eval()(x) for x in inputs])
    cache, stats = extract_features(
        data,
        backbone,
        cache_dir=tmp_path / "c",
        num_frames=3,
        batch_size=3,
        num_workers=2,
        device=CUDA,
        progress=False,
        normalise=norm,
    )
    assert (stats.written, stats.failed) == (7, 0)
    got = FeatureCache.open(cache.path).get(np.arange(7), np.zeros(7, int)).float()
    rel = (got.reshape(expect.shape) - expect).norm() / expect.norm()
    assert rel < 1e-2, f"float16 features differ from the CPU's by {rel:.2e} (relative)"


def _cli(args: list[str], tmp_path: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "FSAR_CACHE": str(tmp_path / "cache"), "FSAR_DATA": str(tmp_path / "d")}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_run_on_cuda_end_to_end(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fsarbench", "run", "--method", "otam", "trx", "sgtm-otam"]
    cmd += ["--dataset", "synth", "--episodes", "300", "--device", "cuda", "--no-progress"]
    proc = _cli([*cmd, "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert records and all(0 < r["accuracy"] <= 100 for r in records)


def test_torchrun_finetune_on_cuda(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    cmd += ["-m", "fsarbench", "train", "otam", "--dataset", "synth", "--track", "finetune"]
    cmd += ["--root", str(tmp_path / "synth"), "--out", str(tmp_path / "out"), "--no-progress"]
    cmd += ["--recipe", "steps=4", "val_every=2", "val_episodes=20", "--option"]
    cmd += ["weights=none", "frames=4", "workers=2", "--test-episodes", "20", "--shots", "1"]
    proc = _cli([*cmd, "--device", "cuda"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best val accuracy" in proc.stdout and "test 5-way 1-shot" in proc.stdout
    assert "step time" in proc.stdout, "train's log must show the step breakdown"


@pytest.mark.parametrize("name", ["protonet", "hyrsm", "trx", "sgtm-otam"])
def test_finetune_with_fp16_and_a_grad_scaler(synth, name, monkeypatch):
    """GPUs without bf16 (V100, T4) train in fp16 with a GradScaler: finite losses, a
    finite validation accuracy (HyRSM's Bi-MHM overflowed fp16 before it left autocast)."""
    from fsarbench.training import finetune as ft

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    recipe, train, val, model = _tiny_finetune(synth, name)
    if CUDA.type == "cuda":
        assert model.precision.dtype == torch.float16 and model.precision.scaler
    result = ft.finetune(model, train, val, recipe, device=CUDA, progress=False)
    assert all(np.isfinite(r["ce"]) for r in result.history if "ce" in r)
    assert 0 <= result.history[-1]["val_accuracy"] <= 100
