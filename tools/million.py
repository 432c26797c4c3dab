"""The dashboard on a million-image cache: ``python tools/million.py [--copies 100] [--cache-dir DIR]``.

No million-image dataset can be encoded on this CPU in reasonable time, so this writes a stand-in: the 10,000-image
demo cache (demo-world/shape, train) repeated ``--copies`` times, a block at a time, as a cache of the
1,000,000-image view of the same dataset, in its own folder (``--cache-dir``, default a folder under /tmp: never the
user's cache folder, since the stand-in's images repeat). Every number the dashboard shows on it must then equal
the 10,000-image cache's (a repeated image set has the same accuracy, means and basis), which this checks.

It then serves the dashboard on that folder, opens every page in headless Chromium at 1280×720 (screenshots in
out/million/), times PC toggles in the ablation lab (click → number), clicks "Exact on all", and prints one JSON
line: page load seconds, toggle p50/max, exact-on-all seconds and accuracy, and the server's peak memory.
"""

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
from serve import CHROMIUM_ARGS, chromium, running_app  # noqa: E402

from residual_core.build import store  # noqa: E402
from residual_core.build.pipeline import PrecomputeSpec, precompute, prepare  # noqa: E402

PER_IMAGE_LAST_AXIS = {"head_scores"}  # [U, n_pcs, n]; every other per-image array has images first
PER_IMAGE = ("head_scores", "mlps", "embed", "output", "ln", "thumbs", "positions", "labels")
PAGES = [("heads_map", "/", "Heads map"), ("head_explorer", "/head_explorer", "Head explorer"),
         ("probe", "/probe", "Probe"), ("ablation_lab", "/ablation_lab", "Ablation lab"),
         ("compare", "/compare", "Compare")]


def stand_in(cache_dir: Path, copies: int) -> tuple[Path, Path]:
    """(the 10,000-image cache, the stand-in of copies × 10,000 images) in ``cache_dir``."""
    base_spec = PrecomputeSpec(model="demo", dataset="demo-world/shape", split="train", limit=10_000,
                               cache_dir=str(cache_dir))
    small = precompute(base_spec)
    plan = prepare(PrecomputeSpec(**{**base_spec.__dict__, "limit": 10_000 * copies}))
    if (plan.folder / store.MANIFEST).exists():
        return small, plan.folder
    manifest = json.loads((small / store.MANIFEST).read_text())
    plan.folder.mkdir(parents=True, exist_ok=True)
    for name in manifest["files"]:
        stem = name[:-4]
        if stem not in PER_IMAGE:
            shutil.copyfile(small / name, plan.folder / name)
            continue
        part = np.load(small / name, mmap_mode="r")
        axis = part.ndim - 1 if stem in PER_IMAGE_LAST_AXIS else 0
        shape = list(part.shape)
        shape[axis] *= copies
        big, tmp = store.open_npy_writer(plan.folder / name, part.dtype.str, tuple(shape))
        n = part.shape[axis]
        for copy in range(copies):
            where = [slice(None)] * part.ndim
            where[axis] = slice(copy * n, (copy + 1) * n)
            big[tuple(where)] = part
        store.commit_npy(big, tmp, plan.folder / name)
    ids = json.loads((small / "image_ids.json").read_text())
    (plan.folder / "image_ids.json").write_text(json.dumps([f"{i} (copy {c})" for c in range(copies) for i in ids]))
    manifest |= {"key": plan.key, "inputs": plan.inputs, "n_images": manifest["n_images"] * copies,
                 "spec": manifest["spec"] | {"limit": 10_000 * copies},
                 "stand_in": f"the {manifest['n_images']:,}-image cache repeated {copies} times (tools/million.py)",
                 "files": store.describe_files(plan.folder, list(manifest["files"]))}
    store.write_manifest(plan.folder, manifest)
    return small, plan.folder


