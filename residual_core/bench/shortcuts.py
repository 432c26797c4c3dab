"""``python -m residual_core bench --shortcuts``: how long finding the heads behind a shortcut takes (issue 33).

On a ViT-B-32-shaped synthetic cache (12 × 12 heads, 66 PCs, 512-d, 10 classes; 10,000 images by default), with
40 groups (each class × one of 4 attribute values drawn at random):
  group_metric_ms     mean, per-group and worst-group accuracy from one set of predictions
  toggle_group_ms     one head toggled in the lab's running logits, then the group metric (p50 of ``repeats``)
  greedy_pass_s       one pass of the greedy search: each of the 144 heads switched off, measured, switched back
  greedy_s            the whole greedy search (up to 8 steps, stopping where no head lifts the worst group)
  greedy_pcs_pass_s   one pass of the PC search: 1,152 candidate PCs (each head's first 8), batched
  find_s              every method (words, contrast, greedy, 20 random draws) with the cache as val and test
Best of ``repeats`` runs for the seconds; CPU time is what the lab's thread gets, so these are wall seconds.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

from residual_core.bench.timing import best_of


def run_shortcuts_bench(n_images: int = 10_000, repeats: int = 3) -> dict:
    from residual_core.analysis.shortcuts import find_shortcuts, greedy, greedy_pcs
    from residual_core.bench.core import synthetic_cache
    from residual_core.read.groups import Groups, group_accuracy
    from residual_core.read.live import LogitState

    with tempfile.TemporaryDirectory() as tmp:
        cache = synthetic_cache(Path(tmp), n_images)
        attribute = np.random.default_rng(5).integers(0, 4, n_images)
        groups = Groups(index=cache.labels * 4 + attribute, names=tuple(f"{c} × {a}" for c in range(10)
                                                                            for a in range(4)), source="bench")
        state = LogitState(cache)
        right = state.result().predictions == cache.labels
        metric = best_of(lambda: group_accuracy(right, groups), 20)
        toggles = []
        for i in range(max(repeats, 15)):
            head = cache.units.head_at(i % cache.units.n_heads_total)
            started = time.perf_counter()
            state.toggle_head(*head)
            group_accuracy(state.result().predictions == cache.labels, groups)
            toggles.append(time.perf_counter() - started)
        steps: list = []
        greedy_s = best_of(lambda: steps.append(greedy(cache, groups)), repeats)
        one_pass = best_of(lambda: greedy(cache, groups, max_heads=1, max_mean_loss=-1.0), repeats)
        pcs_pass = best_of(lambda: greedy_pcs(cache, groups, max_pcs=1, max_mean_loss=-1.0), repeats)
        find = best_of(lambda: find_shortcuts(cache, cache, groups, groups), 1)
    return {"n_images": n_images, "heads": cache.units.n_heads_total, "groups": len(groups.names),
            "group_metric_ms": round(metric * 1e3, 3), "toggle_group_ms": round(float(np.median(toggles)) * 1e3, 2),
            "greedy_pass_s": round(one_pass, 2), "greedy_s": round(greedy_s, 2), "greedy_steps": len(steps[-1]),
            "greedy_pcs_pass_s": round(pcs_pass, 2),
            "find_s": round(find, 2)}
