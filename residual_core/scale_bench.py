"""``python -m residual_core bench --scale``: the read side at 10 k, 100 k and 1 M images (synthetic caches).

For 10 and 1,000 classes and each size, in a fresh process each (so peak RSS is that size's own): one-PC
toggle p50/p95 and a whole-head toggle (``LogitState``, CPU seconds of the engine call, one torch thread),
head metrics, and peak RSS. ViT-B/32-shaped (12 × 12 heads, 66 PCs, 512-d), except that the 1 M case
stores one layer (12 heads) to fit this disk: a toggle touches one head, so its cost does not depend on how
many heads are stored; head metrics are then rescaled by 12 for all 144 heads (stated in the output).
The scaling exponent is the log-log slope of the toggle time from the smallest to the largest size.
"""

import json
import math
import subprocess
import sys
import tempfile
import time

SIZES = (10_000, 100_000, 1_000_000)
CLASSES = (10, 1_000)

_PROBE = """
import json, resource, statistics, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from residual_core.ablation import AblationMask, LogitState
from residual_core.bench import synthetic_cache
from residual_core.cache import head_metrics
n, classes, layers, folder = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
cache = synthetic_cache(folder, n, n_layers=layers, n_classes=classes)
state = LogitState(cache, AblationMask())
state.result()
rng = np.random.default_rng(1)
pc, head = [], []
for _ in range(15):
    l, h, k = int(rng.integers(layers)), int(rng.integers(12)), int(rng.integers(cache.n_pcs))
    t = time.process_time(); state.toggle_pc(l, h, k); state.result().accuracy; pc.append(time.process_time() - t)
    t = time.process_time(); state.toggle_head(l, h); state.result().accuracy; head.append(time.process_time() - t)
t = time.process_time(); head_metrics(cache); metrics = time.process_time() - t
pc.sort()
print(json.dumps({"pc_p50_ms": statistics.median(pc) * 1e3, "pc_p95_ms": pc[int(0.95 * (len(pc) - 1))] * 1e3,
                  "head_p50_ms": statistics.median(head) * 1e3, "metrics_s": metrics * 12 / layers,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_scale(sizes=SIZES, classes=CLASSES) -> dict:
    rows = []
    for n_classes in classes:
        for n in sizes:
            layers = 12 if n < 1_000_000 else 1
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", _PROBE, str(n), str(n_classes), str(layers), tmp],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    rows.append({"n_images": n, "n_classes": n_classes, "error": out.stderr.strip()[-300:]})
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({"n_images": n, "n_classes": n_classes, "heads_stored": layers * 12,
                             "wall_s": time.perf_counter() - started} | row)
    exponents = {}
    for n_classes in classes:
        ok = [r for r in rows if r["n_classes"] == n_classes and "error" not in r]
        if len(ok) >= 2:
            a, b = ok[0], ok[-1]
            exponents[str(n_classes)] = math.log(b["pc_p50_ms"] / a["pc_p50_ms"]) / math.log(b["n_images"] / a["n_images"])
    return {"scale": rows, "toggle_scaling_exponent": exponents}


if __name__ == "__main__":
    print(json.dumps(run_scale()))
