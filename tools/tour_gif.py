"""The demo tour as an animated GIF for the README: ``python tools/tour_gif.py`` (run tools/screenshots.py first:
it builds the caches the tour reads).

Plays /present?tour=demo in headless Chromium at 1280×720, pressing → between steps and T on the steps with a
live toggle (a frame before, a frame after), and writes docs/tour.gif at 960×540.
"""

import io
import json
import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from serve import CHROMIUM_ARGS, chromium, running_app  # noqa: E402

OUT = ROOT / "docs" / "tour.gif"


def _settle(page) -> None:
    page.wait_for_timeout(800)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=300_000)
    page.wait_for_timeout(2200)


def main() -> None:
    steps = json.loads((ROOT / "assets" / "tours" / "demo.json").read_text())["steps"]
    frames: list[tuple[Image.Image, int]] = []
    with running_app() as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(f"{url}/present?tour=demo&step=1")
        page.locator(".tour-title").wait_for(timeout=300_000)
        for number, step in enumerate(steps, 1):
            _settle(page)
            frames.append((Image.open(io.BytesIO(page.screenshot())), 3200))
            if step.get("control"):
                page.locator("body").press("t")
                _settle(page)
                frames.append((Image.open(io.BytesIO(page.screenshot())), 4200))
            if number < len(steps):
                page.locator("body").press("ArrowRight")
                page.wait_for_function(f"() => location.search.includes('step={number + 1}')", timeout=60_000)
        browser.close()
    # every frame whole, with its own palette: delta frames let one slide's bars show through the next
    small = [frame.convert("RGB").resize((960, 540), Image.LANCZOS).quantize(colors=128) for frame, _ in frames]
    small[0].save(OUT, save_all=True, append_images=small[1:], duration=[d for _, d in frames], loop=0,
                  optimize=False, disposal=2)
    print("wrote", OUT, f"{len(small)} frames, {OUT.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
