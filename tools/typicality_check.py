"""How well the probe's off-distribution warning separates: false alarms on the world's own held-out scenes, hits on
real photographs (scikit-learn's two sample photos, and 20 random crops of each) and on real MNIST digits.

    python tools/typicality_check.py [--model demo] [--dataset demo-world/shape] [--limit 2000] [--refits 8]

It builds (or finds) the test cache the warning is fitted on and a val cache of the same size (held-out scenes the
fit never saw), then prints one JSON line with the three rates.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from residual_core.read.cache import load_cache  # noqa: E402

from residual_core.build.store import copy_f32
from residual_core.data.datasets import load_dataset  # noqa: E402
from residual_core.engine.models import load_clip  # noqa: E402
from residual_core.build.pipeline import PrecomputeSpec, precompute  # noqa: E402
from residual_core.read.probe import probe_images  # noqa: E402
from residual_core.read.typicality import ALARM, thumbnail  # noqa: E402


def photos(seed: int = 0) -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    full = [Image.fromarray(image) for image in load_sample_images().images]
    crops = []
    for image in full:
        width, height = image.size
        for _ in range(20):
            side = int(rng.integers(96, min(width, height)))
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            crops.append(image.crop((x, y, x + side, y + side)))
    return full + crops


def colour_wheel(size: int = 256) -> Image.Image:
    """A hue wheel: a graphic unlike both the world's scenes and photographs."""
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    hue = (np.arctan2(yy, xx) / (2 * np.pi)) % 1.0
    sat = np.clip(np.hypot(xx, yy), 0, 1)
    hsv = np.stack([hue * 255, sat * 255, np.full_like(hue, 255)], -1).astype(np.uint8)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def typicalities(loaded, cache, images: list[Image.Image], seed: int) -> np.ndarray:
    """[n] typicality of each image under the model refitted with ``seed``."""
    from residual_core.read.typicality import fit

    model = fit(cache, seed)
    out = []
    size = cache.thumbs.shape[1]
    for start in range(0, len(images), 64):
        chunk = images[start:start + 64]
        result = probe_images(loaded, cache, chunk)
        thumbs = np.stack([thumbnail(image, size) for image in chunk])
        out.append(model.typicality(result.decomposition.output.numpy(), result.scores, thumbs))
    return np.concatenate(out)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="demo")
    parser.add_argument("--dataset", default="demo-world/shape")
    parser.add_argument("--limit", type=int, default=2000, help="images of the cache fitted on (the default cache size)")
    parser.add_argument("--refits", type=int, default=5, help="seeds of the fit/calibration split")
    args = parser.parse_args()
    common = dict(model=args.model, dataset=args.dataset, limit=args.limit)
    cache = load_cache(precompute(PrecomputeSpec(split="test", **common)))
    held_out = load_cache(precompute(PrecomputeSpec(split="val", basis_from=str(cache.path), **common)))
    loaded = load_clip(args.model)
    from residual_core.read.typicality import fit

    scores = copy_f32(held_out.head_scores).transpose(2, 0, 1)  # [n, U, n_pcs] held-out scenes in the test basis
    mnist = load_dataset("mnist-offline", "test")
    others = {"photos": photos(), "colour wheel": [colour_wheel()],
              "digits": [mnist.image(i) for i in range(0, 1000, 5)]}
    report = {"model": args.model, "dataset": args.dataset, "fitted_on": cache.n_images, "alarm": ALARM, "refits": []}
    for seed in range(args.refits):
        false = fit(cache, seed).typicality(copy_f32(held_out.output), scores, np.asarray(held_out.thumbs)) < ALARM
        row = {"seed": seed, "false_alarms": round(float(false.mean()), 4)}
        for name, images in others.items():
            typical = typicalities(loaded, cache, images, seed)
            row[name] = {"flagged": f"{int((typical < ALARM).sum())} of {len(typical)}",
                         "highest_typicality": float(typical.max())}
        report["refits"].append(row)
        print(json.dumps(row), file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
