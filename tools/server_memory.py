"""Memory a real server holds for uploads, during a burst and after the browsers close.

    python tools/server_memory.py [--sessions 4] [--files 8] [--after 90]

Starts `streamlit run app.py` on a free local port, opens the Probe page in ``--sessions`` headless Chromium
contexts at once, each uploading ``--files`` 16-bit 4000×4000 TIFFs (32 MB each, the hostile case of
tools/upload_budget.py), waits until every page shows its prediction, closes every browser, then sends nothing
more and samples the server's resident memory for ``--after`` seconds. Prints one JSON line: the warm baseline,
the peak, and the memory still held at each time after the sessions closed.
"""

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from serve import CHROMIUM_ARGS, chromium, serving  # noqa: E402

PAGE = "/probe?model=demo&dataset=demo-world/shape&split=test&n=1000"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tiffs(folder: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 65535, (4000, 4000), dtype=np.uint16)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "TIFF")  # mode I;16, uncompressed: 32 MB
        path = folder / f"photo_{i}.tif"
        path.write_bytes(buffer.getvalue())
        paths.append(str(path))
    return paths


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--after", type=int, default=90, help="seconds sampled after the browsers close")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, serving() as (url, server), sync_playwright() as play:
        files = tiffs(Path(tmp), args.files)
        browser = play.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        warm = browser.new_page(viewport={"width": 1280, "height": 720})
        warm.goto(url + PAGE)
        warm.get_by_text("Top-5 prediction").first.wait_for(timeout=240_000)  # model loaded, cache opened
        warm.close()
        time.sleep(3)
        baseline, peak, sampling = rss_mb(server.pid), [0.0], [True]

        def sample() -> None:
            while sampling[0]:
                peak[0] = max(peak[0], rss_mb(server.pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        contexts = [browser.new_context(viewport={"width": 1280, "height": 720}) for _ in range(args.sessions)]
        pages = [c.new_page() for c in contexts]
        for page in pages:
            page.goto(url + PAGE)
        for page in pages:
            page.locator("input[type=file][accept*='.png']").first.wait_for(state="attached", timeout=120_000)
            page.locator("input[type=file][accept*='.png']").first.set_input_files(files)
        for page in pages:
            page.get_by_text("photo_0.tif").first.wait_for(timeout=300_000)
            page.get_by_text("Top-5 prediction").first.wait_for(timeout=300_000)
        during = rss_mb(server.pid)
        for context in contexts:
            context.close()
        browser.close()
        closed = time.monotonic()
        held = {}
        for mark in sorted({5, 10, 20, 30, 60, 90, args.after}):
            if mark > args.after:
                continue
            time.sleep(max(0.0, closed + mark - time.monotonic()))
            held[f"{mark}s"] = round(rss_mb(server.pid))
        sampling[0] = False
        print(json.dumps({"sessions": args.sessions, "files_each": args.files, "baseline_mb": round(baseline),
                          "with_sessions_open_mb": round(during), "peak_mb": round(max(peak[0], during)),
                          "after_close_mb": held}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
