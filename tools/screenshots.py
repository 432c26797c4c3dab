"""Take the README's screenshots from the real app: ``python tools/screenshots.py [--size 1920x1080]``.

Builds the caches the pages show (what the dashboard's "Build" buttons would build: the default view, the shape
val cache of the Specialisation page, the shape train/val/test caches of the Alignment page at 10,000 train images,
the colour cache the Compare page and the demo tour need, MNIST's alignment for the tour's last step), starts
`streamlit run app.py` on a free local port, opens each page in headless Chromium (pressing Train on
Alignment, as a visitor would: it trains nothing until asked) and writes
docs/screenshots/*.png at 1280×720, or out/screenshots/<size>/*.png at another --size.
"""

import argparse
import sys
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
sys.path.insert(0, str(ROOT / "tools"))
from serve import CHROMIUM_ARGS, chromium, running_app  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
BASE = "model=demo&dataset=demo-world/shape&split=test&n=2000"
VIEWS = [("heads_map", f"/?{BASE}&metric=delta_acc_mean_ablated", "Heads map"),
         ("head_explorer", f"/head_explorer?{BASE}&pc=0", "Head explorer"),
         ("probe", f"/probe?{BASE}&probe_row=0", "Probe"),
         ("ablation_lab", f"/ablation_lab?{BASE}", "Ablation lab"),
         ("specialisation", f"/specialisation?{BASE}", "Specialisation"),
         ("alignment", "/alignment?model=demo&dataset=demo-world/shape&n=10000", "Alignment"),
         ("compare", f"/compare?{BASE}", "Compare"),
         ("search", "/search?model=demo&dataset=demo-world/colour&split=test&n=2000&query=a red object", "Search"),
         ("scorecard", "/scorecard?model=demo&dataset=demo-world/shape&split=test&n=2000", "Scorecard"),
         ("shortcuts", "/ablation_lab?model=demo-shortcut&dataset=demo-world/shape&split=test&n=2000", "Ablation lab"),
         ("present", "/present?tour=demo&step=4", None),
         ("present_shortcut", "/present?tour=demo&step=8", None),
         ("present_words", "/present?tour=demo&step=3", None)]
# What a visitor presses before the page has something to show (Alignment trains nothing until asked, Search
# runs the text tower only on a press).
PRESS = {"alignment": "Train", "search": "Search", "scorecard": "Score the explanations"}
# Texts clicked one after another (the lab's shortcut panel: open it, find, switch the greedy PCs off).
CLICKS = {"shortcuts": ("Groups and shortcuts", "Find shortcut heads", "Switch them off")}


def build_caches() -> None:
    from residual_core.analysis.align_results import split_caches, train_and_save, trained
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    for dataset, split in (("demo-world/shape", "test"), ("demo-world/shape", "val"), ("demo-world/colour", "test")):
        precompute(PrecomputeSpec(model="demo", dataset=dataset, split=split, limit=2000))
    for split in ("val", "test"):  # the lab's shortcut panel and the tour's shortcut step
        precompute(PrecomputeSpec(model="demo-shortcut", dataset="demo-world/shape", split=split, limit=2000))
    split_caches(model="demo", dataset="demo-world/shape", limit=10_000)
    train_dir = split_caches(model="demo", dataset="mnist-offline", limit=10_000)[0]
    for method in ("zeroshot", "fine"):  # what the tour's alignment step shows
        if trained(train_dir, method) is None:
            train_and_save(method, model="demo", dataset="mnist-offline", limit=10_000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="1280x720")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    out = OUT if args.size == "1280x720" else ROOT / "out" / "screenshots" / args.size
    build_caches()
    out.mkdir(parents=True, exist_ok=True)
    with running_app() as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        for name, path, title in VIEWS:
            page.goto(f"{url}{path}")
            target = page.get_by_role("heading", name=title).first if title else page.locator(".tour-title")
            target.wait_for(timeout=600_000)
            for text in CLICKS.get(name, ()):
                page.get_by_text(text, exact=True).first.click()
                page.wait_for_timeout(4000)
            if name in PRESS and not page.locator(".js-plotly-plot, .vega-embed, [data-testid=stDataFrame]").count():
                page.get_by_role("button", name=PRESS[name], exact=True).click()
            try:  # a page shows its figures once its caches (and, on Alignment, a trained method) exist
                page.locator(".js-plotly-plot, .vega-embed, [data-testid=stDataFrame], [data-testid=stImage]").first.wait_for(
                    timeout=60_000)
            except PlaywrightTimeout:
                print("no figure on", name, "after 60 s: the screenshot shows the page as it is")
            page.wait_for_timeout(3000)
            page.screenshot(path=str(out / f"{name}.png"))
            print("wrote", out / f"{name}.png")
        browser.close()


if __name__ == "__main__":
    main()
