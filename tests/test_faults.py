"""Fault injection on the build and read side: each fault is rebuilt, refused with a message, or harmless.

Never a wrong number: a damaged cache is not read, a killed build resumes to the same arrays as an
uninterrupted one, two builders do not clobber each other, a full or read-only disk gives one line.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from residual_core.build import store
from residual_core.read.cache import load_cache
from residual_core.build.pipeline import PrecomputeSpec, lookup, precompute

ROOT = Path(__file__).resolve().parent.parent
SHARD = 20  # small shards, so a 70-image build has four of them to kill between
TEMP_PATTERNS = ("**/.*.tmp", "**/.*.partial", "**/.tmp-*")


def _spec(cache_dir: Path) -> PrecomputeSpec:
    return PrecomputeSpec(model="tiny-random", dataset="mnist-offline", split="val", limit=70,
                          cache_dir=str(cache_dir), batch_size=16)


@pytest.fixture(autouse=True)
def small_shards(monkeypatch):
    import residual_core.build.pipeline as pc

    monkeypatch.setattr(pc, "SHARD_SIZE", SHARD)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted build, read-only for the tests (each test copies it if it needs to damage it)."""
    import residual_core.build.pipeline as pc

    saved, pc.SHARD_SIZE = pc.SHARD_SIZE, SHARD
    try:
        return precompute(_spec(tmp_path_factory.mktemp("reference")))
    finally:
        pc.SHARD_SIZE = saved


def _copy(reference: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(reference, tmp_path / reference.name))


def _assert_same_arrays(folder: Path, reference: Path) -> None:
    names = json.loads((reference / store.MANIFEST).read_text())["files"]
    for name in names:
        if name.endswith(".npy"):
            assert np.array_equal(np.load(folder / name), np.load(reference / name)), name
        else:
            assert (folder / name).read_text() == (reference / name).read_text(), name


def _leftovers(folder: Path) -> list[str]:
    return [str(p) for pattern in TEMP_PATTERNS for p in folder.glob(pattern)]


def _flip(path: Path, n_bytes: int = 256) -> None:
    data = bytearray(path.read_bytes())
    middle = max(len(data) // 2 - n_bytes // 2, 0)
    data[middle:middle + n_bytes] = bytes(b ^ 0xFF for b in data[middle:middle + n_bytes])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["head_scores.npy", "classifier.npy", "output.npy", "mlps.npy", "labels.npy",
                                  "head_components.npy", "thumbs.npy", "text_embeds.npy", "texts.json",
                                  "image_ids.json"])
def test_a_byte_flip_in_any_file_is_refused_then_rebuilt(reference, tmp_path, name):
    folder = _copy(reference, tmp_path)
    size = (folder / name).stat().st_size
    _flip(folder / name)
    assert (folder / name).stat().st_size == size  # same size: only the digest can tell
    with pytest.raises(store.CacheError, match=name.replace(".", r"\.")):
        load_cache(folder)
    found = lookup(_spec(tmp_path))
    assert not found.ready and name in found.problem
    assert precompute(_spec(tmp_path)) == folder
    _assert_same_arrays(folder, reference)


