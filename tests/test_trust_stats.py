"""Strict configuration files, systems that are never pooled across configs, and statistics
that count training seeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from report_fixtures import save_simulated_record

import fsarbench as fb
from fsarbench.cli.main import main
from fsarbench.config import ConfigError
from fsarbench.experiments.grids import load_grid_file
from fsarbench.report.compare import compare_systems
from fsarbench.report.records import config_label, load_entries
from fsarbench.stats.hierarchical import seed_level_comparison
from fsarbench.training.recipe import Recipe, check_recipes_table

GRID = """
grids:
  mine:
    datasets: [synth]
    {key}: [1]
    methods: [protonet, {{method: otam, label: OTAM}}]
"""


def test_grid_file_with_a_misspelled_key_fails_naming_file_key_and_nearest():
    assert load_grid_file(GRID.format(key="shots"), "my.yaml").grids["mine"].shots == [1]
    with pytest.raises(ConfigError, match=r"unknown key 'shot' in my.yaml.*Did you mean 'shots'"):
        load_grid_file(GRID.format(key="shot"), "my.yaml")


@pytest.mark.parametrize(
    "text, message",
    [
        ("grids: {g: {datasets: [synth], shots: [0], methods: [otam]}}", r"shots = 0 .*\[1, 100\]"),
        ("grids: {g: {datasets: [synth], methods: [otma]}}", r"unknown name 'otma'.*'otam'"),
        ("grids: {g: {datasets: [kinetcs100], methods: [otam]}}", r"Did you mean 'kinetics100'"),
        ("grids: {g: {methods: [otam]}}", r"missing key\(s\) 'datasets'"),
        (
            "grids: {g: {datasets: [synth], methods: [{method: otam, hparam: {}}]}}",
            r"unknown key 'hparam'.*Did you mean 'hparams'",
        ),
    ],
)
def test_grid_file_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        load_grid_file(text, "g.yaml")


def test_grid_files_that_would_be_misread_are_refused(tmp_path):
    """'exclude:' beside a list of methods was ignored; an empty 'grids:' said only
    'unknown grid' when its grid was asked for."""
    from fsarbench.experiments.grids import add_grid_file

    with pytest.raises(ConfigError, match=r"exclude applies to 'methods: registered' only"):
        load_grid_file("grids: {g: {datasets: [synth], methods: [otam], exclude: [trx]}}", "g")
    path = tmp_path / "g.yaml"
    path.write_text("grids: {}\n")
    with pytest.raises(ConfigError, match=r"g.yaml defines no grids"):
        add_grid_file(path)


def test_run_with_a_bad_grid_file_fails_before_any_work(tmp_path, capsys):
    path = tmp_path / "grids.yaml"
    path.write_text(GRID.format(key="shot"))
    code = main(["run", "--grids", str(path), "--table", "mine", "--out", str(tmp_path / "o")])
    assert code == 2 and "Did you mean 'shots'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_recipe_files_and_values_are_checked():
    with pytest.raises(ConfigError, match=r"recipe.steps = 0 is out of range"):
        fb.build_config(Recipe, {"steps": 0})
    with pytest.raises(ConfigError, match=r"unknown name 'otma' in r.yaml: methods"):
        check_recipes_table({"default": {}, "methods": {"otma": {}}}, "r.yaml")
    with pytest.raises(ConfigError, match=r"r.yaml: datasets.synth.*Did you mean 'lr'"):
        check_recipes_table({"default": {}, "datasets": {"synth": {"lrr": 1}}}, "r.yaml")
    with pytest.raises(ConfigError, match=r"unknown name 'defaults'"):
        check_recipes_table({"defaults": {}}, "r.yaml")


def _save(out, manifest, method, train_seed, acc, rng, **record_kw):
    return save_simulated_record(
        out, manifest, method, acc, rng, train_seed=train_seed, **record_kw
    )


def _manifest(episodes=2000):
    classes = np.repeat(np.arange(10), 6)
    return fb.make_manifest(classes, way=5, shot=1, queries=2, episodes=episodes, seed=0)


def test_records_of_two_configs_are_two_systems(tmp_path):
    manifest, rng = _manifest(200), np.random.default_rng(0)
    _save(tmp_path, manifest, "A", 0, 0.6, rng, recipe={"lr": 1e-3})
    _save(tmp_path, manifest, "A", 1, 0.6, rng, recipe={"lr": 1e-3})
    _save(tmp_path, manifest, "A", 0, 0.9, rng, recipe={"lr": 1e-2})
    entries = load_entries(tmp_path)
    assert len(entries) == 2 and all(e.system.startswith("A @") for e in entries)
    assert sorted(len(e.records) for e in entries) == [1, 2]


def test_a_config_has_one_name_in_every_shot_column(tmp_path):
    """A system with two configurations at 1-shot was named ``A @<key>`` there and ``A`` at
    5-shot (where it had one), and the keys hashed the shot: one configuration was split over
    two rows of a paper table, under names that could not be matched up."""
    rng = np.random.default_rng(3)
    for shot in (1, 5):
        classes = np.repeat(np.arange(10), 8)
        m = fb.make_manifest(classes, way=5, shot=shot, queries=2, episodes=100, seed=0)
        for lr in [1e-3, 1e-2] if shot == 1 else [1e-3]:
            recipe = {"lr": lr, "shot": shot, "val_shot": shot}
            protocol = {"name": "seed", "train_shot": shot, "train_way": 5}
            _save(tmp_path, m, "A", 0, 0.7, rng, recipe=recipe, provenance={"protocol": protocol})
        _save(tmp_path, m, "B", 0, 0.7, rng, recipe={"shot": shot})
    names = {(e.system, e.setting.shot) for e in load_entries(tmp_path)}
    by_shot = {
        shot: sorted(n for n, s in names if s == shot and n.startswith("A")) for shot in (1, 5)
    }
    assert len(by_shot[1]) == 2 and len(by_shot[5]) == 1 and by_shot[5][0] in by_shot[1]
    assert {n for n, _ in names if n.startswith("B")} == {"B"}  # one configuration: plain
    # and in every dataset's column: its feature caches and split lists are its own
    (rec,) = [r for r in fb.load_records(tmp_path) if r.method == "B" and r.shot == 1]
    data = {"backbone": "resnet50", "cache_keys": {"test": "a"}, "split_md5": {"test": "b"}}
    other = {**data, "cache_keys": {"test": "c"}, "split_md5": {"test": "d"}}
    label = config_label(dataclasses.replace(rec, features=data))
    assert config_label(dataclasses.replace(rec, features=other)) == label
    assert config_label(dataclasses.replace(rec, features={**data, "backbone": "x"})) != label


def test_configs_that_differ_only_in_the_training_shot_keep_two_names(tmp_path):
    """A model shared across shots (trained at 1-shot) beside one trained at 5-shot, both at
    5-shot: the shot-free labels are equal, so their config keys name them apart."""
    rng = np.random.default_rng(4)
    m = fb.make_manifest(np.repeat(np.arange(10), 8), way=5, shot=5, queries=2, episodes=50)
    for train_shot in (1, 5):
        protocol = {"name": "seed", "train_shot": train_shot}
        recipe = {"shot": train_shot}
        _save(tmp_path, m, "A", 0, 0.7, rng, recipe=recipe, provenance={"protocol": protocol})
    names = sorted(e.system for e in load_entries(tmp_path))
    assert len(set(names)) == 2 and all(n.startswith("A @") for n in names)


def test_queries_by_shot_keeps_one_name_and_an_eval_record_joins_its_runs_pool(tmp_path):
    """HyRSM's finetune recipe takes its training queries from queries_by_shot (7 at 1-shot,
    3 at 5-shot): its one configuration had two labels. And an eval record of a run's own
    model (no provenance.protocol) was another configuration: the seed pool split in two."""
    rng = np.random.default_rng(6)
    by_shot = [7, 6, 5, 4, 3]
    for shot in (1, 5):
        m = fb.make_manifest(np.repeat(np.arange(10), 8), way=5, shot=shot, queries=2, episodes=50)
        for steps in (100, 200) if shot == 1 else (100,):
            recipe = {"recipe": {"shot": shot, "queries": by_shot[shot - 1], "steps": steps}}
            recipe["recipe"]["queries_by_shot"] = by_shot
            for seed in (0, 1):
                # seed 1 as an eval record: the run's configuration, no provenance
                provenance = {"protocol": {"name": "seed"}} if seed == 0 else {}
                _save(
                    tmp_path,
                    m,
                    "hyrsm",
                    seed,
                    0.7,
                    rng,
                    recipe=recipe,
                    provenance=provenance,
                    train_way=5,
                    train_shot=shot,
                    track="finetune",
                )
    entries = load_entries(tmp_path)
    assert all(len(e.records) == 2 for e in entries)  # each seed pool is whole
    names = {k: sorted(e.system for e in entries if e.setting.shot == k) for k in (1, 5)}
    (five,) = names[5]
    assert five in names[1] and len(names[1]) == 2  # the 100-step configuration: one name


def test_two_seeds_that_disagree_make_the_verdict_rest_on_seeds(tmp_path, capsys):
    manifest, rng = _manifest(), np.random.default_rng(1)
    for seed, acc in ((0, 0.80), (1, 0.56)):
        _save(tmp_path, manifest, "A", seed, acc, rng)
    for seed in (0, 1):
        _save(tmp_path, manifest, "B", seed, 0.65, rng)
    (comp,) = compare_systems(tmp_path, load_entries(tmp_path), "A", "B", n_boot=500)
    assert comp.stats.p_ttest < 0.01  # episodes alone call A better
    assert comp.stats.seed_level is not None and comp.stats.seed_level.p_bootstrap > 0.2
    assert comp.verdict == "no significant difference"
    entry = next(e for e in load_entries(tmp_path) if e.system == "A")
    per_seed_ci = np.mean([r.ci95 for r in entry.records])
    assert entry.ci95 > 3 * per_seed_ci  # the seed spread is in the entry's CI
    assert main(["compare", "A", "B", "--runs", str(tmp_path), "--bootstrap", "200"]) == 0
    assert "Seed level" in capsys.readouterr().out


def test_single_seed_verdicts_warn(tmp_path, capsys):
    manifest, rng = _manifest(300), np.random.default_rng(2)
    _save(tmp_path, manifest, "A", 0, 0.9, rng)
    _save(tmp_path, manifest, "B", 0, 0.5, rng)
    assert main(["compare", "A", "B", "--runs", str(tmp_path), "--bootstrap", "200"]) == 0
    assert "episode-level variance only" in capsys.readouterr().out


def test_seed_level_comparison_known_answers():
    a = np.full((3, 50), 0.7)
    b = np.full((3, 50), 0.5)
    sl = seed_level_comparison(a, b, n_boot=100)
    assert (
        sl.diff == pytest.approx(20.0) and sl.p_bootstrap == 1 / 101 and sl.p_seeds == 0.25
    )  # three equal seed differences: sign-flip p
    same = seed_level_comparison(a, a.copy(), n_boot=100)
    assert same.diff == 0.0 and same.p_seeds == 1.0 and same.p_bootstrap == 1.0
    one = seed_level_comparison(a[:1], b[:2], n_boot=50)
    assert np.isnan(one.p_seeds) and "one seed" in one.seed_test


def test_published_tables_carry_their_protocol_and_ship_in_the_package(tmp_path):
    from fsarbench.report.published import load_table, published_dir
    from fsarbench.report.tables import build_table

    assert published_dir().parent.name == "fsarbench"  # inside the package (wheels too)
    spec = load_table(1)
    assert spec.protocol.track == "finetune" and spec.protocol.frames == 8
    manifest, rng = _manifest(100), np.random.default_rng(0)
    _save(tmp_path, manifest, "otam", 0, 0.7, rng)
    table = build_table(spec, load_entries(tmp_path), stand_in="toy")
    text = " ".join(table.notes)
    assert "ResNet-50" in text and "frozen track sit beside published finetune" in text
    bad = tmp_path / "pub"
    bad.mkdir()
    (bad / "table1.yaml").write_text(
        "\n".join(
            line
            for line in (published_dir() / "table1.yaml").read_text().splitlines()
            if not line.startswith("protocol:")
        )
    )
    with pytest.raises(ConfigError, match=r"missing key\(s\) 'protocol'"):
        load_table(1, bad)


@pytest.mark.parametrize(
    "p, floor, text",
    [
        (0.0, None, "<1e-300"),
        (float("nan"), None, "n/a"),
        (2e-7, None, "2.0e-07"),
        (0.0312, None, "0.0312"),
        (0.0, 0.005, "<5e-03"),
        (1.0, None, "1"),
        (0.04996, None, "0.04996"),  # both printed '0.05', on either side of alpha
        (0.05004, None, "0.05004"),
        (0.05, None, "0.05"),
        (0.0100049, None, "0.010005"),
        (1 / 3001, 1 / 3000, "<4e-04"),  # '<3e-04' bounded a p of 3.3e-04 from below
    ],
)
def test_p_values_never_print_as_zero(p, floor, text):
    from fsarbench.stats.paired import format_p

    assert format_p(p, floor) == text


# -- several training seeds: the pooled CI and the verdict's p ---------------------------------
def _seed_records(accs, episodes=10_000, std=49.0):
    from fsarbench.results import ResultRecord

    return [
        ResultRecord(
            method="m",
            dataset="d",
            split_variant="d",
            split="test",
            track="frozen",
            way=5,
            shot=1,
            queries=1,
            episodes=episodes,
            seed=0,
            accuracy=float(a),
            ci95=1.96 * std / np.sqrt(episodes),
            std=std,
            spread="",
            manifest_hash="h",
            config_hash="c",
            code_version="x",
            train_seed=i,
        )
        for i, a in enumerate(accs)
    ]


def test_pooled_halfwidth_adds_each_components_t_interval_in_quadrature():
    from scipy import stats

    from fsarbench.stats.intervals import pooled_halfwidth

    assert pooled_halfwidth([(4.0, 1)]) == pytest.approx(stats.t.ppf(0.975, 1) * 2.0)
    assert pooled_halfwidth([(4.0, 2), (0.0, 9999)]) == pytest.approx(stats.t.ppf(0.975, 2) * 2)
    t2, t50 = stats.t.ppf(0.975, 2), stats.t.ppf(0.975, 50)
    expected = np.sqrt(t2**2 * 3.0 + t50**2 * 1.0)
    assert pooled_halfwidth([(3.0, 2), (1.0, 50)]) == pytest.approx(expected)
    assert pooled_halfwidth([(0.0, 1), (0.0, 5)]) == 0.0
    assert np.isnan(pooled_halfwidth([(1.0, 0)]))


def test_the_pooled_ci_over_two_or_three_seeds_covers_the_truth_95_percent():
    """1.96 on a seed variance estimated from S - 1 degrees of freedom covered the true mean
    in 80% of runs with 2 seeds and 87% with 3 (seed sd 2 points, 10,000 episodes)."""
    from fsarbench.report.records import Entry, Setting

    rng = np.random.default_rng(0)
    for seeds in (2, 3):
        covered, trials = 0, 4000
        for _ in range(trials):
            shared = rng.normal(0, 49.0 / 100)  # the test episodes every seed shares
            accs = 60.0 + shared + rng.normal(0, 2.0, seeds)
            entry = Entry("m", Setting("d", "frozen", 5, 1, 0, 1, 10_000), _seed_records(accs))
            covered += abs(entry.accuracy - 60.0) <= entry.ci95
        assert covered / trials > 0.93, (seeds, covered / trials)


def _two_seeds(rng, difficulty):
    """Per-episode accuracies ``[2 seeds, E]`` of a system of 60% mean accuracy."""
    p = np.clip(0.6 + difficulty[None] + rng.normal(0, 0.06, (2, 1)), 0, 1)
    return rng.binomial(5, p) / 5


def test_a_verdict_over_few_seeds_holds_its_level_when_nothing_differs():
    """With 2 seeds a side the hierarchical bootstrap can only draw a few seed means; taken
    with the episode-level p alone it called equal systems different in 16% of comparisons
    (29% with larger seed variance). The per-seed test now has a say too."""
    from fsarbench.stats.hierarchical import seed_level_comparison
    from fsarbench.stats.paired import compare_paired

    rng = np.random.default_rng(1)
    episodes, trials, rejected = 300, 300, 0
    for r in range(trials):
        difficulty = rng.normal(0, 0.15, episodes)
        a, b = (_two_seeds(rng, difficulty) for _ in range(2))
        comp = dataclasses.replace(
            compare_paired(a.mean(0), b.mean(0), n_boot=200),
            seed_level=seed_level_comparison(a, b, n_boot=300, seed=r),
        )
        rejected += comp.p_value("p_ttest") <= 0.05
    assert rejected / trials < 0.08, rejected / trials


def test_one_seed_against_several_is_not_called_a_seed_level_verdict():
    from fsarbench.report.compare import verdict_level
    from fsarbench.stats.hierarchical import seed_level_comparison
    from fsarbench.stats.paired import compare_paired

    rng = np.random.default_rng(0)
    a, b = rng.random((1, 50)), rng.random((3, 50))
    comp = dataclasses.replace(
        compare_paired(a.mean(0), b.mean(0), n_boot=50),
        seed_level=seed_level_comparison(a, b, n_boot=50),
    )
    assert comp.level == "episode, seeds of one side"
    assert "the one-seed side's seed variance is untested" in verdict_level(comp)


def test_one_episode_gives_no_interval():
    from fsarbench.stats.intervals import mean_and_halfwidth

    mean, half, _ = mean_and_halfwidth(np.array([0.6]))
    assert mean == pytest.approx(0.6) and np.isnan(half)


def test_the_difference_ci_shown_beside_a_seed_level_p_is_seed_level():
    """The leaderboard printed the episode bootstrap's Δ CI beside a seed-level p: with
    several seeds it understated the uncertainty the p accounted for."""
    from fsarbench.stats.paired import compare_paired

    rng = np.random.default_rng(3)
    a = 0.6 + rng.normal(0, 0.05, (3, 1)) + rng.normal(0, 0.1, (3, 200))
    b = 0.6 + rng.normal(0, 0.05, (3, 1)) + rng.normal(0, 0.1, (3, 200))
    episode = compare_paired(a.mean(0), b.mean(0), n_boot=300)
    assert episode.diff_ci == (episode.ci_low, episode.ci_high)
    seeds = seed_level_comparison(a, b, n_boot=300)
    both = dataclasses.replace(episode, seed_level=seeds)
    assert both.diff_ci == (seeds.ci_low, seeds.ci_high)
    assert both.diff_ci[1] - both.diff_ci[0] > episode.ci_high - episode.ci_low


def test_hierarchical_bootstrap_does_not_depend_on_the_argument_order():
    """A's seeds were drawn before B's from one stream: compare A B and compare B A printed
    different seed-level p-values and intervals that were not mirror images."""
    from fsarbench.stats.hierarchical import hierarchical_bootstrap

    rng = np.random.default_rng(3)
    a = rng.integers(0, 6, (3, 80)) / 5
    b = rng.integers(0, 6, (2, 80)) / 5
    low, high, p = hierarchical_bootstrap(a, b, n_boot=300)
    back_low, back_high, back_p = hierarchical_bootstrap(b, a, n_boot=300)
    assert (back_low, back_high) == pytest.approx((-high, -low), abs=1e-12)
    assert back_p == p
    assert seed_level_comparison(a, b, paired=False, n_boot=300).p_bootstrap == p


@pytest.mark.parametrize("alpha", ["2", "0", "-0.1", "1", "x"])
def test_alpha_outside_zero_one_is_refused(alpha, capsys):
    from fsarbench.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "a", "b", "--runs", "nowhere", "--alpha", alpha])
    assert exit_info.value.code == 2
    assert "--alpha" in capsys.readouterr().err


def test_compare_warns_when_the_bootstrap_resolution_holds_a_verdict_back(tmp_path, capsys):
    """With one seed against three, the verdict's p is the seed-level bootstrap's p, which
    is never below 1/(B+1): with few resamples Holm could not pass it however different the
    systems were, and compare printed 'no significant difference' with no word of why."""
    from fsarbench.cli.main import main
    from fsarbench.report.demo import DemoSystem, write_demo_records

    systems = [DemoSystem("lead", train_seeds=(0, 1, 2)), DemoSystem("weak", noise=3.0)]
    write_demo_records(tmp_path, systems, settings=[(5, 1)], episodes=200)
    argv = ["compare", "lead", "weak", "--runs", str(tmp_path), "--alpha", "0.01", "--bootstrap"]
    assert main([*argv, "40"]) == 0  # the fewest resamples --bootstrap takes
    out = capsys.readouterr().out
    assert "no significant difference" in out
    assert "held back by the seed-level bootstrap's resolution" in out
    assert "--bootstrap 200 or more" in out
    assert main([*argv, "400"]) == 0
    out = capsys.readouterr().out
    assert "lead better" in out and "held back" not in out


def test_leaderboard_notes_verdicts_held_back_by_the_bootstrap_resolution(tmp_path, capsys):
    """The reviewer's case: one system with three seeds leads twelve single-seed systems;
    at --alpha 0.01 the bootstrap's floor 1/2001 times Holm's 24 tests could pass none, so
    every system shared rank 1 (42.10 beside 69.50), with nothing said."""
    from fsarbench.cli.main import main
    from fsarbench.report.demo import DemoSystem, write_demo_records

    systems = [DemoSystem("lead", train_seeds=(0, 1, 2))]
    systems += [DemoSystem(f"m{i}", noise=3.0 + 0.2 * i) for i in range(5)]
    write_demo_records(tmp_path, systems, settings=[(5, 1)], episodes=200)
    argv = ["leaderboard", "--runs", str(tmp_path), "--bootstrap", "40"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "held back by the seed-level bootstrap's resolution" in err
    assert "held back" in (tmp_path / "leaderboard.md").read_text()
    assert main([*argv[:-1], "2000"]) == 0
    assert "held back" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["compare a b", "leaderboard", "report"])
@pytest.mark.parametrize("value", ["0", "-5", "x"])
def test_bootstrap_must_be_a_positive_count(command, value, capsys):
    """--bootstrap 0 stopped in scipy ("n_resamples must be positive")."""
    from fsarbench.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--runs", "nowhere", "--bootstrap", value])
    assert exit_info.value.code == 2
    assert "--bootstrap" in capsys.readouterr().err


def test_compare_prints_no_discordant_counts_where_mcnemar_did_not_run(tmp_path, capsys):
    """Between entries of different training seeds McNemar has no p-value, and the row said
    'n/a / n/a (0:0)', which reads as "no discordant query"."""
    from fsarbench.cli.main import main
    from fsarbench.report.demo import DemoSystem, write_demo_records

    systems = [DemoSystem("lead", train_seeds=(0, 1)), DemoSystem("weak", noise=3.0)]
    write_demo_records(tmp_path, systems, settings=[(5, 1)], episodes=60)
    assert main(["compare", "lead", "weak", "--runs", str(tmp_path), "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "n/a / n/a (n/a)" in out and "(0:0)" not in out


@pytest.mark.parametrize("stand_in", ["null", "none"])
def test_a_user_grid_can_refuse_a_stand_in_for_its_datasets(tmp_path, capsys, stand_in):
    """A user grid naming hmdb51 ran synth instead when hmdb51 was not found (exit 0), and
    could not ask for an error: stand_in had to name a generated dataset."""
    path = tmp_path / "grids.yaml"
    path.write_text(
        f"grids: {{mine: {{datasets: [hmdb51], methods: [protonet], stand_in: {stand_in}}}}}\n"
    )
    out = tmp_path / "o"
    args = ["run", "--grids", str(path), "--table", "mine", "--root", str(tmp_path / "none")]
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "grid 'mine': dataset 'hmdb51' is not present and the grid sets stand_in: null" in err
    assert not (out / "records").exists()
    from fsarbench.experiments.grids import grid_stand_in

    assert grid_stand_in("mine") is None  # what tables are told: no dataset named 'none'


@pytest.mark.parametrize("seeds", [(0, 1), (None, 0)])
def test_mcnemar_pairs_one_record_a_side_whatever_its_seed_label(tmp_path, seeds):
    """McNemar ran only when both sides listed the same training seeds: a run of seed 0
    against one of seed 1 (or an eval record, seed None) printed 'no significant difference'
    for a 36.8-point gap it never tested."""
    manifest, rng = _manifest(300), np.random.default_rng(3)
    _save(tmp_path, manifest, "A", seeds[0], 0.9, rng)
    _save(tmp_path, manifest, "B", seeds[1], 0.5, rng)
    entries = load_entries(tmp_path)
    (comp,) = compare_systems(tmp_path, entries, "A", "B", test="mcnemar", n_boot=200)
    assert comp.stats.p_mcnemar < 1e-10 and comp.verdict == "A better"


def test_wilcoxon_verdicts_need_the_mean_test_to_agree():
    """Signed ranks test a shift of the per-episode differences, not their mean: A ahead by
    a fifth on 301 of 400 episodes and behind by three fifths on 99 (mean +0.2 points, t-test
    p 0.91) got Wilcoxon p 0.014 and the verdict 'A better'."""
    from fsarbench.stats.paired import compare_paired

    ep_b = np.full(400, 0.6)
    ep_a = np.where(np.arange(400) < 301, 0.8, 0.0)
    comp = compare_paired(ep_a, ep_b, n_boot=100)
    assert comp.p_wilcoxon < 0.05 < 0.5 < comp.p_ttest and comp.diff > 0
    assert comp.p_value("p_wilcoxon") == comp.p_ttest
    shifted = compare_paired(np.full(400, 0.8) - 0.1 * (np.arange(400) % 2), ep_b, n_boot=100)
    assert shifted.p_value("p_wilcoxon") == max(shifted.p_wilcoxon, shifted.p_ttest) < 1e-10


class _Planned:
    """An rng whose draws make the queries at ``wrong`` (flat indices) miss."""

    def __init__(self, wrong=()):
        self.wrong = list(wrong)

    def random(self, shape):
        draws = np.zeros(shape)
        draws.flat[self.wrong] = 1.0
        return draws


def test_a_verdict_resting_on_a_few_differing_queries_gets_a_note(tmp_path, capsys):
    """'perfect better' at t-test p 0.045 rested on 4 wrong queries in 300 episodes, where
    the exact McNemar p beside it was 0.125, without a word."""
    from fsarbench.cli.main import main

    manifest = _manifest(300)
    nq = manifest.query.shape[1]
    _save(tmp_path, manifest, "perfect", None, 0.99, _Planned())
    _save(tmp_path, manifest, "near", None, 0.99, _Planned([0, 3 * nq, 7 * nq, 11 * nq]))
    assert main(["compare", "perfect", "near", "--runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "perfect better" in out
    assert "rests on 4 queries where perfect and near differ (4:0) of 3000" in out
    assert "McNemar's p on them is 0.125" in out
