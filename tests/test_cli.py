import json

import numpy as np
import pytest

from residual_core.cli.main import main


def _last_json(capsys) -> dict | list:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_verify_prints_the_error_and_passes(capsys):
    assert main(["verify", "--model", "tiny-random", "--n-images", "3"]) == 0
    report = _last_json(capsys)
    assert report["rel_err"] <= 1e-5 and report["max_abs_err"] < 1e-4 and report["ok"] is True
    assert report["n_heads"] == 8 and report["n_units"] == 1 + 2 + 8


def test_listings_are_json(capsys):
    assert main(["datasets"]) == 0
    assert any(row["name"] == "mnist-offline" for row in _last_json(capsys))
    assert main(["models"]) == 0
    assert any(row["name"] == "demo" for row in _last_json(capsys))


def test_bad_input_exits_2_with_a_message(capsys):
    assert main(["verify", "--model", "ViT-Nope:foo"]) == 2
    assert "unknown architecture" in capsys.readouterr().err
    assert main(["precompute", "--model", "tiny-random", "--dataset", "no-such-set"]) == 2
    assert "python -m residual_core datasets" in capsys.readouterr().err


def test_precompute_and_specialize(tmp_path, capsys):
    args = ["--model", "tiny-random", "--dataset", "mnist-offline", "--limit", "80", "--cache-dir", str(tmp_path)]
    assert main(["precompute", *args]) == 0
    out = _last_json(capsys)
    assert out["n_images"] == 80 and out["cache"].startswith(str(tmp_path))
    assert main(["specialize", *args, "--n-random", "2"]) == 0
    report = _last_json(capsys)
    assert set(report["curves"]) == {"S", "U|T", "U", "random"} and report["k"][0] == 1


def test_align_trains_on_cached_coefficients_and_saves_lambda(tmp_path, capsys):
    args = ["--model", "tiny-random", "--dataset", "mnist-offline", "--limit", "80", "--cache-dir", str(tmp_path)]
    assert main(["align", *args, "--method", "coarse", "--epochs", "2"]) == 0
    printed = capsys.readouterr()
    report = json.loads(printed.out.strip().splitlines()[-1])
    assert report["method"] == "coarse" and report["n_params"] == 8
    assert 0 <= report["identity_test_acc"] <= 1 and "test at λ = 1" in printed.err  # beside zero-shot
    import numpy as np

    assert np.load(report["lambdas"]).shape == (8,)


def test_geometry_reports_every_head_and_cosines_to_another_dataset(tmp_path, capsys):
    args = ["--model", "tiny-random", "--dataset", "mnist-offline", "--limit", "80", "--cache-dir", str(tmp_path)]
    assert main(["geometry", *args, "--compare", "mnist-offline", "demo-world/colour"]) == 0
    report = _last_json(capsys)
    assert set(report["heads"]) == {"participation_ratio", "k90", "k99", "two_nn"}
    assert len(report["heads"]["k90"]) == 2 and len(report["heads"]["k90"][0]) == 4  # tiny: 2 layers × 4 heads
    same = report["spectral_cosine"]["mnist-offline"]
    assert all(abs(v - 1) < 1e-3 for row in same for v in row)  # a cache against itself
    assert any(v < 0.999 for row in report["spectral_cosine"]["demo-world/colour"] for v in row)


def test_defaults_finish_in_minutes_and_all_means_the_whole_split():
    from residual_core.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["align"]).limit == 10_000 and parser.parse_args(["specialize"]).limit == 2_000
    assert parser.parse_args(["align", "--limit", "all"]).limit is None
    with pytest.raises(SystemExit):
        parser.parse_args(["align", "--limit", "0"])


def test_commands_print_a_table_on_stderr_before_the_json(tmp_path, capsys):
    args = ["--model", "tiny-random", "--dataset", "mnist-offline", "--limit", "80", "--cache-dir", str(tmp_path)]
    assert main(["align", *args, "--method", "coarse", "--epochs", "1"]) == 0
    captured = capsys.readouterr()
    header = captured.err.splitlines()[-3]
    assert header.split()[:2] == ["method", "λ"] and "coarse" in captured.err.splitlines()[-1]
    assert json.loads(captured.out.strip().splitlines()[-1])["method"] == "coarse"


