"""Take the README's screenshots from the real app: ``python tools/screenshots.py`` (needs chromium).

Starts `streamlit run app.py` on a free local port, opens each page at 1280×720 in headless Chromium
on the default model and dataset, and writes docs/screenshots/*.png. The last three pages need caches
that a click would build; build them first with
``python -m residual_core specialize --dataset demo-world/shape --limit 2000`` and
``python tools/results_table.py``.
"""

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
VIEWS = [("heads_map", "/?metric=accuracy_alone", "Heads map"),
         ("head_explorer", "/head_explorer?layer=3&head=6&pc=0", "Head explorer"),
         ("probe", "/probe?probe_row=0", "Probe"),
         ("ablation_lab", "/ablation_lab?layer=3&head=6", "Ablation lab"),
         ("specialisation", "/specialisation?dataset=demo-world/shape", "Specialisation"),
         ("alignment", "/alignment?dataset=demo-world/shape&n=10000", "Alignment"),
         ("compare", "/compare", "Compare")]


def main() -> None:
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
        OUT.mkdir(parents=True, exist_ok=True)
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            for name, path, title in VIEWS:
                page.goto(f"http://127.0.0.1:{port}{path}")
                page.get_by_role("heading", name=title).wait_for(timeout=600_000)
                page.locator(".js-plotly-plot").first.wait_for(timeout=600_000)
                page.wait_for_timeout(4000)
                page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
                print("wrote", OUT / f"{name}.png")
            browser.close()
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
