"""Dataset registry: each dataset's split variant, class names and file layout.

``get_dataset(name, root=..., splits_dir=...)`` returns an object with ``name``, ``variant``,
``flip_ok``, ``class_names(split)``, ``videos(split)``, ``split_md5s()`` and ``available()``.
The data root defaults to ``$FSAR_DATA/<dataset folder>`` (``kinetics``, ``ucf101``,
``hmdb51``, ``ssv2``); a ``root`` that holds such a folder is used the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fsarbench.data.layouts import LAYOUTS, detect_layout, resolve, template_layout
from fsarbench_splits.parsers import class_key
from fsarbench_splits.registry import (
    SPLITS,
    LoadedSplit,
    SplitsNotFoundError,
    get_variant,
    load_split,
)

log = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "check_disjoint_splits",
    "listed_apart",
    "Dataset",
    "DatasetFlipError",
    "DatasetSpec",
    "SplitListDataset",
    "SplitListError",
    "VideoRecord",
    "get_dataset",
    "list_datasets",
    "register_dataset",
    "dataset_flip_ok",
    "default_data_root",
    "is_synthetic",
    "settings_dataset",
]


@dataclass(frozen=True)
class VideoRecord:
    """One video of a split: ``class_index`` is local to the split (sorted class names)."""

    video_id: str
    class_name: str
    class_index: int
    path: Path


class Dataset(Protocol):
    name: str
    variant: str
    flip_ok: bool

    def class_names(self, split: str) -> list[str]: ...
    def videos(self, split: str) -> list[VideoRecord]: ...
    def split_md5s(self) -> dict[str, str]: ...
    def available(self) -> bool: ...


@dataclass(frozen=True)
class DatasetSpec:
    """A published dataset: its split variant, data folder and the layouts to try."""

    name: str
    variant: str
    folder: str
    layouts: tuple[str, ...]
    flip_ok: bool = True


def default_data_root(folder: str) -> Path | None:
    env = os.environ.get("FSAR_DATA")
    return Path(env).expanduser() / folder if env else None


def _dataset_root(root: str | Path | None, folder: str) -> Path | None:
    """``root`` itself, or ``root/<folder>`` when ``root`` holds the dataset as that folder
    (so one data root serves every dataset); default ``$FSAR_DATA/<folder>``."""
    if root is None:
        return default_data_root(folder)
    root = Path(root).expanduser()
    return root / folder if (root / folder).is_dir() else root


class SplitListError(ValueError):
    """Split lists that cannot serve few-shot episodes as written: a class or video in two
    splits, a video under two classes, two videos read from one file."""


def _video_id(entry) -> str:
    return entry.video_id


def check_disjoint_splits(
    name: str,
    listed: dict[str, list[Any]],
    *,
    where: str = "its splits",
    fix: str = "Give each split classes and videos of its own (the dataset's factory or lists)",
) -> None:
    """Refuse a dataset whose splits share a class or a video (``listed``: split -> entries
    with ``class_name`` and ``video_id``): test classes seen in training, or checkpoints
    chosen on test classes, give a test number of no few-shot meaning. Classes compare as a
    layout reads their folders ("Fencing" and "fencing" are one class)."""
    for what, key in (("class", lambda e: class_key(e.class_name)), ("video", _video_id)):
        owners: dict[str, list[str]] = {}
        for split, entries in listed.items():
            for item in sorted({key(e) for e in entries}):
                owners.setdefault(item, []).append(split)
        shared = {k: v for k, v in owners.items() if len(v) > 1}
        if shared:
            first = next(iter(shared))
            raise SplitListError(
                f"{name}: {where} put {len(shared)} {what} name(s) in more than one split "
                f"(e.g. {first!r} in {' and '.join(shared[first])}): few-shot splits must "
                f"hold disjoint classes and videos. {fix}"
            )


def listed_apart(name: str, dataset: Any) -> dict[str, list[Any]]:
    """Every split's videos of ``dataset`` (registered as ``name``), refused by
    :func:`check_disjoint_splits` when two splits share a class or a video."""
    listed = {split: dataset.videos(split) for split in SPLITS}
    check_disjoint_splits(name, listed)
    check_one_file_per_video(name, listed)
    return listed


def check_one_file_per_video(name: str, listed: dict[str, list[VideoRecord]]) -> None:
    """Refuse two listed videos that are one file on disk (a symlink or hard link, e.g. a
    dead Kinetics link filled with another video of its class): within a split it is support
    and query of one episode, across splits a test video seen in training. Paths as written
    differ, so only the file's identity (device, inode) tells."""
    owner: dict[tuple[int, int], tuple[str, str]] = {}
    for split, records in listed.items():
        for r in records:
            try:
                st = os.stat(r.path)
            except OSError:  # missing or dangling: left out later, named there
                continue
            first = owner.setdefault((st.st_dev, st.st_ino), (split, r.video_id))
            if first != (split, r.video_id):
                raise SplitListError(
                    f"{name}: {first[0]} video {first[1]!r} and {split} video {r.video_id!r} are "
                    f"one file ({os.path.realpath(r.path)}, through a link): one would be support "
                    "and query of an episode, or a test video seen in training. Replace the "
                    "link with the video's own file, or leave it missing"
                )


