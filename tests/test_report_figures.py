"""Figures render from records: N-way bands, masking ratio, per-class bars, forest plots."""

from __future__ import annotations

import pytest

from fsarbench.cli.main import main
from fsarbench.report import figures
from fsarbench.report.demo import DemoSystem, write_demo_records
from fsarbench.report.figure_set import default_forest_pairs, ours_methods, render_all
from fsarbench.report.figures import mask_ratio_of
from fsarbench.report.records import load_entries


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    systems = [
        DemoSystem("sgtm-otam", noise=0.5, record_hparams={"mask_ratio": None}),
        DemoSystem("trx", noise=1.5),
        DemoSystem("protonet", noise=1.0),
    ]
    write_demo_records(out, systems, settings=[(5, 1), (6, 1), (7, 1)], episodes=60)
    ratios = [
        DemoSystem(f"sgtm-otam[mask_ratio={r}]", noise=0.5 + abs(r - 0.5)) for r in (0.25, 0.75)
    ]
    write_demo_records(out, ratios, settings=[(5, 1), (5, 5)], episodes=60)
    return out


def test_mask_ratio_lines_leave_out_other_sweeps(runs, tmp_path) -> None:
    from fsarbench.report.figures import _ratio_lines

    write_demo_records(
        tmp_path,
        [DemoSystem("sgtm-otam[lambda_recon=0.1]", record_hparams={"mask_ratio": None})],
        settings=[(5, 1)],
        episodes=60,
    )
    entries = load_entries(runs) + load_entries(tmp_path)
    line = _ratio_lines(entries, "synth")[(5, 1)]["sgtm-otam"]
    assert [e.system for e in line] == [
        "sgtm-otam[mask_ratio=0.25]",
        "sgtm-otam",
        "sgtm-otam[mask_ratio=0.75]",
    ]


def test_mask_ratio_parsed_from_runner_names(runs) -> None:
    ratios = {e.system: mask_ratio_of(e) for e in load_entries(runs)}
    assert ratios["sgtm-otam[mask_ratio=0.25]"] == 0.25
    assert ratios["sgtm-otam"] == 0.5  # recorded mask_ratio None: the paper's default
    assert ratios["trx"] is None


def test_default_forest_pairs_come_from_published_data(runs) -> None:
    assert "sgtm-otam" in ours_methods()
    pairs = default_forest_pairs(load_entries(runs), ours_methods())
    assert pairs == [("sgtm-otam", "protonet"), ("sgtm-otam", "trx")]


def test_render_all_writes_png_and_pdf(runs, tmp_path) -> None:
    paths = render_all(runs, load_entries(runs), tmp_path)
    names = {p.name for p in paths}
    for stem in (
        "accuracy_vs_way_synth_1shot",
        "mask_ratio_synth",
        "per_class_synth_5w1s",
        "forest_sgtm-otam",
    ):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names, stem
    for p in paths:
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else head.startswith(b"%PDF")


def test_figures_cli(runs, tmp_path, capsys) -> None:
    out = tmp_path / "figs"
    assert (
        main(["figures", "--runs", str(runs), "--out", str(out), "--forest", "protonet", "trx"])
        == 0
    )
    assert (out / "forest_protonet.png").exists()
    assert not (out / "forest_sgtm-otam.png").exists()
    assert "forest_protonet.pdf" in capsys.readouterr().out


def test_per_class_prefers_the_papers_figure2_methods(runs, tmp_path) -> None:
    """Figure 2's Baseline (an ablation variant of sgtm-otam, trained by the figure2 grid)
    was filtered out with the other variants before the figure's own names were applied."""
    from fsarbench.report.figure_set import _per_class_choice
    from fsarbench.report.published import figure_methods

    assert figure_methods("figure2") == ["sgtm-otam-baseline", "trx", "sgtm-otam"]
    chosen = _per_class_choice(load_entries(runs), figure_methods("figure2"))
    assert {e.system for e in chosen} == {"trx", "sgtm-otam"}  # protonet is not in Figure 2
    assert {(e.setting.way, e.setting.shot) for e in chosen} == {(5, 1)}
    variants = [DemoSystem("sgtm-otam-baseline"), DemoSystem("sgtm-otam-tml")]
    write_demo_records(tmp_path, variants, settings=[(5, 1), (6, 1), (7, 1)], episodes=60)
    entries = load_entries(runs) + load_entries(tmp_path)
    chosen = _per_class_choice(entries, figure_methods("figure2"))
    assert {e.system for e in chosen} == {"sgtm-otam-baseline", "trx", "sgtm-otam"}


