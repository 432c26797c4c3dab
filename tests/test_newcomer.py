"""The path of a researcher who brings their own checkpoint and images, as the README tells it: files on disk,
then every command and every page, each image encoded once, and heads described in words about photos."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from residual_core.cli.main import main
from residual_core.engine.textbank import PHOTO_BANK_PATH, load_bank

PAGES = ["dashboard/pages/2_head_explorer.py", "dashboard/pages/3_probe.py", "dashboard/pages/4_ablation_lab.py",
         "dashboard/pages/9_search.py", "dashboard/pages/10_scorecard.py"]


@pytest.fixture(scope="module")
def own(tmp_path_factory, tiny):
    """A saved checkpoint (the tiny architecture, seeded weights) and a folder of 2 classes × 15 photos."""
    root = tmp_path_factory.mktemp("own")
    ckpt = root / "my clip.safetensors"  # a space in the path, as users have
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(ckpt))
    rng = np.random.default_rng(0)
    for cls, colour in (("kestrel", (200, 120, 40)), ("heron", (60, 90, 200))):
        (root / "photos" / cls).mkdir(parents=True)
        for i in range(15):
            pixels = np.clip(rng.normal(colour, 30, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "photos" / cls / f"{i}.jpg")
    return f"residual-tiny:{ckpt}", f"folder:{root / 'photos'}", root / "caches"


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_every_command_reads_one_cache_and_describes_heads_in_words_about_photos(own, capsys, tmp_path):
    model, dataset, caches = own
    common = ["--model", model, "--dataset", dataset, "--cache-dir", str(caches)]
    assert main(["precompute", *common]) == 0
    capsys.readouterr()
    assert main(["describe", *common]) == 0
    labels = {p["label"] for h in _json(capsys)["heads"] for p in h["poles"]}
    assert labels <= {"kestrel", "heron", None}  # what the model reads in the images: the folder's classes
    assert main(["describe", *common, "--method", "textspan", "--texts", "3"]) == 0
    described = _json(capsys)
    texts = [t for head in described["heads"] for t in head["texts"]]
    assert texts and set(texts) <= set(load_bank(PHOTO_BANK_PATH))  # words about photos, not the demo world's
    assert main(["search", *common, "a photo of a bird"]) == 0
    capsys.readouterr()
    image = next((Path(dataset[len("folder:"):]) / "heron").iterdir())
    assert main(["maps", *common, "--image", str(image), "--out", str(tmp_path / "maps")]) == 0
    capsys.readouterr()
    assert main(["scorecard", *common]) == 0
    assert _json(capsys)["pole_purity_mean"] is not None
    assert len([p for p in caches.iterdir() if (p / "manifest.json").is_file()]) == 1  # encoded once


def test_the_dashboard_opens_on_the_researchers_model_and_folder_and_every_page_draws(own, open_app, monkeypatch):
    model, dataset, caches = own
    if not caches.is_dir() or not any(caches.iterdir()):
        from residual_core.build.pipeline import PrecomputeSpec, precompute

        precompute(PrecomputeSpec(model=model, dataset=dataset, cache_dir=str(caches)))
    monkeypatch.setenv("RESIDUAL_MODELS", model)
    monkeypatch.setenv("RESIDUAL_DATASETS", dataset)
    at = open_app(caches, {})  # no link: the server's own model and dataset, and the cache the CLI built
    assert (at.session_state.model, at.session_state.dataset) == (model, dataset)
    assert at.session_state.cache_path and not at.exception
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not [e.value for e in at.error], (page, [e.value for e in at.error])
