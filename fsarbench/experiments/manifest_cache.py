"""Test manifests kept in a run's folder, so a re-run reads its episodes instead of drawing them.

Drawing a 10,000-episode manifest takes about 0.7 s of Python, and ``run --all`` needs ten of
them even when every cell is recorded (a record is reused only for the manifest it names). A
manifest is a pure function of its inputs, the sampler's code and numpy's generators: the file
name hashes all three, so any change draws it afresh. A file that cannot be read, or whose
episodes no longer give the hash it was stored with, is drawn again and replaced.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

import fsarbench.episode_streams as streams_module
import fsarbench.episodes as episodes_module
from fsarbench.episode_streams import draw_test_manifest_fast
from fsarbench.episodes import EPISODE_ARRAYS, EpisodeSpec, Manifest, ManifestError
from fsarbench.interrupts import raise_if_interrupted
from fsarbench.io import atomic_write_bytes, stable_hash
from fsarbench.provenance import source_digest

__all__ = ["MANIFESTS_DIR", "cached_test_manifest"]

log = logging.getLogger(__name__)

#: Sub-folder of a run's ``--out`` holding its test manifests.
MANIFESTS_DIR = "manifests"


def cached_test_manifest(
    folder: Path | None,
    test_classes: np.ndarray,
    *,
    split_variant: str,
    way: int,
    shot: int,
    queries: int,
    episodes: int,
    seed: int,
    class_names: Sequence[str] | None = None,
    remedies: Mapping[str, str] | None = None,
) -> Manifest:
    """:func:`~fsarbench.episodes.draw_test_manifest`, read from ``folder`` when it holds this
    manifest (drawn and stored there otherwise; ``folder=None`` always draws)."""
    classes = np.asarray(test_classes)
    args = {"split_variant": split_variant, "way": way, "shot": shot, "queries": queries}
    args |= {"seed": seed, "episodes": episodes}
    path = None if folder is None else Path(folder) / _file_name(classes, args)
    if path is not None and path.exists():
        spec = EpisodeSpec(way, shot, queries, seed, split_variant, "test")
        stored = _read(path, spec, classes)
        if stored is not None:
            return stored
    manifest = draw_test_manifest_fast(classes, class_names=class_names, remedies=remedies, **args)
    if path is not None:
        _write(path, manifest)
    return manifest


def _file_name(classes: np.ndarray, args: dict) -> str:
    """``<variant>-<way>w<shot>s-<key>.npz``; the key hashes the inputs, the sampler's code
    (the scalar one and the vectorised one that must equal it) and numpy's version (its
    generators define the episodes)."""
    key = stable_hash(
        {
            **args,
            "test_classes": stable_hash(classes.tolist()),
            "sampler": source_digest(
                [Path(episodes_module.__file__), Path(streams_module.__file__)]
            ),
            "numpy": np.__version__,
        }
    )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in args["split_variant"])
    return f"{safe}-{args['way']}w{args['shot']}s-{key}.npz"


def _not_the_draw(manifest: Manifest, test_classes: np.ndarray) -> str:
    """Why a stored manifest is not its spec's draw over ``test_classes`` ("" when it is):
    a video under another class than its episode label gives it (every episode, vectorised),
    or the first, middle or last episode differs from a fresh draw. A file rewritten with a
    matching hash (queries moved one label over) printed 8.80 for a 61.60 cell."""
    labels = (manifest.support_labels, manifest.query_labels)
    for videos, label in zip((manifest.support, manifest.query), labels):
        if not np.array_equal(test_classes[videos], np.take_along_axis(manifest.classes, label, 1)):
            return "its episodes put videos under other classes than their own"
    sample = sorted({0, manifest.episodes // 2, manifest.episodes - 1})
    if not manifest.regenerates(test_classes, sample):
        return f"one of its episodes {sample} is not the one its settings draw"
    return ""


def _write(path: Path, manifest: Manifest) -> None:
    """Store the episodes and their manifest hash (atomically; a failure only warns)."""
    buffer = io.BytesIO()
    arrays = {name: getattr(manifest, name) for name in EPISODE_ARRAYS}
    # the header makes the file a manifest of its own ('eval --manifest' reads it)
    header = np.array(manifest.header())
    np.savez_compressed(buffer, **arrays, hash=np.array(manifest.hash), header=header)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as err:  # a read-only --out still runs; it draws again next time
        log.warning("could not keep the test manifest in %s: %s", path, err)


def _read(path: Path, spec: EpisodeSpec, test_classes: np.ndarray) -> Manifest | None:
    """The manifest of ``spec`` stored at ``path``; ``None`` (and a warning) when it cannot be
    read, does not fit ``spec`` and the pool, its episodes do not give the stored hash, or
    they are not the draw of ``spec`` over ``test_classes`` (:func:`_not_the_draw`)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name].astype(np.int64, copy=False) for name in EPISODE_ARRAYS}
            stored_hash = str(data["hash"])
        manifest = Manifest(spec, **arrays, num_videos=len(test_classes), drawn=True).validate()
        if manifest.hash != stored_hash:
            raise ManifestError(f"its episodes give hash {manifest.hash}, not {stored_hash}")
        why = _not_the_draw(manifest, test_classes)
        if why:
            raise ManifestError(why)
        return manifest
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise_if_interrupted()
        log.warning("drawing the test manifest again: %s is unusable (%s)", path, err)
        return None
