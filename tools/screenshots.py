"""Take the README's screenshots from the real app: ``python tools/screenshots.py [--size 1920x1080]``.

Builds the caches the pages show (what the dashboard's "Build the cache" buttons would build: the default
view, the shape val/test caches of the Specialisation page, the shape train/val/test caches of the
Alignment page at 10,000 train images, the last as ``python tools/results_table.py`` leaves them), starts
`streamlit run app.py` on a free local port, opens each page in headless Chromium and writes
docs/screenshots/*.png at 1280×720, or out/screenshots/<size>/*.png at another --size.
"""

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
OUT = ROOT / "docs" / "screenshots"
VIEWS = [("heads_map", "/?metric=accuracy_alone", "Heads map"),
         ("head_explorer", "/head_explorer?layer=3&head=6&pc=0", "Head explorer"),
         ("probe", "/probe?probe_row=0", "Probe"),
         ("ablation_lab", "/ablation_lab?layer=3&head=6", "Ablation lab"),
         ("specialisation", "/specialisation?dataset=demo-world/shape", "Specialisation"),
         ("alignment", "/alignment?dataset=demo-world/shape&n=10000", "Alignment"),
         ("compare", "/compare", "Compare")]


def build_caches() -> None:
    from residual_core.align import split_caches
    from residual_core.pipeline import DEFAULT_DATASET, PrecomputeSpec, precompute

    precompute(PrecomputeSpec(model="demo", dataset=DEFAULT_DATASET, split="test", limit=2000))
    for split in ("val", "test"):
        precompute(PrecomputeSpec(model="demo", dataset="demo-world/shape", split=split, limit=2000))
    split_caches(model="demo", dataset="demo-world/shape", limit=10_000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="1280x720")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    out = OUT if args.size == "1280x720" else ROOT / "out" / "screenshots" / args.size
    build_caches()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.address", "127.0.0.1"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        out.mkdir(parents=True, exist_ok=True)
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": width, "height": height})
            for name, path, title in VIEWS:
                page.goto(f"http://127.0.0.1:{port}{path}")
                page.get_by_role("heading", name=title).wait_for(timeout=600_000)
                try:  # a page shows its figures once its caches (and, on Alignment, a trained method) exist
                    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
                except PlaywrightTimeout:
                    print("no figure on", name, "after 60 s: the screenshot shows the page as it is")
                page.wait_for_timeout(4000)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                print("wrote", out / f"{name}.png")
            browser.close()
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