class SplitListDataset:
    """A dataset whose splits come from a published list (see ``fsarbench_splits``).

    Args:
        layout: a name of ``LAYOUTS``, ``"auto"`` (detected per split from the files present)
            or ``"template"`` with ``template`` given.
        allow_modified: accept lists whose md5 differs from the published one (recorded).
    """

    def __init__(
        self,
        spec: DatasetSpec,
        *,
        root: str | Path | None = None,
        splits_dir: str | Path | None = None,
        layout: str = "auto",
        template: str | None = None,
        allow_modified: bool = False,
    ):
        if layout not in ("auto", "template", *LAYOUTS):
            raise ValueError(
                f"unknown layout {layout!r}; layouts: auto, template, {', '.join(LAYOUTS)}"
            )
        if (layout == "template") != (template is not None):
            raise ValueError("layout='template' and template=... go together")
        if template is not None:
            template_layout(template)  # a bad template is named before any list is read
        self.spec = spec
        self.name, self.variant, self.flip_ok = spec.name, spec.variant, spec.flip_ok
        self.root = _dataset_root(root, spec.folder)
        self.splits_dir = splits_dir
        self.layout, self.template = layout, template
        self.allow_modified = allow_modified
        self._splits: dict[str, LoadedSplit] = {}
        self._detected: dict[str, str] = {}  # split -> the layout "auto" chose

    def split(self, split: str) -> LoadedSplit:
        if split not in self._splits:
            loaded = load_split(
                self.variant, split, self.splits_dir, allow_modified=self.allow_modified
            )
            self._splits[split] = loaded
            if loaded.modified:
                self._check_disjoint()
        return self._splits[split]

    def _check_disjoint(self) -> None:
        """A modified list (``allow_modified``) must keep the splits apart: a class or a
        video in two splits is test data seen in training. The published lists are checked
        by ``splits verify``; a modified one was accepted with no look at the others."""
        check_disjoint_splits(
            self.name,
            {s: self.split(s).entries for s in SPLITS},
            where="the modified split lists",
            fix="Fix the lists (python -m fsarbench splits verify names them all)",
        )

    def class_names(self, split: str) -> list[str]:
        return sorted({e.class_name for e in self.split(split).entries})

    def _layout_fn(self, split: str):
        if self.template is not None:
            return template_layout(self.template)
        if self.layout != "auto":
            return LAYOUTS[self.layout]
        entries = self.split(split).entries
        if split not in self._detected:
            names = [n for n in self.spec.layouts if n != "listed" or entries[0].rel_path]
            self._detected[split] = detect_layout(self._need_root(), entries, names)
        return LAYOUTS[self._detected[split]]

    def _need_root(self) -> Path:
        if self.root is None:
            raise FileNotFoundError(f"no data root for {self.name}: pass --root or set FSAR_DATA")
        return self.root

    def videos(self, split: str) -> list[VideoRecord]:
        """Every listed video with its resolved path (missing files keep their expected path).

        A video listed twice (possible only in a modified list) is kept once, with a
        warning: twice, it could be support and query of one episode. Listed under two
        classes, it is an error.
        """
        names = self.class_names(split)
        index = {c: i for i, c in enumerate(names)}
        layout, root = self._layout_fn(split), self._need_root()
        seen: dict[str, str] = {}
        owner: dict[Path, str] = {}  # path -> the video id it was resolved for
        records = []
        for e in self.split(split).entries:
            if e.video_id in seen:
                if seen[e.video_id] != e.class_name:
                    raise SplitListError(
                        f"{self.name} {split} list names video {e.video_id!r} under two classes "
                        f"({seen[e.video_id]!r} and {e.class_name!r}); fix the list"
                    )
                continue
            seen[e.video_id] = e.class_name
            path = resolve(root, e, layout)[0]
            if owner.setdefault(path, e.video_id) != e.video_id:
                raise SplitListError(self._one_path_error(split, owner[path], e.video_id, path))
            records.append(VideoRecord(e.video_id, e.class_name, index[e.class_name], path))
        repeats = len(self.split(split).entries) - len(records)
        if repeats:
            log.warning(
                "%s %s list repeats %d video line(s); each video is used once",
                self.name,
                split,
                repeats,
            )
        return records

    def _one_path_error(self, split: str, first: str, second: str, path: Path) -> str:
        """Two listed videos resolved to one file: one would be support and query of its
        episodes (accuracy near 100%), and every count of usable videos is wrong."""
        how = f"the template {self.template!r}" if self.template else f"layout {self.layout!r}"
        return (
            f"{self.name} {split}: videos {first!r} and {second!r} both resolve to {path} "
            f"under {how}: each listed video needs a file of its own. A template must name "
            "{video_id} (or {rel_path} for lists that give paths); check the layout with "
            f"'python -m fsarbench data check {self.name} --root DIR'"
        )

    def split_md5s(self) -> dict[str, str]:
        return {s: self.split(s).md5 for s in ("train", "val", "test")}

    def provenance(self) -> dict[str, Any]:
        """What to record with a result: variant, list files, md5s, modified flags, layout
        (with ``"auto"``, the layout detected per split read so far)."""
        return {
            "dataset": self.name,
            "variant": self.variant,
            "layout": self.layout,
            **({"detected_layouts": dict(self._detected)} if self._detected else {}),
            "splits": {s: ls.provenance() for s, ls in self._splits.items()},
        }

    def available(self) -> bool:
        """Data root present, test list found, and at least one test video under the root."""
        if self.root is None or not self.root.is_dir():
            return False
        try:
            return any(r.path.exists() for r in self.videos("test"))
        except SplitsNotFoundError:
            return False


