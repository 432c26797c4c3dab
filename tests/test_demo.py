"""The attribute world is deterministic and its labels match its pictures; the shipped model loads."""

import json
import shutil

import numpy as np
import pytest

from residual_core.demo.captions import caption
from residual_core.data.world import CLASSNAMES, TEMPLATES
from residual_core.data.world import CENTRES, FACTORS, RGB, SIZE, Scene, render, sample_scenes, world
from residual_core.engine.models import ASSETS, ModelLoadError, load_clip

WEIGHTS = ASSETS / "demo" / "residual-demo.safetensors"


@pytest.fixture(scope="module")
def digits():
    from residual_core.data.world import _digits

    return _digits("test")


def test_world_is_deterministic():
    a_scenes, a_images = world.__wrapped__("test", 12)
    b_scenes, b_images = world.__wrapped__("test", 12)
    assert a_scenes == b_scenes and np.array_equal(a_images, b_images)
    c_scenes, _ = world.__wrapped__("val", 12)
    assert a_scenes != c_scenes


def test_factors_are_balanced_enough(digits):
    scenes = sample_scenes(3000, 7, digits[1])
    for name, values in FACTORS.items():
        counts = np.bincount([s.factor(name) for s in scenes], minlength=len(values))
        assert counts.min() > 0.6 * 3000 / len(values), name


@pytest.mark.parametrize("colour", range(len(FACTORS["colour"])))
def test_pixels_match_colour_and_position(colour, digits):
    rng = np.random.default_rng(colour)
    position = int(rng.integers(5))
    scene = Scene(shape=1, colour=colour, size=1, position=position, texture=0, count=0, digit=3,
                  digit_row=int(np.flatnonzero(digits[1] == 3)[0]))
    image = render(scene, digits[0], seed=colour).astype(int)
    assert image.shape == (SIZE, SIZE, 3)
    target = np.array(RGB[FACTORS["colour"][colour]])
    close = np.abs(image - target).max(-1) < 40  # the object's pixels, with colour jitter
    ys, xs = np.nonzero(close)
    assert len(ys) > 30
    cx, cy = CENTRES[FACTORS["position"][position]]
    assert abs(xs.mean() - cx) < 4 and abs(ys.mean() - cy) < 4


def test_count_and_size_change_the_coloured_area(digits):
    row = int(np.flatnonzero(digits[1] == 0)[0])
    areas = {}
    for count in range(3):
        for size in range(2):
            scene = Scene(0, 0, size, 4, 0, count, 0, row)
            image = render(scene, digits[0], seed=1).astype(int)
            areas[count, size] = int((np.abs(image - np.array(RGB["red"])).max(-1) < 40).sum())
    assert areas[0, 0] < areas[1, 0] < areas[2, 0]
    assert areas[0, 0] < areas[0, 1] and areas[2, 0] < areas[2, 1]


def test_captions_name_the_scene_and_classnames_are_in_label_order():
    scene = Scene(5, 2, 1, 0, 1, 2, 7, 0)
    texts = [caption(scene, np.random.default_rng(i)) for i in range(200)]
    joined = " ".join(texts)
    for word in ("star", "blue", "large", "top left", "striped", "three", "7"):
        assert word in joined
    assert all(w not in joined for w in ("circle", "red ", "bottom right", "checkered"))
    assert len(set(texts)) > 100  # varied templates, subsets and orders
    for factor, values in FACTORS.items():
        assert len(CLASSNAMES[factor]) == len(values)
        assert all(t.count("{}") == 1 for t in TEMPLATES[factor])
    assert CLASSNAMES["colour"][2].startswith("blue") and CLASSNAMES["digit"][7].endswith("7")


@pytest.mark.slow
def test_world_renders_in_parallel_and_lazily_to_the_same_pixels():
    from residual_core.data.world import render_one

    scenes, images = world.__wrapped__("val", 2_100)
    _, parallel = world.__wrapped__("val", 2_100, workers=2)  # two chunks in two processes
    assert np.array_equal(images, parallel)
    assert all(np.array_equal(render_one("val", i), images[i]) for i in (0, 1_000, 1_999))


def test_solo_captions_name_one_factor_only():
    scene = Scene(5, 2, 1, 0, 1, 2, 7, 0)
    texts = [caption(scene, np.random.default_rng(i), solo={"digit": 1.0}) for i in range(50)]
    assert all(("7" in t or "seven" in t) and "star" not in t and "blue" not in t for t in texts)
    mixed = [caption(scene, np.random.default_rng(i), solo={"digit": 0.0}) for i in range(50)]
    assert any("star" in t or "blue" in t for t in mixed)


def test_a_new_world_version_changes_the_cache_key(monkeypatch, tmp_path):
    import residual_core.data.world as world_module
    from residual_core.build.pipeline import PrecomputeSpec, prepare

    spec = PrecomputeSpec(model="tiny-random", dataset="demo-world/colour", split="val", limit=50,
                          cache_dir=str(tmp_path))
    before = prepare(spec).key
    monkeypatch.setattr(world_module, "WORLD_VERSION", "test-only")
    assert prepare(spec).key != before


needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason="demo weights not trained yet")


@needs_weights
def test_shipped_model_loads_checks_its_hash_and_is_exact():
    loaded = load_clip("demo")
    assert loaded.arch.n_layers >= 4 and loaded.arch.n_heads >= 8
    from residual_core.engine.decompose import decompose_images
    from residual_core.demo.train import normalise

    _, images = world.__wrapped__("test", 16)
    decomp = decompose_images(loaded.model, normalise(images, "cpu"))
    assert decomp.errors()[1] <= 1e-5
    assert WEIGHTS.stat().st_size + (ASSETS / "model_configs" / "residual-demo.json").stat().st_size < 30e6


@needs_weights
def test_zero_shot_accuracy_stays_near_the_model_card(tmp_path):
    import open_clip

    from residual_core.demo.train import zero_shot_accuracy

    card = json.loads((ASSETS / "demo" / "evaluation.json").read_text())["zero_shot_test_accuracy"]
    loaded = load_clip("demo")
    scenes, images = world.__wrapped__("test", 300)  # a fresh, smaller batch of the held-out world
    accuracy = zero_shot_accuracy(loaded.model, open_clip.get_tokenizer("residual-demo"), images, scenes, "cpu")
    learnt = [f for f, acc in card.items() if acc >= 0.85]  # a factor the card reports unlearnt is not held to it
    assert {"colour", "shape"} <= set(learnt)
    for factor in learnt:
        assert accuracy[factor] >= card[factor] - 0.08, (factor, accuracy[factor], card[factor])


@needs_weights
def test_corrupted_or_missing_weights_give_a_clear_error(tmp_path):
    copy = tmp_path / "residual-demo.safetensors"
    shutil.copy(WEIGHTS, copy)
    shutil.copy(WEIGHTS.with_name(WEIGHTS.name + ".sha256"), tmp_path / (copy.name + ".sha256"))
    with open(copy, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelLoadError, match="corrupted"):
        load_clip(f"residual-demo:{copy}")
    with pytest.raises(ModelLoadError, match="not found"):
        load_clip(f"residual-demo:{tmp_path / 'gone.safetensors'}")


def test_recipe_in_one_command_equals_its_stages_run_one_by_one(tmp_path, monkeypatch):
    import argparse

    import torch
    from safetensors.torch import load_file

    from residual_core.demo import train as train_module

    first = train_module.Stage(2, 1e-3, solo=("digit=0.3",), emphasis=("shape=0.8",))
    second = train_module.Stage(2, 5e-4, solo=("shape=0.5",), emphasis=("count=0.9",))
    monkeypatch.setattr(train_module, "RECIPE", (first, second))
    common = dict(batch_size=8, weight_decay=0.1, seed=0, n_train=32, n_val=16, eval_every=1000, device="cpu",
                  workers=1, world="demo", checkpoint_every=0, tie=None, freeze=None)

    def run(out, stage=None, init=None):
        custom = {} if stage is None else {"steps": stage.steps, "lr": stage.lr, "solo": list(stage.solo),
                                             "emphasis": list(stage.emphasis)}
        blank = dict.fromkeys(("steps", "lr", "solo", "emphasis"))
        args = argparse.Namespace(**common, **(blank | custom), init=init, out=str(out))
        return train_module.train(args)

    whole = run(tmp_path / "whole" / "w.safetensors")
    assert [s["steps"] for s in whole["stages"]] == [2, 2] and whole["stages"][1]["solo"] == {"shape": 0.5}
    run(tmp_path / "split" / "w.safetensors", first)
    after_first = load_file(str(tmp_path / "split" / "w.safetensors"))
    log = run(tmp_path / "split" / "w.safetensors", second, init=str(tmp_path / "split" / "w.safetensors"))
    assert len(log["stages"]) == 2  # the second run appended itself to the first one's log
    a, b = load_file(str(tmp_path / "whole" / "w.safetensors")), load_file(str(tmp_path / "split" / "w.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], after_first[k]) for k in a)  # the second stage did train


def test_the_model_cards_findings_are_read_from_the_sweep_not_typed():
    import copy

    from residual_core.demo.card import _findings

    sweep = json.loads((ASSETS / "demo" / "recipe_sweep.json").read_text())
    acc = json.loads((ASSETS / "demo" / "evaluation.json").read_text())["zero_shot_test_accuracy"]
    text = _findings(sweep, acc)
    changed = copy.deepcopy(sweep)
    next(v for v in changed["variants"] if v["variant"] == "S+")["final_val"]["shape"] = 0.51
    assert "83 % → 97 %" in text and "83 % → 51 %" in _findings(changed, acc)
    assert f"{100 * acc['shape']:.1f} % on the test world" in text
