"""``python -m residual_core bench --scale``: the read side at 10 k, 100 k and 1 M images (synthetic caches).

For 10 and 1,000 classes and each size: one process writes a synthetic ViT-B/32-shaped cache (12 × 12 heads,
66 PCs, 512-d) to disk a block at a time, and a fresh process opens it memory-mapped and measures, with one
torch thread and in CPU seconds of the engine call:
  open       the first open, with the baseline arg-max (streamed beyond ``IN_RAM_LOGITS``)
  live       one-PC and whole-head toggles (``LogitState``) on the live view the lab uses (``Cache.sample``,
             every image up to ``LIVE_IMAGES``, a stride beyond), p50/p95 of 15
  full       the same toggles on every image, where its logits fit in RAM
  streamed   one head off, exact on every image, a chunk at a time (``evaluate_streamed``)
  metrics    head metrics; specialisation's U|T scores (every head: two streamed passes), where it takes
             at most about 70 s (2·10¹² multiply-adds; its cost is n × heads × 66 × min(512, classes))
  align      one epoch of the fine method (the cache as train, val and test; read in chunks beyond 1 GB)
  memory     peak RSS, and peak anonymous memory (the process's own; the rest of RSS is memory-mapped cache
             pages, which the kernel shares and drops under pressure), sampled every 10 ms
Each size runs in fresh processes (``residual_core.bench.scale_probe``), so no cache of another size is mapped.
The 1 M case stores one layer (12 heads) to fit the disk and the time: a toggle touches one head, so its cost
does not depend on the heads stored; streamed passes and specialisation over all 144 heads are the
stored heads' time × 12 (stated in the output as ``per_144_heads``). ``--all-heads`` stores all 144 at 1 M
too (21 GB of disk at a time, about 45 min more: one epoch of λ reads every head): the memory of a whole
ViT-B cache of a million images, measured rather than extrapolated. Scaling exponent: the log-log slope
of the streamed evaluation from the smallest to the largest size.
"""

import json
import math
import subprocess
import sys
import tempfile
import time

SIZES = (10_000, 100_000, 1_000_000)
CLASSES = (10, 1_000)

def run_scale(sizes=SIZES, classes=CLASSES, all_heads: bool = False) -> dict:
    rows = []
    for n_classes in classes:
        for n in sizes:
            layers = 12 if n < 1_000_000 or all_heads else 1
            with tempfile.TemporaryDirectory() as tmp:
                args = [str(n), str(n_classes), str(layers), tmp]
                started = time.perf_counter()
                wrote = subprocess.run([sys.executable, "-m", "residual_core.bench.scale_probe", "write", *args],
                                       capture_output=True, text=True)
                written = time.perf_counter() - started
                out = wrote if wrote.returncode else subprocess.run(
                    [sys.executable, "-m", "residual_core.bench.scale_probe", "probe", *args], capture_output=True, text=True)
                if out.returncode != 0:
                    rows.append({"n_images": n, "n_classes": n_classes, "error": out.stderr.strip()[-300:]})
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({"n_images": n, "n_classes": n_classes, "heads_stored": layers * 12,
                             "write_s": written} | row)
    exponents = {}
    for n_classes in classes:
        ok = [r for r in rows if r["n_classes"] == n_classes and "error" not in r]
        if len(ok) >= 2:
            a, b = ok[0], ok[-1]
            per_head = [r["streamed_head_s"] for r in (a, b)]
            exponents[str(n_classes)] = math.log(per_head[1] / per_head[0]) / math.log(b["n_images"] / a["n_images"])
    return {"scale": rows, "streamed_scaling_exponent": exponents}


if __name__ == "__main__":
    print(json.dumps(run_scale()))
