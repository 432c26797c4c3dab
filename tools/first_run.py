"""First run as a newcomer meets it: ``python tools/first_run.py [--repeats 2]``.

An empty cache folder, `streamlit run app.py`, the default page in headless Chromium at 1280×720; click
"Build the cache" as soon as it shows, and time until the first figure is drawn. Prints one JSON line:
seconds from opening the page (server already up) and from the click, per run.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import CHROMIUM_ARGS, chromium, running_app  # noqa: E402


def one_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cache, running_app({"RESIDUAL_CACHE": cache}) as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            opened = time.perf_counter()
            page.goto(url)
            button = page.locator('[data-testid="stMain"]').get_by_role("button", name="Build the cache")
            button.wait_for(timeout=120_000)
            prompt = time.perf_counter()
            button.click()
            clicked = time.perf_counter()
            page.get_by_text("Building the cache").first.wait_for(timeout=30_000)
            progress_shown = time.perf_counter()
            page.locator(".js-plotly-plot").first.wait_for(timeout=600_000)
            drawn = time.perf_counter()
            browser.close()
    return {"prompt_s": prompt - opened, "progress_shown_s": progress_shown - clicked,
            "first_figure_s": drawn - opened, "first_figure_after_click_s": drawn - clicked}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    runs = [one_run() for _ in range(parser.parse_args().repeats)]
    figures = sorted(r["first_figure_s"] for r in runs)
    print(json.dumps({"runs": runs, "first_figure_s_min": figures[0], "first_figure_s_median": figures[len(figures) // 2]}))


if __name__ == "__main__":
    main()
