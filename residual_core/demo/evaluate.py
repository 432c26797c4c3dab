"""Measure the demo model with the engine itself: ``python -m residual_core.demo.evaluate``.

1. Zero-shot accuracy of every factor on the held-out test world (its own seed and MNIST digits).
2. Head specialisation: heads ranked by S (accuracy of the head alone) on the val world; the top
   5 % sets of two factors compared (Jaccard); each set mean-ablated on the test world, measuring how
   much it shrinks each task's mean correct-class margin (correct logit − best other), against random
   head sets of the same size (mean over 10 draws).
Writes assets/demo/evaluation.json; the model card quotes it.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from residual_core.read.ablation import AblationMask, ablate_embeddings, evaluate
from residual_core.read.cache import Cache, load_cache
from residual_core.data.world import FACTORS
from residual_core.engine.models import ASSETS
from residual_core.build.pipeline import PrecomputeSpec, precompute
from residual_core.analysis.specialize import jaccard, top_heads, top_k
from residual_core.engine.units import head_label

OUT = ASSETS / "demo" / "evaluation.json"


def margins(cache: Cache, embeddings: np.ndarray) -> np.ndarray:
    """Correct-class logit minus the best other, CLIP-style (cosine × logit scale): [n_images]."""
    emb = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    logits = float(cache.manifest["logit_scale"]) * emb @ cache.classifier
    rows = np.arange(len(logits))
    correct = logits[rows, cache.labels]
    logits[rows, cache.labels] = -np.inf
    return correct - logits.max(1)


def shrink(cache: Cache, heads: list[tuple[int, int]]) -> dict[str, float]:
    mask = AblationMask(heads=frozenset(heads), mode="mean")
    before = margins(cache, cache.output).mean()
    after = margins(cache, ablate_embeddings(cache, mask)).mean()
    result = evaluate(cache, mask)
    return {"margin_before": float(before), "margin_after": float(after),
            "relative_shrink": float(1 - after / before), "accuracy_before": result.baseline_accuracy,
            "accuracy_after": result.accuracy}


def run(model: str, cache_dir: str | None, factors: tuple[str, str], limit: int | None, draws: int = 10) -> dict:
    kwargs = {"model": model, "limit": limit} | ({"cache_dir": cache_dir} if cache_dir else {})
    test = {f: load_cache(precompute(PrecomputeSpec(dataset=f"demo-world/{f}", split="test", **kwargs)))
            for f in FACTORS}
    val = {f: load_cache(precompute(PrecomputeSpec(dataset=f"demo-world/{f}", split="val", **kwargs)))
           for f in factors}
    report: dict = {"model": model, "n_test": test[factors[0]].n_images, "n_val": val[factors[0]].n_images,
                    "zero_shot_test_accuracy": {f: c.baseline_accuracy() for f, c in test.items()},
                    "decomposition_rel_err": max(c.manifest["max_rel_err"] for c in test.values())}
    units = test[factors[0]].units
    k = top_k(units.n_heads_total)  # 5 % of the heads, at least 2
    chosen = {f: [units.head_at(u) for u in top_heads(val[f], k)] for f in factors}
    report["k"] = k
    report["top_heads"] = {f: [head_label(l, h) for l, h in v] for f, v in chosen.items()}
    report["jaccard"] = jaccard(chosen[factors[0]], chosen[factors[1]])
    rng = np.random.default_rng(0)
    all_heads = [(l, h) for l in range(test[factors[0]].n_layers) for h in range(test[factors[0]].n_heads)]
    random_sets = [[all_heads[i] for i in rng.choice(len(all_heads), k, replace=False)] for _ in range(draws)]
    effects = {}
    for source in factors:
        row = {target: shrink(test[target], chosen[source]) for target in factors}
        for target in factors:
            draws_shrink = [shrink(test[target], heads)["relative_shrink"] for heads in random_sets]
            row[target]["random_relative_shrink_mean"] = float(np.mean(draws_shrink))
            row[target]["random_relative_shrink_std"] = float(np.std(draws_shrink))
        effects[f"ablate_top_{source}_heads"] = row
    report["effects"] = effects
    checks = {}
    for own, other in (factors, factors[::-1]):
        row = effects[f"ablate_top_{own}_heads"]
        own_shrink, other_shrink = row[own]["relative_shrink"], row[other]["relative_shrink"]
        random_shrink = row[own]["random_relative_shrink_mean"]
        checks[f"{own}: own/other shrink ≥ 3"] = own_shrink >= 3 * max(other_shrink, 1e-9)
        checks[f"{own}: own/random shrink ≥ 3"] = own_shrink >= 3 * max(random_shrink, 1e-9)
    checks["jaccard ≤ 0.5"] = report["jaccard"] <= 0.5
    report["checks"] = checks
    return report


def group_accuracy(weights: str, split: str = "test") -> dict:
    """Zero-shot shape accuracy of a model (``residual-demo`` weights at ``weights``) on a world split, per group
    (shape × colour): the mean, the majority groups' (each shape in its tied colour), the minority's, the worst group's."""
    import torch

    from residual_core.data.world import CLASSNAMES, TEMPLATES, labels_of, world
    from residual_core.demo.shortcut import majority
    from residual_core.demo.train import normalise
    from residual_core.engine.models import load_clip
    from residual_core.engine.zeroshot import build_classifier

    loaded = load_clip(f"residual-demo:{weights}")
    scenes, images = world(split)
    with torch.no_grad():
        feats = torch.cat([loaded.model.encode_image(normalise(images[i:i + 500], "cpu"), normalize=True)
                           for i in range(0, len(images), 500)]).numpy()  # [n, d_embed]
    classifier = build_classifier(loaded, CLASSNAMES["shape"], TEMPLATES["shape"]).numpy()  # [d_embed, 6]
    right = (feats @ classifier).argmax(1) == labels_of(scenes, "shape")  # [n]
    colours = labels_of(scenes, "colour")
    shapes = labels_of(scenes, "shape")
    groups = {(s, c): right[(shapes == s) & (colours == c)].mean() for s in range(len(FACTORS["shape"]))
              for c in range(len(FACTORS["colour"])) if ((shapes == s) & (colours == c)).any()}
    tied = majority(scenes)
    worst = min(groups, key=groups.get)
    return {"split": split, "images": len(scenes), "mean": float(right.mean()), "majority": float(right[tied].mean()),
            "minority": float(right[~tied].mean()), "worst_group": float(groups[worst]),
            "worst_group_is": f"{FACTORS['shape'][worst[0]]} × {FACTORS['colour'][worst[1]]}",
            "groups": len(groups)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m residual_core.demo.evaluate", description=__doc__)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    report = run(args.model, args.cache_dir, ("colour", "shape"), args.limit)
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
