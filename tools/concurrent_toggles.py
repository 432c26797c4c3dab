"""Several browser sessions toggling at once: ``python tools/concurrent_toggles.py [--sessions 4] [--threads 1 2]``.

Builds (or reuses) a 10,000-image cache of the demo model (demo-world/shape, train split), starts the dashboard
once per torch thread setting (RESIDUAL_THREADS), opens N headless Chromium sessions on the ablation lab and has
them click PC pills at the same time; each click is timed until that session's accuracy or "changed" figure
updates. Prints one JSON line: p50, p95 and max per setting, and the CPU seconds per click spent by the
dashboard's server, by the Chromium processes and by Playwright's drivers (all on this one machine), read from
/proc before and after the clicks: where the wait goes when browsers and server share the cores.
"""

import argparse
import contextlib
import json
import os
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


def session(url: str, clicks: int, start: threading.Barrier, end: threading.Barrier, out: list[float],
            errors: list[str]) -> None:
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
            end.wait(timeout=900)  # still open while the CPU counters are read
            browser.close()
    except Exception as err:  # noqa: BLE001 - reported, and the figure says how many clicks it holds
        errors.append(f"{type(err).__name__}: {str(err)[:200]}")
        end.abort()  # the counters are read at once rather than waiting for a session that will not come


TICK = os.sysconf("SC_CLK_TCK")


def cpu_by_kind(port: str) -> dict[str, float]:
    """CPU seconds used so far by the server on ``port``, by Playwright's node drivers, and by everything else on
    the machine (the Chromium processes, mostly: a renderer that exits takes its own counters with it, so the
    rest is the machine's total less the other two)."""
    totals = {"server": 0.0, "playwright": 0.0}
    for proc in Path("/proc").iterdir():
        try:
            command = b" ".join((proc / "cmdline").read_bytes().split(b"\0"))
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = ("server" if b"streamlit" in command and port.encode() in command else
                "playwright" if b"playwright" in command and b"node" in command else None)
        if kind:
            totals[kind] += (int(stat[11]) + int(stat[12])) / TICK  # utime + stime
    busy = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    machine = (sum(busy) - busy[3] - busy[4]) / TICK  # all but idle and iowait
    return totals | {"browsers_and_rest": machine - totals["server"] - totals["playwright"]}


def measure(threads: int, sessions: int, clicks: int) -> dict:
    times: list[float] = []
    errors: list[str] = []
    with running_app({"RESIDUAL_THREADS": str(threads)}) as url:
        port = url.rsplit(":", 1)[1]
        barrier, end = threading.Barrier(sessions + 1), threading.Barrier(sessions + 1)
        workers = [threading.Thread(target=session, args=(url, clicks, barrier, end, times, errors))
                   for _ in range(sessions)]
        for worker in workers:
            worker.start()
        barrier.wait(timeout=900)  # every session has its page open: count CPU from the first click
        before, began = cpu_by_kind(port), time.perf_counter()
        with contextlib.suppress(threading.BrokenBarrierError):
            end.wait(timeout=900)
        after, wall = cpu_by_kind(port), time.perf_counter() - began
        for worker in workers:
            worker.join()
    times.sort()
    per_click = {k: round((after[k] - before[k]) / max(len(times), 1), 3) for k in after}
    return {"threads": threads, "sessions": sessions, "clicks": len(times), "errors": errors[:3],
            "cpu_s_per_click": per_click, "cores_busy": round(sum(after[k] - before[k] for k in after) / wall, 2),
            "wall_s": round(wall, 1),
            "p50_s": statistics.median(times) if times else None,
            "p95_s": times[min(len(times) - 1, int(0.95 * len(times)))] if times else None,
            "max_s": times[-1] if times else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--clicks", type=int, default=12)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    precompute(PrecomputeSpec(model="demo", dataset="demo-world/shape", split="train", limit=10_000))
    print(json.dumps([measure(t, args.sessions, args.clicks) for t in args.threads]))


if __name__ == "__main__":
    main()
