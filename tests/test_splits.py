"""Split registry: the 30 published lists parse with the registry's md5 and counts; faults
(leakage, duplicates, modified bytes, wrong format) are caught."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
from data_fixtures import require_shared_splits

from fsarbench.io import md5_file
from fsarbench_splits.registry import (
    VARIANTS,
    SplitFormatError,
    SplitModifiedError,
    SplitsNotFoundError,
    load_split,
    parse_split_file,
    verify_splits,
)

ALL_FILES = [
    (v.name, s, split)
    for v in VARIANTS.values()
    for s in v.sources
    for split in ("train", "val", "test")
]


def test_registry_covers_thirty_files_and_six_variants():
    assert set(VARIANTS) == {
        "kinetics100",
        "kinetics100-hyrsm",
        "ucf101",
        "hmdb51",
        "ssv2-full",
        "ssv2-small",
    }
    assert len({s.rel_path(sp) for _, s, sp in ALL_FILES}) == 30
    k = VARIANTS["kinetics100"]
    assert k.source.commit == "390c20aa8ed7e309ae4949464fdcf015c4009329"
    assert k.source.url("test").endswith("/splits/kinetics_CMN/testlist03.txt")
    assert VARIANTS["kinetics100-hyrsm"].source.path == "configs/projects/hyrsm/kinetics100"


@pytest.mark.parametrize(
    ("variant", "source", "split"), ALL_FILES, ids=[f"{s.rel_path(sp)}" for _, s, sp in ALL_FILES]
)
def test_published_file_parses_with_registry_counts(variant, source, split):
    root = require_shared_splits()
    spec = source.file(split)
    path = root / source.rel_path(split)
    assert md5_file(path) == spec.md5
    entries = parse_split_file(path, source.format)
    per_class = Counter(e.class_name for e in entries)
    assert len(entries) == spec.videos
    assert len(per_class) == spec.classes
    assert (min(per_class.values()), max(per_class.values())) == (
        spec.min_per_class,
        spec.max_per_class,
    )
    assert len({e.video_id for e in entries}) == len(entries)


def test_sources_agree_on_videos_and_classes():
    """SOURCES.md: UCF/HMDB/SSv2-Small list the same videos in both sources; K100 differs."""
    root = require_shared_splits()
    for name in ("ucf101", "hmdb51", "ssv2-small", "ssv2-full"):
        trx, hy = VARIANTS[name].sources
        for split in ("train", "val", "test"):
            a = {e.video_id for e in parse_split_file(root / trx.rel_path(split), "trx")}
            b = {e.video_id for e in parse_split_file(root / hy.rel_path(split), "hyrsm")}
            assert a == b, (name, split)
    trx = VARIANTS["kinetics100"].source
    hy = VARIANTS["kinetics100-hyrsm"].source
    for split, differ in (("train", 179), ("val", 41), ("test", 57)):
        # val_256 files are named by YouTube id only: compare the 11-character ids
        a = {e.video_id[:11] for e in parse_split_file(root / trx.rel_path(split), "trx")}
        b = {e.video_id[:11] for e in parse_split_file(root / hy.rel_path(split), "hyrsm")}
        assert len(a - b) == differ, split


def test_hyrsm_line_forms(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text(
        "test0//train_256/blasting_sand/-kYzxMKp514_000086_000096.mp4\n"
        "val0//val_256/baking_cookies/-514AQUrSow.mkv\ntest18/195025\n"
    )
    a, b, c = parse_split_file(f, "hyrsm")
    assert (a.video_id, a.class_name, a.rel_path) == (
        "-kYzxMKp514_000086_000096",
        "blasting_sand",
        "train_256/blasting_sand/-kYzxMKp514_000086_000096.mp4",
    )
    assert (b.video_id, b.rel_path) == ("-514AQUrSow", "val_256/baking_cookies/-514AQUrSow.mkv")
    assert (c.video_id, c.class_name, c.rel_path) == ("195025", "test18", None)


def test_wrong_format_names_file_and_line(tmp_path):
    root = require_shared_splits()
    with pytest.raises(SplitFormatError, match=r"test_few_shot.txt:1: .* not a 'trx' split line"):
        parse_split_file(root / "hyrsm/kinetics100/test_few_shot.txt", "trx")
    with pytest.raises(SplitFormatError, match=r"testlist03.txt:1: 'blasting sand/"):
        parse_split_file(root / "trx/kinetics_CMN/testlist03.txt", "hyrsm")
    bad = tmp_path / "bad.txt"
    bad.write_text("a/b\nno-slash-here\n")
    with pytest.raises(SplitFormatError, match=r"bad.txt:2: 'no-slash-here'"):
        parse_split_file(bad, "trx")
    with pytest.raises(ValueError, match="unknown split format 'csv'"):
        parse_split_file(bad, "csv")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfea/b\n")  # e.g. a UTF-16 export: the error named no file
    with pytest.raises(SplitFormatError, match=r"binary.txt: not a UTF-8 text split list"):
        parse_split_file(binary, "trx")


def _copy_variant(root: Path, dest: Path, variant: str) -> None:
    src = VARIANTS[variant].source
    for split in ("train", "val", "test"):
        (dest / src.rel_path(split)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / src.rel_path(split), dest / src.rel_path(split))


def test_verify_clean_copy_is_ok(tmp_path):
    root = require_shared_splits()
    _copy_variant(root, tmp_path, "hmdb51")
    report = verify_splits(tmp_path)
    assert [s.variant for s in report.sources] == ["hmdb51"]
    assert report.ok and report.errors() == []
    assert len(report.rows()) == 3


def test_verify_catches_injected_leakage_and_duplicates(tmp_path):
    root = require_shared_splits()
    _copy_variant(root, tmp_path, "hmdb51")
    src = VARIANTS["hmdb51"].source
    train, test = tmp_path / src.rel_path("train"), tmp_path / src.rel_path("test")
    first_test = test.read_text().splitlines()[0]  # a test video, its class is test-only
    train.write_text(train.read_text() + first_test + "\n")
    lines = test.read_text().splitlines()
    test.write_text("\n".join(lines + [lines[5]]) + "\n")  # duplicate inside test
    report = verify_splits(tmp_path, allow_modified=True)
    s = report.sources[0]
    cls, vid = first_test.split("/")
    assert s.leaked_classes == {cls: ["train", "test"]}
    assert s.cross_split_videos == {vid: ["train", "test"]}
    assert report.files[2].duplicates == [lines[5].split("/")[1]]
    text = "\n".join(report.errors())
    assert f"class {cls!r} appears in ['train', 'test']" in text
    assert "duplicate videos" in text
    assert set(report.modified) == {src.rel_path("train"), src.rel_path("test")}
    # per list: what it shares with another split (the total was repeated on every row)
    leakage = {r["file"]: r["leakage"] for r in report.rows()}
    assert leakage == {src.rel_path("train"): 2, src.rel_path("val"): 0, src.rel_path("test"): 2}


def test_verify_catches_a_test_class_spelled_apart_in_train(tmp_path):
    """'kick ball' in train beside the test class 'kick_ball' passed: names were compared
    as written, and a layout reads both from one folder."""
    root = require_shared_splits()
    _copy_variant(root, tmp_path, "hmdb51")
    src = VARIANTS["hmdb51"].source
    train, test = tmp_path / src.rel_path("train"), tmp_path / src.rel_path("test")
    cls = test.read_text().splitlines()[0].split("/")[0]
    spelled = cls.replace("_", " ").upper()
    train.write_text(train.read_text() + f"{spelled}/extra_video\n")
    s = verify_splits(tmp_path, allow_modified=True).sources[0]
    assert s.leaked_classes == {f"{spelled} / {cls}": ["train", "test"]}


def test_modified_list_error_names_file_and_both_hashes(tmp_path):
    root = require_shared_splits()
    _copy_variant(root, tmp_path, "ucf101")
    path = tmp_path / VARIANTS["ucf101"].source.rel_path("val")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    new_md5, old_md5 = md5_file(path), "d607d77ff4517fa5252f4bb7c1e7313d"
    with pytest.raises(SplitModifiedError) as err:
        load_split("ucf101", "val", tmp_path)
    assert str(path) in str(err.value) and new_md5 in str(err.value) and old_md5 in str(err.value)
    loaded = load_split("ucf101", "val", tmp_path, allow_modified=True)
    assert loaded.modified and loaded.provenance()["md5"] == new_md5
    assert len(loaded.entries) == 1420
    errors = verify_splits(tmp_path).errors()
    assert any(new_md5 in e and old_md5 in e for e in errors)
    assert any("counts 1420 videos" in e for e in errors)


def test_missing_lists_say_how_to_get_them(tmp_path):
    with pytest.raises(SplitsNotFoundError, match="splits fetch"):
        load_split("ssv2-full", "test", tmp_path)
    assert verify_splits(tmp_path).sources == []


def test_falls_back_to_second_source(tmp_path):
    root = require_shared_splits()
    hy = VARIANTS["ucf101"].sources[1]
    dest = tmp_path / hy.rel_path("test")
    dest.parent.mkdir(parents=True)
    shutil.copyfile(root / hy.rel_path("test"), dest)
    loaded = load_split("ucf101", "test", tmp_path)
    assert loaded.path == dest and len(loaded.entries) == 2745


def test_lists_are_never_mixed_across_copies(tmp_path):
    """A TRX copy missing its test list fell back to HyRSM's test list beside TRX's train and
    val lists: another class order, so other episodes under the same variant name."""
    root = require_shared_splits()
    trx, hy = VARIANTS["ssv2-small"].sources
    for source, splits in ((trx, ("train", "val")), (hy, ("train", "val", "test"))):
        for split in splits:
            dest = tmp_path / source.rel_path(split)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / source.rel_path(split), dest)
    assert load_split("ssv2-small", "train", tmp_path).path == tmp_path / trx.rel_path("train")
    with pytest.raises(SplitsNotFoundError) as err:
        load_split("ssv2-small", "test", tmp_path)
    message = str(err.value)
    assert str(tmp_path / trx.rel_path("test")) in message
    assert "trx's copy holds train/val" in message and "hyrsm's copy has it" in message
    assert "never mixed" in message and "splits import" in message
    (tmp_path / hy.rel_path("test")).unlink()  # a later copy without it is not named as having it
    with pytest.raises(SplitsNotFoundError) as err:
        load_split("ssv2-small", "test", tmp_path)
    assert "has it" not in str(err.value) and "trx's copy holds train/val" in str(err.value)


def test_cli_import_verify_modified_and_offline_fetch(tmp_path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    from fsarbench.cli.main import main

    root = require_shared_splits()
    dest = tmp_path / "splits"
    assert main(["splits", "--splits-dir", str(dest), "import", str(root)]) == 0
    assert "30 list(s) copied" in capsys.readouterr().out
    args = ["splits", "--splits-dir", str(dest), "verify", "--variant", "hmdb51"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trx/hmdb_ARN/testlist03.txt" in out and "6 files checked" in out
    path = dest / "trx/hmdb_ARN/testlist03.txt"
    path.write_text("\n".join(reversed(path.read_text().splitlines())) + "\n")  # same videos
    new = md5_file(path)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert str(path) in err and new in err and "07759a51f1526a077bcb61e03bf76934" in err
    assert main([*args, "--allow-modified"]) == 0
    out = capsys.readouterr().out
    assert f"MODIFIED {new}" in out and f"modified: trx/hmdb_ARN/testlist03.txt md5 {new}" in out
    path.write_text(path.read_text().replace("fencing/", "fencing_/", 1))
    assert main([*args, "--allow-modified"]) == 1  # counts differ: still an error
    assert "counts 1292 videos / 11 classes" in capsys.readouterr().err

    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert main(["splits", "--splits-dir", str(tmp_path / "x"), "fetch"]) == 1
    err = capsys.readouterr().err
    assert "cannot download https://raw.githubusercontent.com/tobyperrett/trx/" in err
    assert "splits import DIR" in err


def test_a_list_saved_with_bom_and_crlf_reads_as_published_and_names_the_cause(tmp_path):
    """A BOM made the first class '\\ufefffencing' and the error said 'counts differ'."""
    root = require_shared_splits()
    _copy_variant(root, tmp_path, "hmdb51")
    path = tmp_path / VARIANTS["hmdb51"].source.rel_path("test")
    published = parse_split_file(path, "trx")
    published_bytes = path.read_bytes()
    path.write_bytes(b"\xef\xbb\xbf" + published_bytes.replace(b"\n", b"\r\n"))
    assert parse_split_file(path, "trx") == published
    errors = verify_splits(tmp_path).errors()
    assert not any("counts" in e for e in errors)
    (modified,) = errors
    assert "only its bytes differ: a UTF-8 byte-order mark (BOM), Windows (CRLF)" in modified
    with pytest.raises(SplitModifiedError, match=r"only its bytes differ: a UTF-8 byte-order"):
        load_split("hmdb51", "test", tmp_path)
    loaded = load_split("hmdb51", "test", tmp_path, allow_modified=True)
    assert loaded.entries == published and loaded.modified
    assert verify_splits(tmp_path, allow_modified=True).ok
    path.write_bytes(published_bytes.replace(b"\n", b"\r"))  # classic Mac line ends
    (modified,) = verify_splits(tmp_path).errors()
    assert "only its bytes differ: classic Mac (CR) line ends." in modified


def test_a_modified_list_error_names_other_changes_and_no_run_flag(tmp_path):
    root = require_shared_splits()
    _copy_variant(root, tmp_path, "hmdb51")
    path = tmp_path / VARIANTS["hmdb51"].source.rel_path("test")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(lines[:-1]))
    with pytest.raises(SplitModifiedError) as err:
        load_split("hmdb51", "test", tmp_path)
    text = str(err.value)
    assert "It has a UTF-8 byte-order mark (BOM) (the published list has none of these)" in text
    assert "lines differ too" in text and "splits import DIR" in text
    # run has no --allow-modified: the message must not send a run user to it
    assert "Pass --allow-modified" not in text and "run, extract, train and eval read only" in text
    path.write_bytes(b"".join(lines[:-1]))  # no artefacts: no cause sentence
    with pytest.raises(SplitModifiedError) as err:
        load_split("hmdb51", "test", tmp_path)
    assert "bytes differ" not in str(err.value) and "lines differ" not in str(err.value)


@pytest.mark.parametrize(
    ("fmt", "line"),
    [
        ("trx", "fencing/vid_0 "),  # kept inside the video id: never found on disk
        ("trx", " fencing/vid_0"),
        ("trx", "fencing /vid_0"),
        ("trx", "fencing/\tvid_0"),
        ("hyrsm", "test18/195025 "),
        ("hyrsm", "test0//train_256/blasting_sand/a b .mp4"),
    ],
)
def test_blanks_around_a_name_are_refused_naming_the_line(tmp_path, fmt, line):
    good = "fencing/vid_1" if fmt == "trx" else "test18/195026"
    path = tmp_path / "list.txt"
    path.write_text(f"{good}\n{line}\n")
    with pytest.raises(
        SplitFormatError, match=r"list.txt:2: .* has blanks at the start or end of a name"
    ):
        parse_split_file(path, fmt)


def test_a_trailing_space_in_a_list_is_named_by_verify_and_load(tmp_path):
    root = require_shared_splits()
    _copy_variant(root, tmp_path, "hmdb51")
    path = tmp_path / VARIANTS["hmdb51"].source.rel_path("test")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:3], lines[3] + " ", *lines[4:]]) + "\n")
    with pytest.raises(SplitModifiedError, match="only its bytes differ: spaces or tabs at line"):
        load_split("hmdb51", "test", tmp_path)
    with pytest.raises(SplitFormatError, match=r"testlist03.txt:4: .* has blanks"):
        load_split("hmdb51", "test", tmp_path, allow_modified=True)
    errors = verify_splits(tmp_path, allow_modified=True).errors()
    assert any("testlist03.txt:4:" in e and "sed -i" in e for e in errors)
