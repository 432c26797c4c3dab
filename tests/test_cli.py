import json

import pytest

from residual_core.__main__ import main


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
    from residual_core.__main__ import build_parser

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
