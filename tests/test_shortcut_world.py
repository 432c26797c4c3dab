"""The shortcut world (colour tied to shape in training only) and a training run that resumes from its checkpoint."""

import argparse

import numpy as np
import pytest

from residual_core.demo.shortcut import PAIRS, TIE, majority, shortcut_scenes, tied_colour
from residual_core.data.world import FACTORS, scenes_of


def test_training_scenes_tie_colour_to_shape_and_test_scenes_do_not():
    scenes = shortcut_scenes(20_000)
    assert abs(majority(scenes).mean() - TIE) < 0.005
    assert all(FACTORS["colour"][tied_colour(FACTORS["shape"].index(s))] == c for s, c in PAIRS.items())
    test = scenes_of("test")
    assert abs(majority(test).mean() - 1 / len(FACTORS["colour"])) < 0.03  # balanced: the demo world's own
    minority = [s for s, m in zip(scenes, majority(scenes)) if not m]
    assert {s.shape for s in minority} == set(range(len(FACTORS["shape"])))  # every shape still meets other colours


@pytest.mark.slow
def test_a_stopped_training_run_resumes_to_the_same_weights(tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    from residual_core.demo import train

    def args(out, every):
        return argparse.Namespace(steps=4, lr=None, solo=None, emphasis=None, batch_size=16, weight_decay=0.1, seed=0,
                                  n_train=300, n_val=50, eval_every=2, device="cpu", out=str(out), init=None,
                                  workers=1, world="shortcut", checkpoint_every=every, tie=None, freeze=None)

    train.train(args(tmp_path / "whole" / "w.safetensors", 0))
    real, calls = train.zero_shot_accuracy, []

    def stop_at_the_second_evaluation(*a, **k):  # a stop after the step-2 checkpoint, before step 4
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train, "zero_shot_accuracy", stop_at_the_second_evaluation)
    out = tmp_path / "resumed" / "w.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train.train(args(out, 2))
    monkeypatch.setattr(train, "zero_shot_accuracy", real)
    capsys.readouterr()
    train.train(args(out, 2))
    assert "at step 2" in capsys.readouterr().out  # it did resume (a fresh run would give the same weights too)
    whole, resumed = load_file(tmp_path / "whole" / "w.safetensors"), load_file(out)
    assert all(np.array_equal(whole[k].numpy(), resumed[k].numpy()) for k in whole)


@pytest.mark.slow
def test_group_accuracy_splits_the_mean_into_majority_minority_and_the_worst_group():
    from residual_core.demo.evaluate import group_accuracy
    from residual_core.engine.models import ASSETS

    report = group_accuracy(str(ASSETS / "demo" / "residual-demo.safetensors"))
    assert report["groups"] == 48 and report["images"] == 2_000
    assert report["worst_group"] <= min(report["majority"], report["minority"]) <= report["mean"] + 0.05
    share = 1 / 8  # the test world is balanced: one scene in eight has its shape's tied colour
    assert report["mean"] == pytest.approx(share * report["majority"] + (1 - share) * report["minority"], abs=0.01)