DatasetFactory = Callable[..., Any]
DATASETS: dict[str, DatasetFactory] = {}
#: dataset -> the dataset whose per-dataset settings (feature preset, protocol entries,
#: training recipes) it takes; absent = its own.
SETTINGS_OF: dict[str, str] = {}
#: Generated datasets: never real data, labelled as synthetic in every result.
SYNTHETIC: set[str] = set()
#: Datasets whose labels do not survive a horizontal flip (left/right in the classes).
NO_FLIP: set[str] = set()


class DatasetFlipError(ValueError):
    """A dataset object's ``flip_ok`` contradicts how its name was registered."""


def register_dataset(
    name: str,
    factory: DatasetFactory,
    *,
    settings_of: str | None = None,
    synthetic: bool = False,
    flip_ok: bool = True,
) -> None:
    """Register ``factory(**kwargs) -> dataset`` as ``name``. ``settings_of`` names a dataset
    whose per-dataset settings ``name`` shares (a variant of it); ``synthetic`` marks
    generated data; ``flip_ok=False`` says its labels change under a horizontal flip, so no
    protocol flips its training clips unless the protocol names the dataset and says so."""
    DATASETS[name] = factory
    SETTINGS_OF.pop(name, None)
    SYNTHETIC.discard(name)
    NO_FLIP.discard(name)
    if settings_of is not None:
        SETTINGS_OF[name] = settings_of
    if synthetic:
        SYNTHETIC.add(name)
    if not flip_ok:
        NO_FLIP.add(name)


