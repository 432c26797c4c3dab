"""What is read is what was verified: no check-then-read race, no cache under another's name, bounded manifests."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from residual_core.build import store
from residual_core.read.cache import load_cache
from residual_core.build.pipeline import PrecomputeSpec, precompute, prepare


def _bad_copy(path: Path) -> Path:
    """A same-size file with other content beside ``path`` (what a hostile writer would swap in)."""
    bad = path.with_name(".bad-" + path.name)
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(255 - b for b in data[-8:])
    bad.write_bytes(bytes(data))
    return bad


def test_a_file_swapped_after_its_check_is_not_what_is_read(cache_root, monkeypatch):
    """The writer swaps labels.npy right after the check passes (the race, made deterministic)."""
    folder = next(cache_root.iterdir())
    good = np.load(folder / "labels.npy").copy()
    bad = _bad_copy(folder / "labels.npy")
    originals = {name: getattr(store, name) for name in ("verify_file", "open_verified")}

    def swap_after(name):
        def checked(path, *args):
            result = originals[name](path, *args)
            if Path(path).name == "labels.npy":
                os.replace(bad, path)  # the verified name now holds other bytes
            return result
        return checked

    for name in originals:
        monkeypatch.setattr(store, name, swap_after(name))
    cache = load_cache(folder)
    assert np.array_equal(np.asarray(cache.labels), good)
    assert not cache.is_current()  # a rerun's check sees the replaced file and opens the cache again


def test_a_kept_cache_knows_when_a_file_was_replaced_even_by_a_good_copy(cache_root):
    folder = next(cache_root.iterdir())
    cache = load_cache(folder)
    assert cache.is_current()
    copy = folder / ".copy"
    shutil.copy2(folder / "output.npy", copy)
    os.replace(copy, folder / "output.npy")
    assert not cache.is_current()
    assert load_cache(folder).is_current()


def test_a_cache_folder_that_is_a_link_is_neither_built_through_nor_read(cache_root):
    target = next(cache_root.iterdir())
    before = store.file_digest(target / store.MANIFEST), store.file_digest(target / "head_scores.npy")
    spec = PrecomputeSpec(model="tiny-random", dataset="mnist-offline", split="test", limit=200,
                          cache_dir=str(cache_root), batch_size=64)
    link = prepare(spec).folder
    link.symlink_to(target, target_is_directory=True)
    with pytest.raises(store.CacheError, match="symbolic link"):
        precompute(spec)
    with pytest.raises(store.CacheError, match="symbolic link"):
        load_cache(link)
    assert (store.file_digest(target / store.MANIFEST), store.file_digest(target / "head_scores.npy")) == before


def test_a_cache_copied_under_another_key_is_refused(cache_root):
    folder = next(cache_root.iterdir())
    other = folder.with_name(folder.name.rsplit("__", 1)[0] + "__" + "0" * 20)
    shutil.copytree(folder, other)
    with pytest.raises(store.CacheError, match="other inputs"):
        load_cache(other)
    assert load_cache(folder).n_images == 300  # the original, under its own name, still opens


def test_a_huge_manifest_is_not_read(cache_root):
    from dashboard.offer import built_caches

    stray = cache_root / "unrelated"
    stray.mkdir()
    (stray / store.MANIFEST).write_text('{"pad": "' + "x" * (store.MAX_MANIFEST_BYTES + 10) + '"}')
    with pytest.raises(store.CacheError, match="longer than"):
        store.read_manifest(stray)
    assert [Path(b.path).name for b in built_caches(str(cache_root))] == [next(
        p for p in cache_root.iterdir() if p.name != "unrelated").name]


def test_a_manifest_that_omits_a_text_file_is_refused(cache_root):
    folder = next(cache_root.iterdir())
    manifest = json.loads((folder / store.MANIFEST).read_text())
    del manifest["files"]["texts.json"]
    store.write_manifest(folder, manifest)
    with pytest.raises(store.CacheError, match="texts.json"):
        load_cache(folder)


def test_an_object_array_is_never_unpickled(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    entry = store.describe_files(tmp_path, ["x.npy"])["x.npy"]
    handle, _ = store.open_verified(path, entry["size"], entry[store.DIGEST])
    with handle, pytest.raises(store.CacheError, match="Python objects"):
        store.npy_from_handle(handle, path)
