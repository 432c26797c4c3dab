"""The scale bench's two processes: ``write`` a synthetic cache, then ``probe`` it from a fresh process.

    python -m residual_core.bench.scale_probe write|probe N_IMAGES N_CLASSES N_LAYERS FOLDER

``probe`` prints one JSON line of CPU-second timings and peak memory (see bench/scale.py for what each figure is).
"""

import json
import resource
import sys
import threading
import time
from pathlib import Path


def _watch_anon(peak: list[int]) -> None:
    """Sample the process's anonymous resident memory (kB) every 10 ms into ``peak[0]``."""
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]))
        time.sleep(0.01)


def _cpu(run) -> float:
    started = time.process_time()
    run()
    return time.process_time() - started


def probe(n: int, classes: int, layers: int, folder: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    from residual_core.analysis.align import align
    from residual_core.analysis.specialize import head_scores
    from residual_core.bench.core import synthetic_cache, toggle_timings
    from residual_core.read.ablation import AblationMask, evaluate_streamed
    from residual_core.read.cache import LIVE_IMAGES, head_metrics

    peak_anon = [0]
    threading.Thread(target=_watch_anon, args=(peak_anon,), daemon=True).start()
    box = {}
    row = {"open_s": _cpu(lambda: box.update(c=synthetic_cache(folder, n, n_layers=layers, n_classes=classes)))}
    cache = box["c"]
    row["open_s"] += _cpu(cache.baseline_predictions)
    live = cache.sample(LIVE_IMAGES)
    row["live_images"] = live.n_images
    row["live"] = toggle_timings(live, 15, clock=time.process_time)
    row["full"] = toggle_timings(cache, 15, clock=time.process_time) if cache.logits_fit_in_ram and live is not cache \
        else None
    row["streamed_head_s"] = _cpu(lambda: evaluate_streamed(cache, AblationMask(heads=frozenset({(0, 0)}))))
    row["metrics_s"] = _cpu(lambda: head_metrics(cache))
    flops = 4 * n * layers * cache.n_heads * cache.n_pcs * min(512, classes)  # two [n, 66] × [66, k] passes per head
    per_all = cache.n_heads * 12 / max(layers * cache.n_heads, 1)  # the stored heads' time scaled to 144 heads
    row["specialise_UT_s_per_144_heads"] = _cpu(lambda: head_scores(cache, "U|T")) * per_all if flops <= 2e12 \
        else None
    row["align_fine_one_epoch_s"] = align(cache, cache, cache, "fine", epochs=1).seconds  # a timing, not a result
    time.sleep(0.05)
    row["rss_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["anon_peak_mb"] = peak_anon[0] / 1024
    return row


def main(argv: list[str]) -> int:
    what, n, classes, layers, folder = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4])
    if what == "write":
        from residual_core.bench.core import synthetic_cache

        synthetic_cache(folder, n, n_layers=layers, n_classes=classes)
    else:
        print(json.dumps(probe(n, classes, layers, folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
