"""Shared fixtures: tiny random-weight open_clip models and a tiny cache built on offline MNIST."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a network
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def tiny():
    from residual_core.engine.models import load_clip

    return load_clip("tiny-random")


@pytest.fixture(scope="session")
def tiny_images():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory) -> Path:
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    root = tmp_path_factory.mktemp("caches")
    return precompute(PrecomputeSpec(model="tiny-random", dataset="mnist-offline", split="test", limit=300,
                                     cache_dir=str(root), batch_size=64))


@pytest.fixture(scope="session")
def tiny_cache(tiny_cache_dir):
    from residual_core.read.cache import load_cache

    return load_cache(tiny_cache_dir)


def pytest_configure(config):
    # tests/synthetic.py is a helper module imported by several test files
    import sys

    sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture()
def cache_root(tiny_cache_dir, tmp_path) -> Path:
    """This test's own cache folder, holding a copy of the session's tiny cache and nothing else: what a
    test builds there (val caches, λ) no other test sees."""
    import shutil

    root = tmp_path / "caches"
    shutil.copytree(tiny_cache_dir, root / tiny_cache_dir.name)
    return root


@pytest.fixture()
def open_app(monkeypatch):
    """open_app(root, query) -> the app run once on cache folder ``root`` with URL ``query``. The server's
    offer is cached per process, so it is cleared first: no test sees another's folder."""
    from streamlit.testing.v1 import AppTest

    def run(root: Path, query: dict) -> AppTest:
        from dashboard.state import _process_offer

        monkeypatch.setenv("RESIDUAL_CACHE", str(root))
        _process_offer.clear()
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=120)
        at.query_params.update(query)
        return at.run()

    return run