def _overlap(a, b) -> bool:
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


@pytest.mark.parametrize("kind", ["way", "per_class"])
def test_legends_never_cover_the_data(runs, kind) -> None:
    from fsarbench.report import figures

    entries = load_entries(runs)
    if kind == "way":
        fig = figures.plot_accuracy_vs_way(entries, entries[0].setting.dataset, 1)
    else:
        fig = figures.plot_per_class([e for e in entries if e.setting.way == 5][:3])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert not _overlap(legend, ax.get_window_extent(renderer))
    assert len(ax.get_legend().get_texts()) >= 2


def test_ci_too_narrow_to_see_is_said_on_the_axis() -> None:
    import matplotlib.pyplot as plt

    from fsarbench.report.figures import _ci_label

    fig, ax = plt.subplots()
    ax.set_ylim(60, 90)
    assert "too narrow to see" in _ci_label("accuracy (%)", ax, [0.2, 0.25])
    assert _ci_label("accuracy (%)", ax, [2.0]) == "accuracy (%)"
    # a bound: 0.125 printed as "<= +-0.12" (rounded half-even, below the widest CI)
    assert "CIs ≤ ±0.13 pp" in _ci_label("accuracy (%)", ax, [0.125])
    assert "CIs ≤ ±0.12 pp" in _ci_label("accuracy (%)", ax, [0.12])
    plt.close(fig)


def test_per_class_bars_carry_error_bars(runs) -> None:
    from fsarbench.report import figures

    entries = [e for e in load_entries(runs) if (e.setting.way, e.setting.shot) == (5, 1)]
    fig = figures.plot_per_class(entries[:2])
    ax = fig.axes[0]
    bars = [c for c in ax.containers if hasattr(c, "errorbar") and c.errorbar is not None]
    assert len(bars) == 2
    assert "95% CI" in ax.get_ylabel()


def test_points_of_other_test_episodes_are_never_joined_into_one_line(tmp_path) -> None:
    """A system run at 60 episodes and, in another folder, at 30 for two ways had all five
    points joined into one zig-zag line (two at one way), and nothing said the episodes
    differed."""
    from fsarbench.report.figures import MIXED_NOTE, plot_accuracy_vs_way
    from fsarbench.report.records import group_entries
    from fsarbench.results import load_records

    settings = {"a": ([(5, 1), (6, 1), (7, 1)], 60), "b": ([(5, 1), (6, 1)], 30)}
    for folder, (ways, episodes) in settings.items():
        write_demo_records(tmp_path / folder, [DemoSystem("trx")], settings=ways, episodes=episodes)
    entries = group_entries([r for f in settings for r in load_records(tmp_path / f)])
    dataset = entries[0].setting.dataset
    ax = plot_accuracy_vs_way(entries, dataset, 1).axes[0]
    lines = {line.get_label(): [int(x) for x in line.get_xdata()] for line in ax.get_lines()}
    assert lines == {"trx": [5, 6, 7], "trx [30 episodes]": [5, 6]}
    assert MIXED_NOTE in ax.get_title()
    one = [e for e in entries if e.setting.episodes == 60]
    assert MIXED_NOTE not in plot_accuracy_vs_way(one, dataset, 1).axes[0].get_title()


def _lines_of(ax) -> dict[str, list[float]]:
    """Legend label -> x of each line drawn with error bars or as a plain line."""
    bars = {c.get_label(): list(c.lines[0].get_xdata()) for c in ax.containers}
    plain = {ln.get_label(): list(ln.get_xdata()) for ln in ax.get_lines()}
    return {k: v for k, v in {**plain, **bars}.items() if not k.startswith("_")}


def test_stale_and_current_points_are_never_joined_into_one_line(tmp_path) -> None:
    """Two current masking ratios of sgtm-otam and two stale ones (other code) were drawn
    as one line labelled "sgtm-otam", with nothing saying half its points were stale."""
    from fsarbench.report.figures import plot_accuracy_vs_way, plot_mask_ratio
    from fsarbench.report.records import STALE_MARK, group_entries
    from fsarbench.results import load_records

    ratios = [DemoSystem(f"sgtm-otam[mask_ratio={r}]") for r in (0.25, 0.375, 0.5, 0.75)]
    write_demo_records(tmp_path, ratios, settings=[(5, 1)], episodes=20)
    write_demo_records(tmp_path, [DemoSystem("trx")], [(5, 1), (6, 1), (7, 1), (8, 1)], episodes=20)
    records = load_records(tmp_path)
    for r in records:
        if r.method in ("sgtm-otam[mask_ratio=0.5]", "sgtm-otam[mask_ratio=0.75]") or r.way > 6:
            r.provenance["code"] = {"harness": "0" * 16}
    entries = group_entries(records)
    assert _lines_of(plot_mask_ratio(entries, "synth").axes[0]) == {
        "sgtm-otam": [25.0, 37.5],
        f"sgtm-otam {STALE_MARK}": [50.0, 75.0],
    }
    assert _lines_of(plot_accuracy_vs_way(entries, "synth", 1).axes[0]) == {
        "trx": [5, 6],
        f"trx {STALE_MARK}": [7, 8],
    }


