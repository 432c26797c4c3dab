"""Every command's --help works, and every number or text argument has a range and a one-line refusal that comes
before any model or cache is loaded (table-driven over all commands)."""

import pytest

from residual_core.cli import main as cli


def _commands() -> list[str]:
    parser = cli.build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    return sorted(sub.choices)


def test_the_program_and_every_command_print_their_help(capsys):
    for argv in [["--help"]] + [[command, "--help"] for command in _commands()]:
        assert cli.main(argv) == 0, argv
        assert "usage:" in capsys.readouterr().out, argv
    assert {"describe", "maps", "scorecard", "search", "bench", "precompute"} <= set(_commands())


BAD = [  # command line, the option the refusal must name
    *[(["describe", "--texts", v], "--texts") for v in ("0", "-1", "20000000", "x", "²")],
    *[(["describe", "--method", "weights", "--directions", v], "--directions") for v in ("0", "-1")],
    (["describe", "--method", "weights", "--texts", "0"], "--texts"),
    *[(["search", "a red object", "--dataset", "d", "--top", v], "--top") for v in ("0", "-1")],
    (["search", "  ", "--dataset", "d"], "query"),
    *[(["scorecard", "--seeds", v], "--seeds") for v in ("0", "-1")],
    (["scorecard", "--limit", "0"], "--limit"),
    (["maps", "--image", "x.png", "--out", "o", "--text", ""], "--text"),
    (["maps", "--image", "x.png", "--out", "o", "--pc", "0"], "--pc"),
    (["precompute", "--limit", "-5"], "--limit"),
    (["precompute", "--batch-size", "0"], "--batch-size"),
    (["precompute", "--workers", "-1"], "--workers"),
    (["precompute", "--seed", "-1"], "--seed"),
    (["verify", "--n-images", "0"], "--n-images"),
    (["specialize", "--n-random", "0"], "--n-random"),
    (["align", "--epochs", "0"], "--epochs"),
    (["geometry", "--limit", "1e3"], "--limit"),
    (["bench", "--repeats", "0"], "--repeats"),
    (["bench", "--scale", "--sizes", "-1"], "--sizes"),
]


@pytest.mark.parametrize("argv, option", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_number_or_text_out_of_range_is_refused_in_one_line(argv, option, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and option in err, err


@pytest.fixture()
def no_model(monkeypatch):
    """A check that needs no model must come before one is loaded: loading one fails the test."""
    import residual_core.engine.models
    import residual_core.build.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a model or cache was loaded before the arguments were checked")

    monkeypatch.setattr(residual_core.engine.models, "load_clip", refuse)
    monkeypatch.setattr(residual_core.build.pipeline, "precompute", refuse)


def test_maps_checks_its_image_and_output_before_loading_anything(tmp_path, capsys, no_model):
    image = tmp_path / "big.png"
    with open(image, "wb") as handle:  # a sparse 4 GB file: refused from its size, never read
        handle.truncate(4 << 30)
    under_a_file = tmp_path / "a_file"
    under_a_file.write_text("x")
    cases = [(["--image", str(image), "--out", str(tmp_path / "o")], "more than the 50 MB"),
             (["--image", str(tmp_path / "none.png"), "--out", str(tmp_path / "o")], "cannot be read"),
             (["--image", "/dev/zero", "--out", str(tmp_path / "o")], "not a regular file"),
             (["--image", str(image), "--out", str(under_a_file / "sub")], "--out"),
             (["--image", str(image), "--out", str(tmp_path / "o"), "--pc", "1"], "--head")]
    for args, expected in cases:
        assert cli.main(["maps", "--model", "demo", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err and "unexpected" not in err, err


def test_a_checkpoint_that_cannot_load_leaves_no_cache_folder(tmp_path, capsys):
    bad = tmp_path / "my_clip.pt"
    bad.write_bytes(b"not a checkpoint")
    root = tmp_path / "caches"
    assert cli.main(["precompute", "--model", f"residual-tiny:{bad}", "--dataset", "mnist-offline", "--limit", "10",
                     "--cache-dir", str(root)]) == 2
    assert "error:" in capsys.readouterr().err
    assert not root.exists() or not any(root.iterdir())


def test_a_maps_png_has_a_title_a_scale_and_the_map_apart_from_the_image(tmp_path):
    import numpy as np
    from PIL import Image

    from residual_core.cli.maps import overlay_png

    red_scene = np.zeros((48, 48, 3), np.uint8)
    red_scene[..., 0] = 228  # red shapes everywhere: a red overlay on them could not be read
    patches = np.zeros((6, 6))
    patches[2, 3] = 0.5
    overlay_png(red_scene, patches, tmp_path / "m.png", "L3H6: push toward 'circle shapes'", "push")
    picture = np.asarray(Image.open(tmp_path / "m.png"))
    assert picture.shape[:2] == (48 * 4 + 70, 3 * 48 * 4 + 40)
    middle = picture[24 + 2 * 32 + 16, 10 + 192 + 10 + 3 * 32 + 16]  # the strongest patch in the map-alone panel
    quiet = picture[24 + 16, 10 + 192 + 10 + 16]
    assert tuple(middle) == (214, 39, 40) and tuple(quiet) == (235, 235, 235)
    assert (picture[:20, :300] < 128).any()  # the title is drawn
