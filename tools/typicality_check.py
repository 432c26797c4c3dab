"""How well the probe's off-distribution warning separates: false alarms on the world's own held-out scenes, hits on
real photographs (scikit-learn's two sample photos, and 20 random crops of each) and on real MNIST digits.

    python tools/typicality_check.py [--model demo] [--dataset demo-world/shape] [--limit 1000]

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

from residual_core.cache import copy_f32, load_cache  # noqa: E402
from residual_core.datasets import load_dataset  # noqa: E402
from residual_core.models import load_clip  # noqa: E402
from residual_core.pipeline import PrecomputeSpec, precompute  # noqa: E402
from residual_core.probe import probe_images  # noqa: E402
from residual_core.typicality import ALARM  # noqa: E402


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


def flagged(loaded, cache, images: list[Image.Image]) -> np.ndarray:
    out = []
    for start in range(0, len(images), 64):
        out.append(probe_images(loaded, cache, images[start:start + 64]).typicality < ALARM)
    return np.concatenate(out)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="demo")
    parser.add_argument("--dataset", default="demo-world/shape")
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args()
    common = dict(model=args.model, dataset=args.dataset, limit=args.limit)
    cache = load_cache(precompute(PrecomputeSpec(split="test", **common)))
    held_out = load_cache(precompute(PrecomputeSpec(split="val", basis_from=str(cache.path), **common)))
    loaded = load_clip(args.model)
    # held-out scenes through the same reader as a probe: their embeddings and coefficients in the test basis
    from residual_core.typicality import typicality_model

    scores = copy_f32(held_out.head_scores).transpose(2, 0, 1)  # [n, U, n_pcs]
    false_alarms = typicality_model(cache).typicality(copy_f32(held_out.output), scores) < ALARM
    photo = flagged(loaded, cache, photos())
    mnist = load_dataset("mnist-offline", "test")
    digits = flagged(loaded, cache, [mnist.image(i) for i in range(0, 1000, 5)])
    print(json.dumps({"model": args.model, "dataset": args.dataset, "fitted_on": cache.n_images,
                      "false_alarms": f"{false_alarms.sum()} of {len(false_alarms)} held-out scenes "
                                      f"({false_alarms.mean():.1%})",
                      "photos": f"{photo.sum()} of {len(photo)} (the two full photos: {photo[:2].tolist()})",
                      "digits": f"{digits.sum()} of {len(digits)} real MNIST digits"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
