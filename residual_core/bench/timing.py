"""The benches' one timing helper."""

import time


def best_of(run, repeats: int) -> float:
    """The shortest of ``repeats`` wall-clock runs of ``run()``, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)
