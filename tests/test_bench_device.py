"""The benchmarks' device switch: ``--device`` reaches the device-aware benchmarks, a CUDA
request without a GPU is an error (never a silent CPU measurement), a bare flag is refused."""

from __future__ import annotations

import pytest
import torch

from benchmarks.__main__ import main as bench_main
from benchmarks.bench_extract import bench_config
from benchmarks.common import bench_device


def test_device_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("FSAR_BENCH_DEVICE", raising=False)
    assert bench_device() == torch.device("cpu")
    monkeypatch.setenv("FSAR_BENCH_DEVICE", "cuda")
    if torch.cuda.is_available():
        assert bench_device().type == "cuda"
    else:
        with pytest.raises(SystemExit, match="torch sees no CUDA GPU"):
            bench_device()


def test_bare_device_flag_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("FSAR_BENCH_DEVICE", raising=False)
    assert bench_main(["--device"]) == 2
    assert "--device needs a value" in capsys.readouterr().err


def test_extraction_is_measured_at_each_devices_size():
    cpu, videos = bench_config(torch.device("cpu"))
    assert (cpu.backbone, cpu.resolution, cpu.workers, videos) == ("resnet18", 112, 2, 128)
    gpu, videos = bench_config(torch.device("cuda"))  # only a config: nothing touches CUDA
    assert (gpu.backbone, gpu.resolution, gpu.batch_size, videos) == ("resnet50", 224, 32, 512)
