"""Dataset registry and layouts over fake data roots built from the published lists; the
``data check`` health report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from data_fixtures import require_shared_splits, write_test_video

from fsarbench.cli.main import main
from fsarbench.data.datasets import VideoRecord, get_dataset, list_datasets
from fsarbench.data.health import check_split, protocol_problems
from fsarbench_splits.registry import VARIANTS, load_split


def _touch(path: Path, folder: bool = False) -> None:
    if folder:
        path.mkdir(parents=True, exist_ok=True)
        (path / "img_00001.jpg").write_bytes(b"x")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def _build(root: Path, variant: str, rel, folder: bool = False, skip: int = 0) -> list:
    entries = load_split(variant, "test", require_shared_splits()).entries
    for e in entries[skip:]:
        _touch(root / rel(e), folder)
    return entries


def test_registry_lists_datasets_and_flip_policy():
    assert set(list_datasets()) == {
        "kinetics100",
        "kinetics100-hyrsm",
        "ucf101",
        "hmdb51",
        "ssv2-full",
        "ssv2-small",
        "synth",
        "synth-planted",
    }
    assert not get_dataset("ssv2-small").flip_ok and not get_dataset("ssv2-full").flip_ok
    assert get_dataset("ucf101").flip_ok and not get_dataset("synth").flip_ok
    with pytest.raises(KeyError, match="unknown dataset 'k400'"):
        get_dataset("k400")


@pytest.mark.parametrize(
    ("dataset", "rel", "folder"),
    [
        (
            "kinetics100",
            lambda e: f"train_256/{e.class_name.replace(' ', '_')}/{e.video_id}.mp4",
            False,
        ),
        ("kinetics100", lambda e: f"{e.class_name}/{e.video_id}.mp4", False),
        ("kinetics100", lambda e: f"{e.class_name}/{e.video_id}", True),
        ("kinetics100-hyrsm", lambda e: e.rel_path, False),
        ("ucf101", lambda e: f"UCF-101/{e.class_name}/{e.video_id}.avi", False),
        ("hmdb51", lambda e: f"{e.class_name}/{e.video_id}.avi", False),
        ("ssv2-small", lambda e: f"{e.video_id}.webm", False),
        ("ssv2-small", lambda e: f"{e.class_name}/{e.video_id}", True),
    ],
    ids=[
        "k400-train256",
        "k-class-folders",
        "k-jpeg",
        "k-hyrsm-listed",
        "ucf",
        "hmdb",
        "ssv2-webm",
        "ssv2-jpeg",
    ],
)
def test_layouts_resolve_every_video(tmp_path, dataset, rel, folder, request):
    splits = require_shared_splits()
    entries = _build(tmp_path, get_dataset(dataset).variant, rel, folder)
    ds = get_dataset(dataset, root=tmp_path, splits_dir=splits)
    videos = ds.videos("test")
    assert [v.video_id for v in videos] == [e.video_id for e in entries]
    assert all(v.path == tmp_path / rel(e) for v, e in zip(videos, entries))
    names = ds.class_names("test")
    assert names == sorted(names) and len(names) == VARIANTS[ds.variant].source.file("test").classes
    assert all(names[v.class_index] == v.class_name for v in videos)
    assert ds.available()
    expected = {
        "k400-train256": "kinetics-train256",
        "k-class-folders": "class-folders",
        "k-jpeg": "jpeg",
        "k-hyrsm-listed": "listed",
        "ucf": "ucf101",
        "hmdb": "hmdb51",
        "ssv2-webm": "ssv2",
        "ssv2-jpeg": "jpeg",
    }[request.node.callspec.id]
    assert ds.provenance()["detected_layouts"] == {"test": expected}  # records said "auto"


def test_template_layout_and_missing_videos_keep_expected_path(tmp_path):
    splits = require_shared_splits()
    rel = lambda e: f"vids/{e.class_name.replace(' ', '_')}/{e.video_id}.mp4"  # noqa: E731
    entries = _build(tmp_path, "kinetics100", rel, skip=2)
    ds = get_dataset(
        "kinetics100",
        root=tmp_path,
        splits_dir=splits,
        layout="template",
        template="vids/{class_dir}/{video_id}.mp4",
    )
    videos = ds.videos("test")
    assert [v.path.exists() for v in videos[:3]] == [False, False, True]
    assert videos[0].path == tmp_path / rel(entries[0])
    for bad, says in (
        ("vids/{class_dir}/clip.mp4", "names neither {video_id} nor {rel_path}"),
        ("vids/{class_dir}/{video_id.x}.mp4", "write plain fields"),
        ("vids/{class_dir}/{video_id:d}.mp4", "write plain fields"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            get_dataset(
                "kinetics100", root=tmp_path, splits_dir=splits, layout="template", template=bad
            )
    # a template naming the path a list gives, for a list that gives none: one file for all
    shared = get_dataset(
        "kinetics100", root=tmp_path, splits_dir=splits, layout="template", template="{rel_path}"
    )
    with pytest.raises(ValueError, match="both resolve to .* each listed video needs a file"):
        shared.videos("test")
    with pytest.raises(ValueError, match="unknown field 'klass'"):
        get_dataset(
            "kinetics100",
            root=tmp_path,
            splits_dir=splits,
            layout="template",
            template="{klass}/{video_id}.mp4",
        ).videos("test")
    assert ds.split_md5s()["test"] == "98c8ed5ef1a3a5bf932f78cf35929f97"


def test_no_root_and_empty_root(tmp_path, monkeypatch):
    monkeypatch.delenv("FSAR_DATA", raising=False)
    ds = get_dataset("hmdb51", splits_dir=require_shared_splits())
    assert not ds.available()
    with pytest.raises(FileNotFoundError, match="pass --root or set FSAR_DATA"):
        ds.videos("test")
    monkeypatch.setenv("FSAR_DATA", str(tmp_path))
    ds = get_dataset("hmdb51", splits_dir=require_shared_splits())
    assert ds.root == tmp_path / "hmdb51" and not ds.available()


def test_check_split_counts_missing_unreadable_short(tmp_path):
    good, short, broken = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"
    write_test_video(good, frames=10)
    write_test_video(short, frames=4)
    broken.write_text("not a video")
    recs = [
        VideoRecord("a", "x", 0, good),
        VideoRecord("b", "x", 0, short),
        VideoRecord("c", "y", 1, broken),
        VideoRecord("d", "y", 1, tmp_path / "d.mp4"),
    ]
    x, y = check_split(recs, "test", frames=8)
    assert (x.listed, x.found, x.usable, x.too_short) == (2, 2, 1, {"b": 4})
    assert (y.listed, y.found, y.usable, y.missing) == (2, 1, 0, ["d"])
    assert (
        "not a readable video container" in y.unreadable["c"]
        or "cannot open" in (y.unreadable["c"])
    )
    assert protocol_problems([x, y], way=1, shot=1, queries=0) == [
        "test/y: 0 usable videos, 1-shot with 0 queries needs 1"
    ]
    assert protocol_problems([x, y], way=1, shot=1, queries=0, policy="drop") == []
    assert protocol_problems([x, y], way=2, shot=1, queries=0, policy="drop") == [
        "test: only 1 classes have 1 usable videos; 2-way episodes need 2"
    ]


def test_data_check_cli_lists_missing_and_fails(tmp_path, capsys):
    splits = require_shared_splits()
    rel = lambda e: f"UCF-101/{e.class_name}/{e.video_id}.avi"  # noqa: E731
    entries = _build(tmp_path / "ucf", "ucf101", rel, skip=3)
    report = tmp_path / "report.json"
    args = [
        "data",
        "check",
        "ucf101",
        "--root",
        str(tmp_path / "ucf"),
        "--splits-dir",
        str(splits),
        "--split",
        "test",
        "--no-probe",
        "--report",
        str(report),
    ]
    assert main(args) == 0  # 3 missing of a 100+ video class: still servable
    out = capsys.readouterr().out
    assert (
        f"missing test/{entries[0].class_name}: " + ", ".join(e.video_id for e in entries[:3])
        in out
    )
    data = json.loads(report.read_text())
    assert data["ok"] and sum(len(c["missing"]) for c in data["classes"]) == 3
    assert main([*args, "--way", "22"]) == 1
    assert "only 21 classes" in capsys.readouterr().err
    csv_path = tmp_path / "r.csv"
    main([*args[:-1], str(csv_path)])
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "split,class,video_id,status,detail" and len(rows) == 4


def test_parent_root_and_available_without_lists(tmp_path):
    splits = require_shared_splits()
    rel = lambda e: f"hmdb51/{e.class_name}/{e.video_id}.avi"  # noqa: E731
    _build(tmp_path, "hmdb51", rel)
    ds = get_dataset("hmdb51", root=tmp_path, splits_dir=splits)  # root holds hmdb51/
    assert ds.root == tmp_path / "hmdb51" and ds.available()
    assert not get_dataset("hmdb51", root=tmp_path, splits_dir=tmp_path / "none").available()


def test_a_modified_list_that_repeats_a_video_serves_it_once(tmp_path, caplog):
    import shutil

    splits = tmp_path / "splits"
    shutil.copytree(require_shared_splits(), splits)
    test_list = splits / "trx" / "hmdb_ARN" / "testlist03.txt"
    lines = test_list.read_text().splitlines()
    test_list.write_text("\n".join([*lines, lines[0], lines[1]]) + "\n")
    ds = get_dataset("hmdb51", root=tmp_path / "data", splits_dir=splits, allow_modified=True)
    ids = [v.video_id for v in ds.videos("test")]
    assert len(ids) == len(set(ids)) == len(lines)
    assert "repeats 2 video line(s)" in caplog.text
    classes = sorted({line.split("/", 1)[0] for line in lines})
    other = next(c for c in classes if not lines[0].startswith(f"{c}/"))  # a test class too
    test_list.write_text("\n".join([*lines, f"{other}/{lines[0].split('/', 1)[1]}"]) + "\n")
    ds = get_dataset("hmdb51", root=tmp_path / "data", splits_dir=splits, allow_modified=True)
    with pytest.raises(ValueError, match="under two classes"):
        ds.videos("test")


@pytest.mark.parametrize("what", ["video", "class", "spelling"])
def test_a_modified_list_that_shares_a_video_or_class_with_another_split_is_refused(tmp_path, what):
    """``allow_modified`` took a train list holding a test video (or a test class) without a
    look at the other splits: test data seen in training, numbers printed as usual."""
    import shutil

    splits = tmp_path / "splits"
    shutil.copytree(require_shared_splits(), splits)
    folder = splits / "trx" / "hmdb_ARN"
    test_line = (folder / "testlist03.txt").read_text().splitlines()[0]
    train_list = folder / "trainlist03.txt"
    lines = train_list.read_text().splitlines()
    test_class, test_video = test_line.split("/", 1)
    if what == "video":  # the test video, listed under a training class
        extra = f"{lines[0].split('/', 1)[0]}/{test_video}"
    elif what == "class":  # a new video of a test class
        extra = f"{test_class}/not_in_any_list"
    else:  # the test class spelled apart: a layout reads both from one folder
        extra = f"{test_class.replace('_', ' ').title()}/not_in_any_list"
        what = "class"
    train_list.write_text("\n".join([*lines, extra]) + "\n")
    ds = get_dataset("hmdb51", root=tmp_path / "data", splits_dir=splits, allow_modified=True)
    with pytest.raises(ValueError, match=rf"1 {what} name\(s\) in more than one split"):
        ds.videos("train")


def test_data_check_names_a_wrong_root_and_what_it_read(tmp_path, capsys):
    """A --root that does not exist printed every listed video as missing (360 KB for
    HMDB51) without naming it; an empty one the same; the lists read were never named."""
    splits = require_shared_splits()
    args = ["data", "check", "hmdb51", "--splits-dir", str(splits), "--no-probe"]
    assert main([*args, "--root", str(tmp_path / "nowhere")]) == 2
    assert f"data root {tmp_path / 'nowhere'} of hmdb51 does not exist" in capsys.readouterr().err
    (tmp_path / "data" / "hmdb51").mkdir(parents=True)
    assert main([*args, "--root", str(tmp_path / "data"), "--split", "test"]) == 1
    out = capsys.readouterr().out
    root = tmp_path / "data" / "hmdb51"
    assert f"hmdb51: videos under {root} (layout hmdb51, detected); split lists " in out
    assert "trx/hmdb_ARN/testlist03.txt" in out
    assert "none of the 1292 listed test videos was found; the first was looked for at " in out
    assert "\nmissing test/" not in out  # not every id once more


def test_data_check_caps_the_missing_ids_per_class(tmp_path, capsys):
    splits = require_shared_splits()
    rel = lambda e: f"UCF-101/{e.class_name}/{e.video_id}.avi"  # noqa: E731
    entries = _build(tmp_path / "ucf", "ucf101", rel, skip=12)
    args = ["data", "check", "ucf101", "--root", str(tmp_path / "ucf"), "--splits-dir", str(splits)]
    assert main([*args, "--split", "test", "--no-probe"]) == 0
    out = capsys.readouterr().out
    first = [e.video_id for e in entries[:12] if e.class_name == entries[0].class_name]
    assert ", ".join(first[:10]) + f" ... and {len(first) - 10} more" in out


def test_data_check_names_too_short_videos(tmp_path, capsys):
    """Missing and unreadable videos were named, a too-short one only counted."""
    splits = require_shared_splits()
    rel = lambda e: f"UCF-101/{e.class_name}/{e.video_id}.avi"  # noqa: E731
    entries = _build(tmp_path / "ucf", "ucf101", rel)
    short = entries[0]
    write_test_video(tmp_path / "ucf" / rel(short), frames=4)
    args = ["data", "check", "ucf101", "--root", str(tmp_path / "ucf"), "--splits-dir", str(splits)]
    main([*args, "--split", "test", "--frames", "8"])
    out = capsys.readouterr().out
    assert f"too short test/{short.class_name}/{short.video_id}: 4 frame(s), need 8" in out


def test_data_check_ok_says_which_videos_runs_will_leave_out(tmp_path, capsys):
    """Exit status 0 with missing videos listed above read as a clean dataset."""
    splits = require_shared_splits()
    rel = lambda e: f"UCF-101/{e.class_name}/{e.video_id}.avi"  # noqa: E731
    _build(tmp_path / "ucf", "ucf101", rel, skip=2)
    args = ["data", "check", "ucf101", "--root", str(tmp_path / "ucf"), "--splits-dir", str(splits)]
    assert main([*args, "--split", "test", "--no-probe"]) == 0
    ok = capsys.readouterr().out.splitlines()[-1]
    assert ok.startswith("OK: the dataset can serve these settings, without 2 listed video(s)")
    assert "(2 missing): runs leave them out and their records name them" in ok
    _build(tmp_path / "ucf", "ucf101", rel)
    assert main([*args, "--split", "test", "--no-probe"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "OK: the dataset can serve these settings"


@pytest.mark.parametrize("name", ["synth", "synth-planted"])
def test_data_check_runs_on_the_generated_datasets(name, capsys):
    """The line naming the lists read assumed a published dataset's provenance and stopped
    'data check synth' (which run's own messages recommend) with an AttributeError."""
    assert main(["data", "check", name, "--no-probe", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert f"{name}: videos under " in out and "None" not in out.splitlines()[0]
    assert "OK: the dataset can serve these settings" in out


@pytest.mark.parametrize("ext", [".webm", ".mkv"])
def test_kinetics_train256_finds_other_video_extensions(tmp_path, ext):
    """A yt-dlp download's .webm under train_256/ was reported missing."""
    from fsarbench.data.layouts import kinetics_train256, resolve
    from fsarbench_splits.parsers import SplitEntry

    entry = SplitEntry("abc_000001_000011", "blasting sand")
    path = tmp_path / "train_256" / "blasting_sand" / f"abc_000001_000011{ext}"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert resolve(tmp_path, entry, kinetics_train256) == (path, True)
    path.unlink()  # missing: the expected path stays the .mp4
    assert resolve(tmp_path, entry, kinetics_train256)[0].suffix == ".mp4"


@pytest.mark.parametrize("layout", ["kinetics-train256", "class-folders"])
def test_upper_case_video_extensions_are_found(tmp_path, layout):
    """``<id>.MP4`` (cameras, some archives) was reported missing by every layout."""
    from fsarbench.data.layouts import LAYOUTS, resolve
    from fsarbench_splits.parsers import SplitEntry

    entry = SplitEntry("abc_000001_000011", "blasting sand")
    sub = ("train_256",) if layout == "kinetics-train256" else ()
    path = tmp_path.joinpath(*sub, "blasting_sand", "abc_000001_000011.MP4")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert resolve(tmp_path, entry, LAYOUTS[layout]) == (path, True)
    lower = path.with_suffix(".mp4")
    lower.write_bytes(b"x")  # both spellings (a case-sensitive file system): lower case first
    assert resolve(tmp_path, entry, LAYOUTS[layout]) == (lower, True)


def test_data_checks_note_on_too_short_videos_names_short_repeat():
    """It said runs leave too-short videos out, which the finetune track's short=repeat does
    not; missing ones get no such clause."""
    from fsarbench.cli.data_cmd import _left_out_note
    from fsarbench.data.health import ClassHealth

    short = ClassHealth("test", "a")
    short.too_short["v1"] = 4
    assert "(1 too short)" in _left_out_note([short]) and "short=repeat" in _left_out_note([short])
    gone = ClassHealth("test", "b")
    gone.missing.append("v2")
    assert "short=repeat" not in _left_out_note([gone])
