"""The probe cache is saved while probing and when probing stops (review 38b, F1): a probe
of a large split stopped by torchrun, a scheduler or Ctrl-C saved nothing, so its re-run
probed every video again (and under torchrun ran into the same timeout)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsarbench.data import health
from fsarbench.data.datasets import VideoRecord
from fsarbench.data.probe_cache import ProbeCache

FRAMES = 40


def _records(folder: Path, n: int) -> list[VideoRecord]:
    """``n`` listed videos ``v0..v{n-1}`` (placeholder files: the probe is replaced)."""
    records = []
    for i in range(n):
        path = folder / f"v{i}.mp4"
        path.write_bytes(b"x" * 10)
        records.append(VideoRecord(video_id=f"v{i}", class_name="a", class_index=0, path=path))
    return records


def _saved(path: Path, records: list[VideoRecord]) -> list[str]:
    """Ids of the records a re-run finds in the probe cache file ``path``."""
    cache = ProbeCache(path)
    return [r.video_id for r in records if cache.lookup(r.path) is not None]


@pytest.mark.parametrize("jobs", [1, 2])
def test_interrupted_probe_keeps_what_it_probed_for_the_rerun(tmp_path, monkeypatch, jobs):
    """KeyboardInterrupt (Ctrl-C, or SIGTERM as fsarbench raises it) at video k: the k
    videos probed before it are in the cache, and the re-run probes only the rest."""
    records, k = _records(tmp_path, 12), 5
    cache_path = tmp_path / "probes" / "ds.json"

    def interrupted(record: VideoRecord, full: bool = False) -> tuple[str, int]:
        if record.video_id == f"v{k}":
            raise KeyboardInterrupt("signal 15")
        return record.video_id, FRAMES

    monkeypatch.setattr(health, "_probe", interrupted)
    with pytest.raises(KeyboardInterrupt):
        health.check_split(records, "train", probes=ProbeCache(cache_path), jobs=jobs)
    assert _saved(cache_path, records)[:k] == [f"v{i}" for i in range(k)]

    probed: list[str] = []

    def counting(record: VideoRecord, full: bool = False) -> tuple[str, int]:
        probed.append(record.video_id)
        return record.video_id, FRAMES

    monkeypatch.setattr(health, "_probe", counting)
    result = health.check_split(records, "train", probes=ProbeCache(cache_path), jobs=jobs)
    assert not {f"v{i}" for i in range(k)} & set(probed), "re-run probed saved videos again"
    assert result[0].usable == len(records)
    assert _saved(cache_path, records) == [r.video_id for r in records]


def test_interrupted_probe_leaves_exactly_the_finished_videos(tmp_path, monkeypatch):
    """One thread: the interrupt at video k leaves exactly videos 0..k-1."""
    records, k = _records(tmp_path, 8), 3
    cache_path = tmp_path / "probes.json"

    def interrupted(record: VideoRecord, full: bool = False) -> tuple[str, int]:
        if record.video_id == f"v{k}":
            raise KeyboardInterrupt
        return record.video_id, FRAMES

    monkeypatch.setattr(health, "_probe", interrupted)
    with pytest.raises(KeyboardInterrupt):
        health._probe_all(records, 1, ProbeCache(cache_path))
    assert _saved(cache_path, records) == [f"v{i}" for i in range(k)]


def test_probe_cache_is_saved_while_probing(tmp_path, monkeypatch):
    """Saved every ``save_every_s`` seconds (here: after every probe), not only at the end:
    a probe killed outright (SIGKILL after torchrun's grace period) keeps its earlier saves."""
    records = _records(tmp_path, 4)
    cache_path = tmp_path / "probes.json"
    monkeypatch.setattr(health, "_probe", lambda r, full=False: (r.video_id, FRAMES))
    on_disk: list[int] = []
    save = ProbeCache.save

    def spy(self: ProbeCache) -> None:
        save(self)
        on_disk.append(len(_saved(cache_path, records)))

    monkeypatch.setattr(ProbeCache, "save", spy)
    health._probe_all(records, 1, ProbeCache(cache_path), save_every_s=0.0)
    assert on_disk == [1, 2, 3, 4, 4]  # one save per probe, then the closing one