def test_truncation_is_refused(reference, tmp_path):
    folder = _copy(reference, tmp_path)
    with open(folder / "output.npy", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(store.CacheError, match="truncated"):
        load_cache(folder)


def test_a_file_changed_after_opening_is_caught_on_the_next_check(reference, tmp_path):
    folder = _copy(reference, tmp_path)
    load_cache(folder)  # verified and memoised
    store.read_manifest(folder)  # memo hit: no error
    _flip(folder / "classifier.npy")
    with pytest.raises(store.CacheError, match="classifier"):
        store.read_manifest(folder)  # the file's identity (ctime) changed, so it is hashed again


@pytest.mark.parametrize("manifest", ["[1]", "null", '"text"', "{not json", "\xff\xfe",
                                      {"files": {}}, {"files": []}, {"files": {"labels.npy": 5}},
                                      {"files": {"../../etc/passwd": {"size": 1, "xxh3_128": "0" * 32}}},
                                      {"files": {"labels.npy": {"size": "12", "xxh3_128": "0" * 32}}},
                                      {"spec": [], "inputs": 1}])
def test_a_manifest_of_the_wrong_shape_is_refused_then_rebuilt(reference, tmp_path, manifest):
    folder = _copy(reference, tmp_path)
    if isinstance(manifest, dict):
        good = json.loads((folder / store.MANIFEST).read_text())
        text = json.dumps(good | manifest)
    else:
        text = manifest
    (folder / store.MANIFEST).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(store.CacheError):
        load_cache(folder)
    assert precompute(_spec(tmp_path)) == folder
    _assert_same_arrays(folder, reference)


KILLER = r"""
import os, signal, sys
import residual_core.build.pipeline as pc
from residual_core.build import shards
from residual_core.build import store
pc.SHARD_SIZE = {shard}
point, state = sys.argv[1], {{"n": 0}}

def at(fn, n, after):
    def wrapped(*args, **kwargs):
        if not after and state["n"] + 1 == n:
            os.kill(os.getpid(), signal.SIGKILL)
        out = fn(*args, **kwargs)
        state["n"] += 1
        if after and state["n"] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return wrapped

if point == "after_two_shards":
    shards.write_shard = at(shards.write_shard, 2, after=True)
elif point == "inside_a_shard":
    store.atomic_save_npy = at(store.atomic_save_npy, 3, after=False)
elif point == "inside_finalize":
    store.commit_npy = at(store.commit_npy, 3, after=True)
elif point == "before_the_manifest":
    store.write_manifest = at(store.write_manifest, 1, after=False)
pc.precompute(pc.PrecomputeSpec(model="tiny-random", dataset="mnist-offline", split="val", limit=70,
                                cache_dir=sys.argv[2], batch_size=16))
"""


def _run(code: str, *args: str, wait: bool = True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-c", code, *args]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_two_shards", "inside_a_shard", "inside_finalize", "before_the_manifest"])
def test_kill_9_then_resume_gives_the_same_arrays(reference, tmp_path, point):
    done = _run(KILLER.format(shard=SHARD), point, str(tmp_path))
    assert done.returncode == -9, done.stderr[-2000:]
    folder = tmp_path / reference.name
    assert not (folder / store.MANIFEST).exists()  # nothing half-finished can be read
    assert precompute(_spec(tmp_path)) == folder
    _assert_same_arrays(folder, reference)
    assert _leftovers(folder) == [] and not (folder / "shards").exists()


WRITER = r"""
import sys
import residual_core.build.pipeline as pc
pc.SHARD_SIZE = {shard}
print(pc.precompute(pc.PrecomputeSpec(model="tiny-random", dataset="mnist-offline", split="val", limit=70,
                                      cache_dir=sys.argv[1], batch_size=16)))
"""


@pytest.mark.slow
def test_two_writers_at_once_build_one_intact_cache(reference, tmp_path):
    writers = [_run(WRITER.format(shard=SHARD), str(tmp_path), wait=False) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in writers]
    assert [w.returncode for w in writers] == [0, 0], [err[-2000:] for _, err in outputs]
    folder = tmp_path / reference.name
    assert {out.strip() for out, _ in outputs} == {str(folder)}
    _assert_same_arrays(folder, reference)
    assert _leftovers(folder) == [] and not (folder / "shards").exists()


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture()
def tmpfs(tmp_path):
    mounted = []

    def make(name: str, options: str) -> Path:
        path = tmp_path / name
        _mount_tmpfs(path, options)
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_gives_one_line_and_leaves_no_temporary_file(tmpfs):
    full = tmpfs("full", "size=320k")
    with pytest.raises(store.CacheWriteError) as caught:
        precompute(_spec(full))
    message = str(caught.value)
    assert "disk is full" in message and str(full) in message and "\n" not in message
    assert _leftovers(full) == []


@pytest.mark.slow
def test_a_read_only_folder_gives_one_line(tmpfs):
    read_only = tmpfs("ro", "ro,size=64k")
    with pytest.raises(store.CacheWriteError, match="read-only"):
        precompute(_spec(read_only))
    done = subprocess.run([sys.executable, "-m", "residual_core", "precompute", "--model", "tiny-random", "--dataset",
                           "mnist-offline", "--limit", "20", "--cache-dir", str(read_only)], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cannot write the cache in") and "Traceback" not in done.stderr


@pytest.mark.parametrize("size", ["2m", "8m", "12m"])
def test_a_disk_that_fills_part_way_through_a_large_write_gives_one_line(tmpfs, size):
    """The write that fails is larger than what is left; its temporary file is removed before the message is
    made, so free space alone cannot tell (a 2 MB disk said '786432 requested and 765824 written')."""
    full = tmpfs(f"full{size}", f"size={size}")
    done = subprocess.run([sys.executable, "-m", "residual_core", "precompute", "--model", "demo", "--dataset",
                           "demo-world/shape", "--limit", "1000", "--cache-dir", str(full)], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=600)
    assert done.returncode == 2, done.stderr[-1500:]  # 135 was SIGBUS: a page of a sparse memory map, disk full
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write the cache in") and "disk is full" in last, last
    assert _leftovers(full) == []