def test_forest_and_figure2_defaults_find_our_methods_when_stale(tmp_path) -> None:
    """Our methods were picked by plain name: in a folder of stale records ('sgtm-otam
    ‡stale') no forest plot was drawn and Figure 2 fell back to every method, silently."""
    from fsarbench.report.figure_set import _per_class_choice, default_forest_pairs
    from fsarbench.report.records import STALE_MARK, group_entries
    from fsarbench.results import load_records

    write_demo_records(
        tmp_path, [DemoSystem("sgtm-otam"), DemoSystem("otam")], [(5, 1)], episodes=20
    )
    records = load_records(tmp_path)
    for r in records:
        r.provenance["code"] = {"harness": "0" * 16}
    entries = group_entries(records)
    pairs = default_forest_pairs(entries, {"sgtm-otam"})
    assert pairs == [(f"sgtm-otam {STALE_MARK}", f"otam {STALE_MARK}")]
    chosen = _per_class_choice(entries, ["sgtm-otam"])
    assert [e.system for e in chosen] == [f"sgtm-otam {STALE_MARK}"]


def test_a_lone_current_ratio_is_drawn_beside_the_stale_line(tmp_path) -> None:
    """One current ratio beside three stale ones: the current point formed a line of one
    ratio, which the figure dropped, so it showed only stale results and said nothing."""
    from fsarbench.report.figures import plot_mask_ratio
    from fsarbench.report.records import STALE_MARK, group_entries
    from fsarbench.results import load_records

    ratios = [DemoSystem(f"sgtm-otam[mask_ratio={r}]") for r in (0.25, 0.375, 0.5, 0.75)]
    write_demo_records(tmp_path, ratios, settings=[(5, 1)], episodes=20)
    records = load_records(tmp_path)
    for r in records:
        if r.method != "sgtm-otam[mask_ratio=0.25]":
            r.provenance["code"] = {"harness": "0" * 16}
    assert _lines_of(plot_mask_ratio(group_entries(records), "synth").axes[0]) == {
        "sgtm-otam": [25.0],
        f"sgtm-otam {STALE_MARK}": [37.5, 50.0, 75.0],
    }


def test_a_figure_is_replaced_whole_or_not_at_all(tmp_path) -> None:
    """A run killed while a figure is written leaves the previous file, never a truncated
    one: each format is drawn in memory and moved into place."""
    import matplotlib.pyplot as plt

    from fsarbench.report.figures import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png, pdf = save_figure(fig, tmp_path, "f")
    before = png.read_bytes(), pdf.read_bytes()
    assert before[0].startswith(b"\x89PNG") and before[1].startswith(b"%PDF")

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    draw = fig.savefig

    def killed_mid_pdf(target, **kwargs):
        draw(target, **kwargs)
        if kwargs.get("format") == "pdf":
            raise KeyboardInterrupt  # the PDF drawn, not yet in place

    fig.savefig = killed_mid_pdf
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, tmp_path, "f")
    assert pdf.read_bytes() == before[1]  # untouched
    assert png.read_bytes() != before[0] and png.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]


def test_written_files_get_the_mode_open_gives_them(tmp_path) -> None:
    """mkstemp's 0600 made figures, tables and records unreadable to the rest of a team
    sharing the folder: atomic writes give the mode a plain open() gives under the umask."""
    import os
    import stat

    from fsarbench.io import atomic_write_bytes

    with open(tmp_path / "plain", "wb"):
        pass
    atomic_write_bytes(tmp_path / "atomic", b"x")
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


