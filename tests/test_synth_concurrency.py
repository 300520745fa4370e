"""Two processes generating the same synth folder at once (torchrun ranks, DataLoader
workers) both get the complete dataset."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = (
    "import sys; from fsarbench.data.synth import SynthConfig, ensure_synth; "
    "print(ensure_synth(sys.argv[1], seed=3, config=SynthConfig(videos_per_class=1, size=32)))"
)


def test_concurrent_first_use(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CODE, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    folders = {o[0].strip() for o in outs}
    assert len(folders) == 1
    meta = json.loads((tmp_path / next(iter(folders)).split("/")[-1] / "synth.json").read_text())
    assert len(meta["videos"]) == len(meta["classes"])
    assert not list(tmp_path.glob("*.partial*"))
