"""What the published few-shot split lists are: source, commit, path, md5 and counts.

The facts come from ``SOURCES.md`` of the shared reference data; the lists themselves are
never committed here. A splits directory mirrors the sources as ``<source>/<folder>/<file>``
(e.g. ``trx/kinetics_CMN/testlist03.txt``, ``hyrsm/kinetics100/test_few_shot.txt``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SPLITS", "SplitFile", "SplitSource", "SplitVariant", "REPOS", "VARIANTS"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Repo:
    """A public repository that publishes split lists."""

    key: str
    url: str
    commit: str
    raw_template: str  # format fields: commit, folder, file


REPOS = {
    "trx": Repo(
        "trx",
        "https://github.com/tobyperrett/trx",
        "390c20aa8ed7e309ae4949464fdcf015c4009329",
        "https://raw.githubusercontent.com/tobyperrett/trx/{commit}/splits/{folder}/{file}",
    ),
    "hyrsm": Repo(
        "hyrsm",
        "https://github.com/alibaba-mmai-research/HyRSM",
        "82100b62b34f9efa440b27f2591e10e2d370d8aa",
        "https://raw.githubusercontent.com/alibaba-mmai-research/HyRSM/{commit}"
        "/configs/projects/hyrsm/{folder}/{file}",
    ),
}

_PATH_IN_REPO = {"trx": "splits/{folder}", "hyrsm": "configs/projects/hyrsm/{folder}"}


@dataclass(frozen=True)
class SplitFile:
    """One published list file and what it must contain.

    ``videos`` is the line count; ``classes`` and the per-class range are as published.
    """

    split: str
    name: str
    md5: str
    videos: int
    classes: int
    min_per_class: int
    max_per_class: int


@dataclass(frozen=True)
class SplitSource:
    """The three files (train/val/test) of one variant as one repository publishes them."""

    repo: str  # key into REPOS, also the top folder in a splits directory
    folder: str
    format: str  # "trx" or "hyrsm" (see fsarbench_splits.parsers)
    files: tuple[SplitFile, SplitFile, SplitFile]

    @property
    def commit(self) -> str:
        return REPOS[self.repo].commit

    @property
    def repo_url(self) -> str:
        return REPOS[self.repo].url

    @property
    def path(self) -> str:
        """Folder of the lists inside the source repository."""
        return _PATH_IN_REPO[self.repo].format(folder=self.folder)

    @property
    def local_dir(self) -> str:
        """Folder of the lists inside a splits directory."""
        return f"{self.repo}/{self.folder}"

    def file(self, split: str) -> SplitFile:
        for f in self.files:
            if f.split == split:
                return f
        raise KeyError(f"no {split!r} split; splits are {', '.join(SPLITS)}")

    def rel_path(self, split: str) -> str:
        return f"{self.local_dir}/{self.file(split).name}"

    def url(self, split: str) -> str:
        repo = REPOS[self.repo]
        name = self.file(split).name
        return repo.raw_template.format(commit=repo.commit, folder=self.folder, file=name)


@dataclass(frozen=True)
class SplitVariant:
    """A dataset's few-shot split protocol; ``sources[0]`` is the default copy.

    Further sources publish the same videos and classes (possibly other bytes/format).
    """

    name: str
    dataset: str
    protocol: str
    sources: tuple[SplitSource, ...]

    @property
    def source(self) -> SplitSource:
        return self.sources[0]

    @property
    def format(self) -> str:
        return self.source.format

    @property
    def files(self) -> dict[str, str]:
        """split -> path of the default list inside a splits directory."""
        return {s: self.source.rel_path(s) for s in SPLITS}

    @property
    def md5(self) -> dict[str, str]:
        return {f.split: f.md5 for f in self.source.files}

    @property
    def counts(self) -> dict[str, tuple[int, int]]:
        """split -> (videos, classes)."""
        return {f.split: (f.videos, f.classes) for f in self.source.files}


def _src(repo: str, folder: str, names: tuple[str, str, str], rows) -> SplitSource:
    fmt = repo
    files = tuple(SplitFile(s, n, *r) for s, n, r in zip(SPLITS, names, rows))
    return SplitSource(repo, folder, fmt, files)


_TRX03 = ("trainlist03.txt", "vallist03.txt", "testlist03.txt")
_TRX07 = ("trainlist07.txt", "vallist07.txt", "testlist07.txt")
_HY = ("train_few_shot.txt", "val_few_shot.txt", "test_few_shot.txt")

# rows: (md5, videos, classes, min per class, max per class) for train, val, test
_K100_TRX = (
    ("96cc2043637980ceae4966ad30716451", 6400, 64, 100, 100),
    ("bf4bc6627bd4d3211ac253e64a7ff713", 1200, 12, 100, 100),
    ("98c8ed5ef1a3a5bf932f78cf35929f97", 2400, 24, 100, 100),
)
_K100_HY = (
    ("db50b3e4cbb37c2f43fdb7a526898149", 6400, 64, 100, 100),
    ("18282ab2a9a1190c6bcff60c92f957ac", 1200, 12, 100, 100),
    ("5c76156ac155d99a8cc4c19844f20b65", 2400, 24, 100, 100),
)
_UCF_TRX = (
    ("e74a539253f5adb5b77707d499f80b63", 9154, 70, 100, 164),
    ("d607d77ff4517fa5252f4bb7c1e7313d", 1421, 10, 114, 167),
    ("0d4fe05e9f41d02fb250fbe414e8b7be", 2745, 21, 109, 166),
)
_UCF_HY = (
    ("a17564b7bf6d4cb059b9bc5fbba35c28", 9154, 70, 100, 164),
    ("d0ff4f3a61376dcf512d29b27543daf6", 1421, 10, 114, 167),
    ("c8647458f4ad022252129e292d63b17a", 2745, 21, 109, 166),
)
_HMDB_TRX = (
    ("1e52ef93c09381bb8d8dd8dcd64a7e21", 4280, 31, 102, 548),
    ("96c1b6a72c255a709803c3151dd1654f", 1194, 10, 102, 143),
    ("07759a51f1526a077bcb61e03bf76934", 1292, 10, 103, 232),
)
_HMDB_HY = (
    ("63b99acb242f8bbec4b58bd152825302", 4280, 31, 102, 548),
    ("c2b91bf4be7ce372bb422010b5e6245c", 1194, 10, 102, 143),
    ("4c4cee1be29ac0c186838d2d186d5d69", 1292, 10, 103, 232),
)
_SSV2_FULL = (  # byte-identical in both sources
    ("bab33dd7a351740305a76527b99df726", 67013, 64, 156, 3170),
    ("488fcb18fcb73caf28be598237828fc0", 1926, 12, 56, 360),
    ("5a8e014f4126728d453f9936f1cf2763", 2857, 24, 17, 272),
)
_SSV2_SMALL_TRX = (
    ("f5e8d7692df52f2a1da6fded9e23a38f", 6400, 64, 100, 100),
    ("8dc8f5f3af0bcb91f050d9a25e53804b", 1200, 12, 100, 100),
    ("0bdd4c08ba6f617fbd6844f857f4e5fe", 2400, 24, 100, 100),
)
_SSV2_SMALL_HY = (
    ("a21904c6853f1dfff554ad06295d6517", 6400, 64, 100, 100),
    ("1489343c7fb0f2fc4bd0d02322348cc7", 1200, 12, 100, 100),
    ("36624da59622c67f10d70afd96fc98b2", 2400, 24, 100, 100),
)

_VARIANT_LIST = (
    SplitVariant(
        "kinetics100",
        "kinetics",
        "CMN (Zhu & Yang, ECCV'18), TRX copy",
        (_src("trx", "kinetics_CMN", _TRX03, _K100_TRX),),
    ),
    SplitVariant(
        "kinetics100-hyrsm",
        "kinetics",
        "CMN classes, HyRSM video list",
        (_src("hyrsm", "kinetics100", _HY, _K100_HY),),
    ),
    SplitVariant(
        "ucf101",
        "ucf101",
        "ARN (Zhang et al., ECCV'20)",
        (_src("trx", "ucf_ARN", _TRX03, _UCF_TRX), _src("hyrsm", "ucf101", _HY, _UCF_HY)),
    ),
    SplitVariant(
        "hmdb51",
        "hmdb51",
        "ARN (Zhang et al., ECCV'20)",
        (_src("trx", "hmdb_ARN", _TRX03, _HMDB_TRX), _src("hyrsm", "hmdb51", _HY, _HMDB_HY)),
    ),
    SplitVariant(
        "ssv2-full",
        "ssv2",
        "OTAM (Cao et al., CVPR'20)",
        (_src("trx", "ssv2_OTAM", _TRX07, _SSV2_FULL), _src("hyrsm", "ssv2_full", _HY, _SSV2_FULL)),
    ),
    SplitVariant(
        "ssv2-small",
        "ssv2",
        "CMN (Zhu & Yang, ECCV'18)",
        (
            _src("trx", "ssv2_CMN", _TRX03, _SSV2_SMALL_TRX),
            _src("hyrsm", "ssv2_small", _HY, _SSV2_SMALL_HY),
        ),
    ),
)

VARIANTS: dict[str, SplitVariant] = {v.name: v for v in _VARIANT_LIST}