def test_mask_ratio_of_a_run_set_by_k_or_masking_nothing(tmp_path) -> None:
    """A record with ``mask_ratio: None`` was drawn at 50 % whatever its ``k``; one masking
    nothing (Table 3's baseline, ``mask: none``) was drawn at 50 % too."""
    import json

    systems = [
        DemoSystem("sgtm-otam-k1", record_hparams={"mask_ratio": None, "k": 1}),
        DemoSystem("sgtm-otam-plain", record_hparams={"mask_ratio": None, "k": None}),
        DemoSystem("sgtm-otam-baseline", record_hparams={"mask_ratio": None, "mask": "none"}),
    ]
    write_demo_records(tmp_path, systems, settings=[(5, 1)], episodes=20)
    for path in (tmp_path / "records").glob("*.json"):
        record = json.loads(path.read_text())
        record["features"] = {**(record.get("features") or {}), "num_frames": 8}
        path.write_text(json.dumps(record))
    ratios = {e.system: mask_ratio_of(e) for e in load_entries(tmp_path)}
    assert ratios == {"sgtm-otam-k1": 0.25, "sgtm-otam-plain": 0.5, "sgtm-otam-baseline": None}


def test_per_class_figures_of_settings_that_share_dataset_and_shot_get_their_own_files(
    tmp_path,
) -> None:
    """An episode-seed-1 run's per-class figure overwrote the main one's file
    (``per_class_synth_5w1s``), and the report embedded it twice under one id."""
    from fsarbench.report.figure_set import _setting_file_names
    from fsarbench.report.records import Setting

    write_demo_records(tmp_path, [DemoSystem("otam")], settings=[(5, 1)], episodes=60)
    write_demo_records(tmp_path, [DemoSystem("otam")], settings=[(5, 1)], episodes=60, seed=1)
    paths = render_all(tmp_path, load_entries(tmp_path), tmp_path / "figs")
    names = sorted(p.name for p in paths if p.name.startswith("per_class") and p.suffix == ".png")
    assert names == ["per_class_synth_5w1s.png", "per_class_synth_5w1s_seed1.png"]
    main, fine, small = (
        Setting("d", "frozen", 5, 1, 0, 1, 10000),
        Setting("d", "finetune", 5, 1, 0, 1, 10000),
        Setting("d", "frozen", 5, 1, 0, 1, 300),
    )
    got = _setting_file_names([main, fine, small, Setting("e", "finetune", 5, 1, 0, 1, 9)])
    assert got == {
        main: "d_5w1s",
        fine: "d_5w1s_finetune",
        small: "d_5w1s_300ep",
        Setting("e", "finetune", 5, 1, 0, 1, 9): "e_5w1s",
    }


def test_accuracy_vs_way_draws_one_line_per_track(tmp_path) -> None:
    """Frozen and finetune records of one method were joined into one zig-zag line."""
    write_demo_records(tmp_path, [DemoSystem("otam")], settings=[(5, 1), (6, 1)], episodes=60)
    write_demo_records(
        tmp_path, [DemoSystem("otam")], settings=[(5, 1), (6, 1)], episodes=60, track="finetune"
    )
    fig = figures.plot_accuracy_vs_way(load_entries(tmp_path), "synth", 1)
    labels = sorted(line.get_label() for line in fig.axes[0].get_lines())
    assert labels == ["otam [finetune track]", "otam [frozen track]"]


def test_figures_name_the_left_out_entries_they_would_have_drawn(tmp_path, monkeypatch) -> None:
    """A record its per-query rows do not give was left out of the figures without a mark:
    the missing point read as never run, while the tables named it."""
    import json

    write_demo_records(
        tmp_path,
        [DemoSystem("sgtm-otam", noise=0.5), DemoSystem("trx", noise=1.5)],
        settings=[(5, 1), (6, 1), (7, 1)],
        episodes=60,
    )
    (edited,) = [
        p
        for p in (tmp_path / "records").glob("trx__*.json")
        if json.loads(p.read_text())["way"] == 7
    ]
    edited.write_text(json.dumps({**json.loads(edited.read_text()), "accuracy": 90.0}))
    left_out: list[str] = []
    entries = load_entries(tmp_path, left_out=left_out, verify_rows=True)
    notes: dict[str, str] = {}

    def capture(fig, out_dir, name):
        notes[name] = " ".join(t.get_text() for t in fig.texts)
        figures.pyplot().close(fig)
        return []

    monkeypatch.setattr(figures, "save_figure", capture)
    render_all(tmp_path, entries, tmp_path / "f", left_out=left_out, n_boot=200)
    named = "trx in synth 7-way 1-shot"
    assert named in notes["accuracy_vs_way_synth_1shot"].replace("\n", " ")
    assert named in notes["forest_sgtm-otam"].replace("\n", " ")
    assert notes["per_class_synth_5w1s"] == ""  # a 5-way figure would not have drawn it
    render_all(tmp_path, entries, tmp_path / "g", n_boot=200)
    assert notes["accuracy_vs_way_synth_1shot"] == ""