def _metric(page, label_start: str) -> str:
    return page.evaluate("""(start) => {
        for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
            const label = m.querySelector('[data-testid="stMetricLabel"]');
            const value = m.querySelector('[data-testid="stMetricValue"]');
            if (label && value && label.innerText.startsWith(start)) return value.innerText;
        }
        return null; }""", label_start)


def browse(url: str, query: str, out: Path) -> dict:
    from playwright.sync_api import sync_playwright

    port = url.rsplit(":", 1)[1]
    report: dict = {"page_s": {}, "server_peak_rss_mb_after": {}}  # peak RSS so far: where it rises, that page did it
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        for name, path, title in PAGES:
            began = time.perf_counter()
            page.goto(f"{url}{path}?{query}")
            page.get_by_role("heading", name=title).first.wait_for(timeout=600_000)
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=600_000)
            report["page_s"][name] = round(time.perf_counter() - began, 2)
            page.wait_for_timeout(4000)  # figures draw after the script finishes
            page.screenshot(path=str(out / f"{name}.png"))
            report["server_peak_rss_mb_after"][name] = _server_memory(port).get("VmHWM")
            if name == "ablation_lab":
                report |= _lab(page, out)
                report["server_peak_rss_mb_after"]["exact_on_all"] = _server_memory(port).get("VmHWM")
        browser.close()
    return report


def _lab(page, out: Path) -> dict:
    toggles = []
    values = "() => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')].map(m => m.innerText).join('|')"
    for i in range(8):
        before = page.evaluate(values)
        began = time.perf_counter()
        page.get_by_role("button", name=f"PC{1 + i % 3}", exact=True).click()
        page.wait_for_function(f"(b) => ({values})() !== b", arg=before, timeout=120_000)
        toggles.append(time.perf_counter() - began)
        page.wait_for_timeout(300)
    began = time.perf_counter()
    page.get_by_role("button", name="Exact on all").click()
    page.get_by_text("Accuracy on all").first.wait_for(timeout=600_000)
    exact_s = time.perf_counter() - began
    page.wait_for_timeout(1000)
    page.screenshot(path=str(out / "ablation_lab_exact.png"))
    return {"toggle_p50_s": statistics.median(toggles), "toggle_max_s": max(toggles), "exact_on_all_s": exact_s,
            "live_accuracy": _metric(page, "Accuracy"), "exact_accuracy": _metric(page, "Accuracy on all")}


def _server_memory(port: str) -> dict:
    """Peak RSS and current anonymous memory (MB) of the streamlit process serving ``port``."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            if b"streamlit" in b" ".join(command) and port.encode() in command:
                fields = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
                return {key: int(fields[key].split()[0]) // 1024 for key in ("VmHWM", "RssAnon", "RssFile")}
        except OSError:
            continue
    return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--cache-dir", default="/tmp/residual-million")
    args = parser.parse_args()
    started = time.perf_counter()
    small, big = stand_in(Path(args.cache_dir), args.copies)
    written = time.perf_counter() - started
    out = ROOT / "out" / "million"
    out.mkdir(parents=True, exist_ok=True)
    n = 10_000 * args.copies
    query = f"model=demo&dataset=demo-world/shape&split=train&n={n}&layer=3&head=6"
    with running_app({"RESIDUAL_CACHE": args.cache_dir}) as url:
        report = browse(url, query, out)
        report["server_memory_mb"] = _server_memory(url.rsplit(":", 1)[1])
    from residual_core.read.ablation import AblationMask, evaluate
    from residual_core.read.cache import load_cache

    off = AblationMask(pcs=frozenset({(3, 6, 0), (3, 6, 1)}))
    reference = load_cache(small)  # the 10,000 images the stand-in repeats: the same numbers, by construction
    report |= {"n_images": n, "write_s": round(written, 1), "screenshots": str(out),
               "small_cache_accuracy": f"{reference.baseline_accuracy():.2%}",
               # the lab's 8 clicks leave PC1 and PC2 of L3H6 off
               "small_cache_accuracy_L3H6_PC1_PC2_off": f"{evaluate(reference, off).accuracy:.2%}"}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
