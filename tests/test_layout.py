"""Projector layout in a real browser, every page at 1280×720 and 1920×1080 on the demo model: nothing overflows
sideways, the page's key figure or number is on screen without scrolling, axis labels are at least 14 px,
thumbnails are upscaled as pixels, and there is no exception box and no console error."""

import re
from pathlib import Path

import pytest

from browser_server import CHROMIUM, require_browser, serve_dashboard
from dashboard import navigation

ROOT = Path(__file__).resolve().parent.parent
sync_api = require_browser()
pytestmark = pytest.mark.slow

SIZES = [(1280, 720), (1920, 1080)]
BASE = "model=demo&dataset=demo-world/shape&split=test&n=2000"
# each page (its path from the one page list), what must be fully on screen (a CSS selector), and its title
KEY = {"Heads map": ".js-plotly-plot", "Head explorer": '[data-testid="stImage"]', "Probe": ".js-plotly-plot",
       "Ablation lab": '[data-testid="stMetricValue"]', "Specialisation": ".js-plotly-plot",
       "Alignment": '[data-testid="stAlert"], .js-plotly-plot', "Compare": ".js-plotly-plot",
       "Search": '[data-testid="stMain"] [data-testid="stForm"]',
       "Scorecard": '[data-testid="stMain"] [data-testid="stButton"]'}
PAGES = [("/" + navigation.page(title).url_path, selector, title) for title, selector in KEY.items()]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    caches = tmp_path_factory.mktemp("layout")
    for dataset, split in (("demo-world/shape", "test"), ("demo-world/shape", "val"), ("demo-world/colour", "test")):
        precompute(PrecomputeSpec(model="demo", dataset=dataset, split=split, limit=2000, cache_dir=str(caches)))
    yield from serve_dashboard(caches)


@pytest.fixture(scope="module")
def browser(server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage",
                                                                     "--disable-background-networking"])
        yield browser
        browser.close()


def _open(browser, url: str, size: tuple[int, int], title: str | None):
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Streamlit itself first asks <page>/_stcore/health and host-config on a page's own URL (404), then the root
    page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400
            and not re.search(r"/_stcore/(health|host-config)$", r.url) else None)
    # a fetch that could not reach its host (say, off this machine); a rerun cancelling a load is not one
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} {r.failure}")
            if "ERR_ABORTED" not in (r.failure or "") else None)
    page.goto(url)
    if title:
        page.get_by_role("heading", name=title).first.wait_for(timeout=180_000)
    page.wait_for_timeout(500)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=180_000)
    page.wait_for_timeout(1500)  # figures draw after the script finishes
    return page, errors


def _settle(page, selector: str) -> None:
    """Wait until the script has finished and the key element stays put for half a second: the layout asserted
    is the one that stays. (A fresh-venv run once found the figure of Probe and Specialisation far below where
    it draws, most likely measured mid-run: on a slow first start the status widget may not show yet when
    _open looks.)"""
    key = page.locator(selector).first
    key.wait_for(timeout=120_000)
    last = None
    for _ in range(60):
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"], "
                               "[data-stale=\"true\"]')", timeout=180_000)
        box = key.bounding_box()
        if box is not None and box == last:
            return
        last = box
        page.wait_for_timeout(500)


def _check(page, errors: list[str], selector: str, size: tuple[int, int]) -> None:
    _settle(page, selector)
    assert page.locator('[data-testid="stException"]').count() == 0
    overflow = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stMain"], [data-testid="stMain"] *')]
        .filter(e => e.scrollWidth > e.clientWidth + 2 && e.clientWidth > 20
                     && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX)
                     && !e.closest('[data-testid="stDataFrame"]') && !e.closest('.js-plotly-plot'))
        .map(e => (e.getAttribute('data-testid') || e.className || e.tagName)
                  + ' ' + e.scrollWidth + '>' + e.clientWidth)""")
    assert not overflow, f"scrolls sideways at {size}: {overflow[:3]}"
    # a data grid's own scroller lies beyond its frame and is clipped by it: the frame itself is what must fit
    wide = page.evaluate("""() => Math.max(...[...document.querySelectorAll('[data-testid="stMain"] *')]
        .filter(e => !e.parentElement.closest('[data-testid="stDataFrame"]'))
        .map(e => e.getBoundingClientRect().right))""")
    assert wide <= size[0] + 1, f"something reaches {wide:.0f} px on a {size[0]} px screen"
    box = page.locator(selector).first.bounding_box()
    assert box and box["y"] >= 0 and box["y"] + min(box["height"], 0.6 * size[1]) <= size[1] + 1, \
        f"{selector} is at y={box and box['y']:.0f} (height {box and box['height']:.0f}) on a {size[1]} px screen"
    ticks = page.evaluate("() => [...document.querySelectorAll('.xtick text, .ytick text')]"
                          ".map(t => parseFloat(getComputedStyle(t).fontSize))")
    assert not ticks or min(ticks) >= 14, f"axis labels of {min(ticks)} px"
    blurry = page.evaluate("() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
                           ".filter(i => getComputedStyle(i).imageRendering !== 'pixelated').length")
    assert blurry == 0
    # an HTTP error status is reported (or excused) by its response above; anything else counts
    real = [e for e in errors if not e.startswith("Failed to load resource: the server responded with a status")]
    assert not real, real[:3]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("path,selector,title", PAGES, ids=[p[2] for p in PAGES])
def test_every_page_fits_a_projector(browser, server, size, path, selector, title):
    page, errors = _open(browser, f"{server}{path}?{BASE}", size, title)
    try:
        _check(page, errors, selector, size)
    finally:
        page.close()


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_presenter_mode_fits_and_follows_the_keyboard(browser, server, size):
    page, errors = _open(browser, f"{server}/present?tour=demo&step=1", size, None)
    try:
        page.locator(".tour-title").wait_for(timeout=120_000)
        assert page.locator('[data-testid="stSidebar"]').is_hidden()
        _check(page, errors, ".js-plotly-plot", size)
        for key, step in (("ArrowRight", "2"), ("PageDown", "3"), ("Space", "4"), ("PageUp", "3"), ("ArrowLeft", "2")):
            page.locator("body").press(key)
            page.wait_for_function(f"() => location.search.includes('step={step}')", timeout=60_000)
        page.wait_for_timeout(1500)
        assert "shape head" in page.locator(".tour-title").inner_text().lower()
    finally:
        page.close()


OVERLAY = ".js-plotly-plot:has(.imagelayer image)"  # a Plotly figure whose first trace is the image itself


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
@pytest.mark.parametrize("where", ["probe", "slide"])
def test_the_map_overlay_is_on_screen_beside_the_image_with_a_labelled_scale(browser, server, size, where):
    url = f"{server}/probe?{BASE}" if where == "probe" else f"{server}/present?tour=demo&step=10"
    page, errors = _open(browser, url, size, "Probe" if where == "probe" else None)
    try:
        _check(page, errors, OVERLAY, size)
        overlay = page.locator(OVERLAY).first.bounding_box()
        assert overlay["x"] + overlay["width"] <= size[0] and overlay["y"] + 0.8 * overlay["height"] <= size[1]
        scale = page.locator(f"{OVERLAY} .cbtitle text").first.text_content()  # SVG text
        assert "push toward" in scale or "logit" in scale, scale
        if where == "probe":  # the image as given and its map share one row
            given = page.locator('[data-testid="stImage"]').first.bounding_box()
            assert given["x"] + given["width"] <= overlay["x"] + 1 and abs(given["y"] - overlay["y"]) < 0.5 * size[1]
    finally:
        page.close()