def dataset_flip_ok(name: str) -> bool:
    """Whether training clips of ``name`` may be flipped: False when it, or the dataset whose
    settings it shares, was registered with ``flip_ok=False``."""
    return name not in NO_FLIP and settings_dataset(name) not in NO_FLIP


def settings_dataset(name: str) -> str:
    """The dataset whose entries in presets, protocols and recipes apply to ``name``."""
    return SETTINGS_OF.get(name, name)


def is_synthetic(name: str) -> bool:
    return name in SYNTHETIC


def _published(spec: DatasetSpec) -> DatasetFactory:
    def factory(**kwargs: Any) -> SplitListDataset:
        return SplitListDataset(spec, **kwargs)

    return factory


_KINETICS = ("listed", "kinetics-train256", "class-folders", "jpeg")
_SPECS = (
    DatasetSpec("kinetics100", "kinetics100", "kinetics", _KINETICS),
    DatasetSpec("kinetics100-hyrsm", "kinetics100-hyrsm", "kinetics", _KINETICS),
    DatasetSpec("ucf101", "ucf101", "ucf101", ("ucf101", "class-folders", "jpeg", "listed")),
    DatasetSpec("hmdb51", "hmdb51", "hmdb51", ("hmdb51", "class-folders", "jpeg", "listed")),
    DatasetSpec("ssv2-full", "ssv2-full", "ssv2", ("ssv2", "jpeg"), flip_ok=False),
    DatasetSpec("ssv2-small", "ssv2-small", "ssv2", ("ssv2", "jpeg"), flip_ok=False),
)
for _spec in _SPECS:
    get_variant(_spec.variant)  # a typo in the table fails at import
    register_dataset(_spec.name, _published(_spec), flip_ok=_spec.flip_ok)


def _synth(kind: str) -> DatasetFactory:
    def factory(**kwargs: Any) -> Any:
        from fsarbench.data.synth import SynthDataset

        return SynthDataset(kind=kind, **kwargs)

    return factory


register_dataset("synth", _synth("standard"), synthetic=True, flip_ok=False)
register_dataset("synth-planted", _synth("planted"), settings_of="synth", synthetic=True)


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def get_dataset(name: str, **kwargs: Any) -> Dataset:
    """Dataset ``name``; keyword arguments: ``root``, ``splits_dir``, ``layout``, ``template``,
    ``allow_modified`` (published datasets) or ``root``, ``seed``, ``config`` (``synth``)."""
    try:
        factory = DATASETS[name]
    except KeyError:
        raise KeyError(
            f"unknown dataset {name!r}; datasets: {', '.join(list_datasets())}"
        ) from None
    dataset = factory(**kwargs)
    _check_flip(name, dataset)
    return dataset


def _check_flip(name: str, dataset: Dataset) -> None:
    """A dataset object saying ``flip_ok=False`` under a name registered as flippable would
    have its training clips flipped by every protocol: refuse it, saying how to register."""
    if not isinstance(getattr(dataset, "flip_ok", None), bool):
        raise DatasetFlipError(
            f"dataset {name!r}: its objects need a bool attribute flip_ok (False when a "
            "horizontal flip changes a video's class, e.g. 'move left' vs 'move right')"
        )
    if dataset.flip_ok != dataset_flip_ok(name):
        raise DatasetFlipError(
            f"dataset {name!r} says flip_ok={dataset.flip_ok} but was registered with "
            f"flip_ok={dataset_flip_ok(name)}: the protocols decide flipping from the "
            f"registration, so call register_dataset({name!r}, ..., "
            f"flip_ok={dataset.flip_ok})"
        )