def test_the_per_class_note_names_only_entries_the_figure_would_have_drawn(
    tmp_path, monkeypatch
) -> None:
    """Figure 2 draws the paper's methods where present; a left-out protonet, which it would
    not have drawn beside them, was named as 'not drawn'."""
    import json

    write_demo_records(
        tmp_path,
        [DemoSystem("sgtm-otam"), DemoSystem("trx"), DemoSystem("protonet")],
        settings=[(5, 1)],
        episodes=60,
    )
    (path,) = (tmp_path / "records").glob("protonet__*.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy": 99.0}))
    left_out: list[str] = []
    entries = load_entries(tmp_path, left_out=left_out, verify_rows=True)
    notes: dict[str, str] = {}

    def capture(fig, out_dir, name):
        notes[name] = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
        figures.pyplot().close(fig)
        return []

    monkeypatch.setattr(figures, "save_figure", capture)
    render_all(tmp_path, entries, tmp_path / "f", left_out=left_out, forest_pairs=[])
    assert notes["per_class_synth_5w1s"] == ""


def test_mask_ratio_of_is_the_share_sgtm_masks_at_the_records_frames(tmp_path) -> None:
    """At 6 frames, 25% and 37.5% both mask 2 frames: Figure 4 drew one masking at two x
    positions, and at 5 frames the default (T // 2 = 2) at 50%."""
    import json

    systems = [
        DemoSystem("sgtm-otam[mask_ratio=0.25]"),
        DemoSystem("sgtm-otam[mask_ratio=0.375]"),
        DemoSystem("sgtm-otam", record_hparams={"mask_ratio": None, "k": None}),
    ]
    for frames, folder in ((6, tmp_path / "six"), (5, tmp_path / "five")):
        write_demo_records(folder, systems, settings=[(5, 1)], episodes=20)
        for path in (folder / "records").glob("*.json"):
            record = json.loads(path.read_text())
            record["features"] = {**(record.get("features") or {}), "num_frames": frames}
            path.write_text(json.dumps(record))
    six = {e.system: mask_ratio_of(e) for e in load_entries(tmp_path / "six")}
    assert six["sgtm-otam[mask_ratio=0.25]"] == six["sgtm-otam[mask_ratio=0.375]"] == 2 / 6
    five = {e.system: mask_ratio_of(e) for e in load_entries(tmp_path / "five")}
    assert five["sgtm-otam"] == 2 / 5


def test_a_forest_plot_keeps_a_pairs_paired_settings_and_names_the_unpaired(
    tmp_path, monkeypatch
) -> None:
    """One setting of a pair over other test episodes dropped the whole pair from the forest
    plot (its paired settings too), with an INFO log line alone saying so."""
    import numpy as np
    from report_fixtures import save_simulated_record

    from fsarbench.episodes import make_manifest
    from fsarbench.report.figure_set import _forest_figures

    labels = np.repeat(np.arange(24), 10)

    def record(method: str, shot: int, acc: float, dataset: str = "kinetics") -> None:
        m = make_manifest(labels, way=5, shot=shot, episodes=200, dataset=dataset, split="test")
        rng = np.random.default_rng(len(method) + shot)
        save_simulated_record(tmp_path, m, method, acc, rng, dataset="kinetics", train_shot=shot)

    record("otam", 1, 0.7, dataset="")  # another manifest: unpaired at 1-shot
    for method, acc in (("sgtm-otam", 0.8), ("otam", 0.7)):
        record(method, 5, acc)
    record("sgtm-otam", 1, 0.8)
    drawn, noted = [], []

    def plot(comps):
        drawn.extend(comps)
        return "figure"

    monkeypatch.setattr(figures, "plot_forest", plot)
    monkeypatch.setattr(
        figures, "note_not_drawn", lambda fig, left, unpaired: noted.extend(unpaired)
    )
    monkeypatch.setattr(figures, "save_figure", lambda *args: [])
    pairs = [("sgtm-otam", "otam")]
    _forest_figures(tmp_path, load_entries(tmp_path), tmp_path, pairs, 0.05, "ttest", 50, [])
    assert [(c.setting.shot, c.b.system) for c in drawn] == [(5, "otam")]
    setting = "kinetics 5-way 1-shot (200 episodes)"
    assert noted == [f"sgtm-otam vs otam in {setting}: records over other test episodes"]
