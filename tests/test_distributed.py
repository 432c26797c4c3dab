"""Scale-out of the build side: torchrun ranks (gloo on CPU), data-loader workers, basis-only passes, shared texts."""

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from residual_core.build import store
from residual_core.read.cache import load_cache
from residual_core.build.pipeline import PrecomputeSpec, precompute

ROOT = Path(__file__).resolve().parent.parent
N_IMAGES = 600  # three shards of 256: rank 0 writes shards 0 and 2, rank 1 shard 1


def _spec(cache_dir: Path, **changes) -> PrecomputeSpec:
    base = PrecomputeSpec(model="tiny-random", dataset="mnist-offline", split="train", limit=N_IMAGES,
                          cache_dir=str(cache_dir), batch_size=64)
    return replace(base, **changes)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(cache_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "residual_core", "precompute", "--model", "tiny-random",
           "--dataset", "mnist-offline", "--split", "train", "--limit", str(N_IMAGES), "--cache-dir", str(cache_dir),
           "--batch-size", "64", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    return precompute(_spec(tmp_path_factory.mktemp("single")))


def _same_arrays(a: Path, b: Path, atol: float = 1e-6) -> None:
    names = json.loads((a / store.MANIFEST).read_text())["files"]
    for name in names:
        if name.endswith(".npy"):
            x, y = np.load(a / name), np.load(b / name)
            assert x.shape == y.shape and np.allclose(x.astype(np.float64), y.astype(np.float64), atol=atol), name
        else:
            assert (a / name).read_text() == (b / name).read_text(), name


@pytest.mark.slow
def test_two_ranks_build_the_same_cache_as_one_process(single, tmp_path):
    done = _torchrun(tmp_path / "caches", "--keep-shards")
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "caches" / single.name  # the same folder name: the same key
    assert folder.is_dir(), sorted(p.name for p in (tmp_path / "caches").iterdir())
    _same_arrays(folder, single)
    report = json.loads(done.stdout.strip().splitlines()[-1])  # rank 0 prints the cache's JSON line
    assert report["cache"] == str(folder) and report["n_images"] == N_IMAGES
    # the shards the ranks wrote are ordinary shards: a single process resumes from them after a failure
    (folder / store.MANIFEST).unlink()
    shutil.rmtree(folder / "shards" / "00001")  # as if rank 1 had died before finishing its shard
    written = []
    import residual_core.build.shards as shards

    real = shards.write_shard
    shards.write_shard = lambda shard, *a, **k: (written.append(shard.name), real(shard, *a, **k))
    try:
        assert precompute(_spec(tmp_path / "caches")) == folder
    finally:
        shards.write_shard = real
    assert written == ["00001"]
    _same_arrays(folder, single)


def test_data_loader_workers_do_not_change_the_arrays(single, tmp_path):
    folder = precompute(_spec(tmp_path, workers=2))
    assert folder.name == single.name  # workers are not part of the key
    _same_arrays(folder, single, atol=0)


def test_a_basis_only_pass_gives_the_same_basis_and_serves_basis_from(single, tmp_path):
    basis = precompute(_spec(tmp_path, basis_only=True))
    assert basis.name != single.name  # a basis-only build has its own key
    manifest = store.read_manifest(basis)
    assert manifest["kind"] == "basis" and sorted(manifest["files"]) == sorted(
        ["head_mean.npy", "head_components.npy", "head_eigenvalues.npy"])
    assert not (basis / "head_scores.npy").exists() and not (basis / "shards").exists()
    for name in manifest["files"]:
        assert np.allclose(np.load(basis / name), np.load(single / name), atol=1e-6), name
    with pytest.raises(store.CacheError, match="basis-only"):
        load_cache(basis)
    test = load_cache(precompute(_spec(tmp_path, split="test", limit=120, basis_from=str(basis))))
    assert np.array_equal(test.head_components, load_cache(single).head_components)
    from residual_core.analysis.align_results import split_caches

    _, train, val, test = split_caches(basis_from=str(basis), model="tiny-random", dataset="mnist-offline",
                                       limit=90, cache_dir=str(tmp_path))  # align --basis-from: all three splits
    for cache in (train, val, test):
        assert np.array_equal(cache.head_components, np.load(basis / "head_components.npy").reshape(
            cache.head_components.shape))


def test_text_embeddings_are_computed_once_per_model_and_reused(tmp_path, monkeypatch):
    import residual_core.build.finalize as fin

    calls = []
    real = fin.embed_texts
    monkeypatch.setattr(fin, "embed_texts", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    first = precompute(_spec(tmp_path, split="val", limit=60))
    second = precompute(_spec(tmp_path, split="test", limit=60))
    assert len(calls) == 2  # the bank and the dataset's class prompts, embedded for the first cache only
    assert np.array_equal(np.load(first / "text_embeds.npy"), np.load(second / "text_embeds.npy"))
    shared = sorted((tmp_path / "text").glob("bank-*.npy"))
    assert len(shared) == 1 and len(list((tmp_path / "text").glob("prompts-*.npy"))) == 1
    shared[0].write_bytes(b"\x00" * shared[0].stat().st_size)  # damaged: recomputed, never used
    precompute(_spec(tmp_path, split="val", limit=61))
    assert len(calls) == 3
