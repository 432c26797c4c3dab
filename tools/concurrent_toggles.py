"""Several browser sessions toggling at once: ``python tools/concurrent_toggles.py [--sessions 4] [--threads 1 2]``.

Builds (or reuses) a 10,000-image cache of the demo model (demo-world/shape, train split), starts the dashboard
once per torch thread setting (RESIDUAL_THREADS), opens N headless Chromium sessions on the ablation lab and has
them click PC pills at the same time; each click is timed until that session's accuracy or "changed" figure
updates. Prints one JSON line: p50, p95 and max per setting.
"""

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
from serve import CHROMIUM_ARGS, chromium, running_app  # noqa: E402

QUERY = "model=demo&dataset=demo-world/shape&split=train&n=10000&layer=3&head=6"
CHANGED = """([a, b]) => { const m = document.querySelectorAll('[data-testid="stMetricValue"]');
  return m.length > 2 && (m[0].innerText !== a || m[2].innerText !== b); }"""


def session(url: str, clicks: int, start: threading.Barrier, out: list[float], errors: list[str]) -> None:
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"{url}/ablation_lab?{QUERY}")
            metric = page.locator('[data-testid="stMetricValue"]')
            metric.first.wait_for(timeout=600_000)
            page.wait_for_timeout(1500)
            start.wait(timeout=600)
            for i in range(clicks):
                values = [metric.nth(0).inner_text(), metric.nth(2).inner_text()]
                began = time.perf_counter()
                page.get_by_role("button", name=f"PC{1 + i % 3}", exact=True).click()
                page.wait_for_function(CHANGED, arg=values, timeout=60_000)
                out.append(time.perf_counter() - began)
                page.wait_for_timeout(200)
            browser.close()
    except Exception as err:  # noqa: BLE001 - reported, and the figure says how many clicks it holds
        errors.append(f"{type(err).__name__}: {str(err)[:200]}")


def measure(threads: int, sessions: int, clicks: int) -> dict:
    times: list[float] = []
    errors: list[str] = []
    with running_app({"RESIDUAL_THREADS": str(threads)}) as url:
        barrier = threading.Barrier(sessions)
        workers = [threading.Thread(target=session, args=(url, clicks, barrier, times, errors)) for _ in range(sessions)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    times.sort()
    return {"threads": threads, "sessions": sessions, "clicks": len(times), "errors": errors[:3],
            "p50_s": statistics.median(times) if times else None,
            "p95_s": times[min(len(times) - 1, int(0.95 * len(times)))] if times else None,
            "max_s": times[-1] if times else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--clicks", type=int, default=12)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    from residual_core.pipeline import PrecomputeSpec, precompute

    precompute(PrecomputeSpec(model="demo", dataset="demo-world/shape", split="train", limit=10_000))
    print(json.dumps([measure(t, args.sessions, args.clicks) for t in args.threads]))


if __name__ == "__main__":
    main()