def _run(*args: str, env_extra: dict | None = None):
    """The CLI in its own process, stderr a pipe (not a terminal), as in a log or CI."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "RESIDUAL_DEBUG")} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "residual_core", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_long_steps_report_progress_when_stderr_is_not_a_terminal(tmp_path):
    args = ["--model", "tiny-random", "--dataset", "mnist-offline", "--limit", "80", "--cache-dir", str(tmp_path)]
    done = _run("specialize", *args, "--n-random", "2")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for step in ("encoding mnist-offline:val", "encoding mnist-offline:test", "merging shards into the cache",
                 "scoring heads and top-k curves"):
        started = [line for line in lines if line.startswith(step)]
        assert started, (step, lines[:20])
        assert "(100%)" in started[-1]  # its last line says it finished
    assert "\r" not in done.stderr  # lines, not a terminal's redrawn bar
    trained = _run("align", *args, "--method", "coarse", "--epochs", "2")
    assert trained.returncode == 0 and any(line.startswith("training coarse: 2/2 epoch") for line in
                                           trained.stderr.splitlines()), trained.stderr[-2000:]


def test_listing_models_and_datasets_imports_no_model_library(tmp_path):
    """`models` and `datasets` took ~22 s on a busy machine because the package import loaded torch, open_clip and
    transformers; datasets needs none of them, and models only open_clip's tag registry, which it reads once and
    keeps as a snapshot in the cache folder (build/registry.py): from the second listing on, no model library."""
    import subprocess
    import sys

    probe = ("import sys; from residual_core.cli.main import main; main({}); "
             "print(sorted(m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules), file=sys.stderr)")
    models = ["models", "--cache-dir", str(tmp_path)]
    for argv, allowed in ((["datasets"], []), (models, ["open_clip", "torch", "transformers"]), (models, [])):
        done = subprocess.run([sys.executable, "-c", probe.format(argv)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip().splitlines()[-1] == str(allowed), (argv, done.stderr[-300:])
    done = subprocess.run([sys.executable, "-c", "import sys, residual_core; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False"  # the package import itself loads nothing heavy


def test_a_value_error_from_a_bug_shows_its_traceback_with_residual_debug(monkeypatch, capsys):
    import residual_core.cli.listing as listing
    import residual_core.cli.main as cli

    def bug(args):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(listing, "cmd_datasets", bug)
    assert cli.main(["datasets"]) == 2  # without the flag: one line, exit 2
    assert "an internal invariant broke" in capsys.readouterr().err
    monkeypatch.setenv("RESIDUAL_DEBUG", "1")
    with pytest.raises(ValueError, match="invariant"):
        cli.main(["datasets"])


def test_describe_reads_every_head_from_the_cache_or_from_the_weights_alone(tmp_path, capsys):
    args = ["--model", "tiny-random", "--dataset", "mnist-offline", "--limit", "80", "--cache-dir", str(tmp_path)]
    assert main(["describe", *args]) == 0  # by default: each pole read from its images by the whole model
    report = _last_json(capsys)
    assert report["method"] == "images" and report["families"] == ["class"] and len(report["heads"]) == 8
    poles = [p for h in report["heads"] for p in h["poles"]]
    assert len(poles) == 8 * 3 * 2 and {p["pole"] for p in poles} >= {"PC1 +", "PC1 −", "PC3 −"}
    from residual_core.data.datasets import load_dataset

    classes = set(load_dataset("mnist-offline", "test").classnames)
    assert all((p["label"] in classes) == (p["eta2"] >= 0.2) for p in poles)  # a class, or no clear label
    assert all(("read as" in p["evidence"]) == (p["label"] is not None) for p in poles)
    assert main(["describe", *args, "--method", "textspan", "--texts", "4"]) == 0
    report = _last_json(capsys)
    assert report["method"] == "textspan" and len(report["heads"]) == 8
    assert all(len(h["texts"]) == 4 and 0 < sum(h["explained"]) <= 1 + 1e-9 for h in report["heads"])
    assert report["completeness"]["m"][-1] == 4 and len(report["completeness"]["accuracy"]) == len(
        report["completeness"]["m"])
    assert main(["describe", "--model", "tiny-random", "--method", "weights", "--texts", "2", "--directions", "2",
                 "--cache-dir", str(tmp_path)]) == 0  # no dataset: the weights alone
    weights = _last_json(capsys)
    assert len(weights["heads"]) == 8 and all(len(h["texts"]) == 2 for h in weights["heads"])


def test_search_ranks_heads_and_refuses_a_bad_query_in_one_line(tmp_path, capsys):
    args = ["--model", "tiny-random", "--dataset", "mnist-offline", "--limit", "80", "--cache-dir", str(tmp_path)]
    assert main(["search", *args, "the number seven", "--top", "3"]) == 0
    report = _last_json(capsys)
    assert report["query"] == "the number seven" and len(report["heads"]) == 3
    scores = [h["score"] for h in report["heads"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    for bad, what in (("", "empty"), ("%%% 42", "no words")):
        assert main(["search", *args, bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and what in err[0] and "Traceback" not in err[0]
    assert main(["describe", "--model", "tiny-random", "--cache-dir", str(tmp_path)]) == 2  # textspan needs data
    assert "--dataset" in capsys.readouterr().err


def test_scorecard_scores_every_method_against_the_worlds_ground_truth(tmp_path, capsys):
    assert main(["scorecard", "--model", "tiny-random", "--limit", "60", "--seeds", "2", "--cache-dir",
                 str(tmp_path)]) == 0
    report = _last_json(capsys)
    assert set(report["methods"]) == {"read from the images", "nearest texts per PC", "TextSpan", "weights' directions",
                                      "random directions", "random labels", "random heads", "heatmaps"}
    heatmaps = report["methods"].pop("heatmaps")
    assert 0 <= heatmaps["pointing_game"] <= 1 and 0 <= heatmaps["mass_on_objects_raw_attention"] <= 1
    for row in report["methods"].values():
        assert all(0 <= row[k] <= 1 for k in ("label_accuracy", "coverage", "best_eta_mean", "purity_mean", "labelled",
                                              "label_ap", "ap_ceiling"))
        assert row["label_ap"] <= row["ap_ceiling"] + 1e-9  # the ceiling is the best value the unit could name
        assert row["label_lift"] <= row["lift_ceiling"] + 1e-9 and row["lift_ceiling"] <= 1
    baselines = {"random directions", "random labels", "random heads"}
    for name, row in report["methods"].items():  # a baseline's row carries its spread over seeds, a method's none
        assert ("label_accuracy_std" in row) == (name in baselines), name
    assert isinstance(report["undetermined_heads"], int)
    assert report["unnameable"] == {}  # every factor's class prompts joined the bank: each value has a text
    curve = {c["threshold"]: c for c in report["abstention_curve"]}
    coverage = [c["coverage"] for c in report["abstention_curve"]]
    assert coverage == sorted(coverage, reverse=True) and curve[0.0]["coverage"] == 1.0  # a higher bar labels less
    images = report["methods"]["read from the images"]
    assert curve[0.2]["coverage"] == pytest.approx(images["labelled"])  # the shipped threshold is one point of it
    if images["labelled"] > 0:
        assert curve[0.2]["precision"] == pytest.approx(images["label_accuracy"])


def test_the_scorecards_bench_times_the_whole_scorecard_once_its_caches_exist(tmp_path):
    from residual_core.bench.scorecard import run_scorecard_bench

    report = run_scorecard_bench("tiny-random", 40, repeats=1, cache_dir=str(tmp_path))
    assert report["images_per_factor"] == 40
    assert report["scorecard_s"] >= report["scoring_s"] > 0
    assert len(list(tmp_path.glob("*demo-world-*__test__*"))) == 7  # built once, untimed, then read


def test_scorecard_off_the_demo_world_reports_agreement_and_purity(tmp_path, capsys):
    assert main(["scorecard", "--model", "tiny-random", "--dataset", "mnist-offline", "--limit", "60",
                 "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out.strip().splitlines()[-1])
    assert report["dataset"] == "mnist-offline" and report["n_images"] == 60
    assert len(report["heads"]) == 2 * 4 and {"nearest ↔ TextSpan", "shared_texts"} <= set(report["heads"][0])
    assert report["mean_agreement"]["data ↔ weights"] is not None  # the weights were read
    assert 0 < report["pole_purity_mean"] <= 1 and report["purest_poles"][0]["purity"] >= report["pole_purity_mean"]
    assert "no ground truth" in out.err and "texts two methods name" in out.err


def test_scorecard_on_a_fresh_world_builds_its_own_caches(tmp_path, capsys):
    from residual_core.read.cache import load_cache

    assert main(["scorecard", "--model", "tiny-random", "--limit", "40", "--seeds", "1", "--world-seed", "7000",
                 "--cache-dir", str(tmp_path)]) == 0
    report = _last_json(capsys)
    assert report["world_seed"] == 7000 and report["n_images"] == 40
    datasets = {load_cache(p).manifest["spec"]["dataset"] for p in tmp_path.iterdir() if (p / "manifest.json").exists()}
    assert datasets == {f"demo-world/{f}@7000" for f in ("shape", "colour", "size", "position", "texture", "count",
                                                        "digit")}
    assert main(["scorecard", "--world-seed", "x"]) == 2  # refused in one line before anything loads


def test_the_label_rules_are_scored_side_by_side(tmp_path):
    from residual_core.explain.scorecard_run import build_scorecard

    report = build_scorecard("tiny-random", 40, str(tmp_path), seeds=1)
    rules = report["label_rules"]
    assert set(rules) == {"top images", "shipped", "best AP", "random small value"}
    shipped = report["methods"]["read from the images"]
    assert rules["top images"]["units"] > 0  # the seeded tiny model labels some poles
    # the shipped rule is the leaderboard's row, on the same poles; its second parts only add to its AP
    assert rules["shipped"]["label_accuracy"] == pytest.approx(shipped["label_accuracy"])
    assert rules["shipped"]["label_ap"] == pytest.approx(shipped["label_ap"])
    assert rules["shipped"]["label_accuracy"] == pytest.approx(rules["top images"]["label_accuracy"])
    assert rules["shipped"]["label_ap"] >= rules["top images"]["label_ap"] - 1e-12
    assert rules["random small value"]["family"] == "size"  # the world's family with the fewest values
    assert all(r["units"] == rules["top images"]["units"] for r in rules.values())
    for r in rules.values():  # the share of the ceiling sits inside its bootstrap interval
        assert r["ap_share_low"] <= r["label_ap"] / r["ap_ceiling"] <= r["ap_share_high"]


def test_a_shares_bootstrap_interval_narrows_with_more_units():
    from residual_core.explain.scorecard_run import share_interval

    rng = np.random.default_rng(0)
    part, whole = rng.uniform(0.4, 0.6, 1_000), np.ones(1_000)
    few, many = share_interval(part[:20], whole[:20]), share_interval(part, whole)
    assert few[0] < many[0] <= part.mean() <= many[1] < few[1]
    assert share_interval(np.full(5, 0.3), np.full(5, 0.6)) == pytest.approx((0.5, 0.5))


def test_the_label_bench_times_reading_and_labelling():
    from residual_core.bench.words import image_label_timing

    report = image_label_timing(n=300, n_classes=10, repeats=1)
    assert set(report) == {"image_labels_read_s_300", "image_labels_288_poles_s_300"}
    assert all(v >= 0 for v in report.values())
