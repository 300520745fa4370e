"""Features that cannot belong to something else: the extraction settings the CLI passes,
the cache key's data identity, and one class-name table for training and evaluation."""

from __future__ import annotations

import pytest

from fsarbench.cli import extract_cmd
from fsarbench.cli.main import main


@pytest.mark.parametrize(
    ("argv", "norm"),
    [
        (["--backbone", "clip-vit-b16"], "clip"),
        (["--backbone", "dinov2-vit-s14", "--protocol", "trx"], "imagenet"),
        (["--backbone", "resnet18", "--protocol", "trx"], "none"),
        (["--backbone", "resnet18"], "imagenet"),
    ],
)
def test_extract_cli_gives_a_vit_its_own_normalisation(monkeypatch, argv, norm):
    """`extract` used the protocol's statistics for CLIP and DINOv2 towers (as if the user had
    chosen them); `run` already gave them their own."""
    seen = {}

    def fake_extract(dataset, split, *, config, **_):
        seen["norm"] = config.norm
        raise SystemExit(0)

    monkeypatch.setattr(extract_cmd, "extract_split", fake_extract)
    with pytest.raises(SystemExit):
        main(["extract", "synth", "--split", "test", *argv])
    assert seen["norm"] == norm
