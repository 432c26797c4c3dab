"""``python -m residual_core bench --scorecard``: the whole scorecard's time once its caches exist."""

from residual_core.bench.timing import best_of
from residual_core.explain.scorecard_run import build_scorecard


def run_scorecard_bench(model: str = "demo", limit: int = 2_000, repeats: int = 2,
                        cache_dir: str | None = None) -> dict:
    """``bench --scorecard``: the whole scorecard (caches read and verified, the model loaded, every method and
    baseline scored, the heatmaps) once its caches exist; the first, untimed run builds any that are missing."""
    build_scorecard(model, limit, cache_dir, seeds=1)
    last: dict = {}

    def run() -> None:
        last.update(build_scorecard(model, limit, cache_dir))

    whole = best_of(run, repeats)
    return {"model": model, "images_per_factor": last["n_images"], "scorecard_s": round(whole, 2),
            "scoring_s": round(last["seconds"], 2), "goal_s": 60, "repeats": repeats}
