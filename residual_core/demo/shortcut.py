"""The shortcut world: the demo world with one spurious correlation in its training split only.

In training, a scene's colour follows its shape (circle → red, square → green, …) with probability TIE; val and
test stay the demo world's, every factor independent. A CLIP trained on it can read shape from colour, and then
fails on the minority groups (a shape in a colour it was rarely seen with): the ground truth for finding and
switching off the heads behind a shortcut. Trained by ``python -m residual_core.demo.train --world shortcut``.
"""

from dataclasses import replace

import numpy as np

from residual_core.data.world import FACTORS, Scene, digit_labels, render_scenes, sample_scenes

TIE = 0.98  # share of training scenes whose colour is the one their shape is tied to
PAIRS = {"circle": "red", "square": "green", "triangle": "blue", "diamond": "yellow", "cross": "magenta",
         "star": "cyan"}
SEED = 1500  # its own training scenes (the demo world's train split is seed 1000)


def tied_colour(shape: int) -> int:
    return FACTORS["colour"].index(PAIRS[FACTORS["shape"][shape]])


def shortcut_scenes(n: int, seed: int = SEED, tie: float = TIE) -> list[Scene]:
    """``n`` training scenes: the demo world's draws, then each colour set to its shape's with probability ``tie``."""
    scenes = sample_scenes(n, seed, digit_labels("train"))
    rng = np.random.default_rng(seed + 1)
    keep = rng.random(n) >= tie  # the minority: drawn colour kept
    return [s if keep[i] else replace(s, colour=tied_colour(s.shape)) for i, s in enumerate(scenes)]


def shortcut_world(n: int, workers: int = 1, tie: float | None = None) -> tuple[tuple[Scene, ...], np.ndarray]:
    """Scenes and images [n, 48, 48, 3] of the shortcut training world (``tie``: default TIE)."""
    scenes = shortcut_scenes(n, tie=TIE if tie is None else tie)
    return tuple(scenes), render_scenes("train", scenes, workers)


def majority(scenes) -> np.ndarray:
    """[n] bool: the scene's colour is its shape's tied colour (the majority group of training)."""
    return np.array([s.colour == tied_colour(s.shape) for s in scenes])
