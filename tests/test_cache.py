import json
from dataclasses import replace

import numpy as np
import pytest

from residual_core.build import store
from residual_core.read.cache import head_metrics, load_cache
from residual_core.build.pipeline import PrecomputeSpec, lookup, precompute, prepare


def _spec(root, **kw):
    base = PrecomputeSpec(model="tiny-random", dataset="mnist-offline", split="val", limit=120,
                          cache_dir=str(root), batch_size=32)
    return replace(base, **kw)


def test_round_trip_and_contents(tiny_cache, tiny_cache_dir):
    cache = tiny_cache
    manifest = json.loads((tiny_cache_dir / "manifest.json").read_text())
    assert manifest["max_rel_err"] < 1e-5
    assert cache.n_images == 300
    assert cache.head_scores.shape == (cache.n_layers * cache.n_heads, cache.n_pcs, 300)
    assert isinstance(cache.head_scores, np.memmap)
    assert cache.thumbs.shape == (300, 32, 32, 3)
    assert len(cache.texts) >= 2000 and cache.text_embeds.shape[0] == len(cache.texts)
    # stored pieces add back up to the stored encode_image output (fp16 storage tolerance)
    heads = sum(cache.head_contributions(l, h) for l in range(cache.n_layers) for h in range(cache.n_heads))
    total = heads + cache.embed.astype(np.float32) + cache.mlps.astype(np.float32).sum(1)
    assert np.abs(total - cache.output).max() < 2e-3 * np.abs(cache.output).max()
    # poles really are the extremes of each PC
    scores = cache.scores(0, 1)
    assert scores[2, cache.pole_top[1, 2, 0]] == scores[2].max()
    assert scores[2, cache.pole_bottom[1, 2, 0]] == scores[2].min()
    metrics = head_metrics(cache)
    assert all(v.shape == (cache.n_layers, cache.n_heads) for v in metrics.values())
    assert ((metrics["evr1"] > 0) & (metrics["evr1"] <= 1)).all()


def test_second_call_is_a_cache_hit(tiny_cache_dir):
    spec = PrecomputeSpec(model="tiny-random", dataset="mnist-offline", split="test", limit=300,
                          cache_dir=str(tiny_cache_dir.parent), batch_size=64)
    calls = []
    assert precompute(spec, progress=lambda *a: calls.append(a)) == tiny_cache_dir
    assert calls == []
    assert lookup(spec).ready and lookup(spec).folder == tiny_cache_dir


@pytest.mark.parametrize("change", [{"limit": 100}, {"seed": 1}, {"split": "test"}, {"random_weights": True, "seed": 2},
                                    {"dataset": "folder:{tmp}"}])
def test_key_changes_with_every_input(tmp_path, change):
    base = prepare(_spec(tmp_path)).key
    if "dataset" in change:
        for cls in ("a", "b"):
            (tmp_path / "imgs" / cls).mkdir(parents=True)
            from PIL import Image
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / "imgs" / cls / f"{i}.png")
        change = {"dataset": f"folder:{tmp_path / 'imgs'}", "split": "all"}
    assert prepare(_spec(tmp_path, **change)).key != base


def test_key_changes_with_text_bank(tmp_path):
    bank = tmp_path / "bank.txt"
    bank.write_text("a red thing\na blue thing\n")
    assert prepare(_spec(tmp_path, text_bank=str(bank))).key != prepare(_spec(tmp_path)).key


def test_resume_after_interruption(tmp_path, monkeypatch):
    import residual_core.build.pipeline as pc

    monkeypatch.setattr(pc, "SHARD_SIZE", 40)
    spec = _spec(tmp_path)
    written = []
    import residual_core.build.shards as shards

    real = shards.write_shard

    def dying(shard, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt("simulated kill")
        written.append(shard.name)
        return real(shard, *args, **kwargs)

    monkeypatch.setattr(shards, "write_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        precompute(spec)
    folder = prepare(spec).folder
    assert not (folder / "manifest.json").exists()  # nothing half-finished can be read
    with pytest.raises(store.CacheError):
        load_cache(folder)
    assert sorted(p.name for p in (folder / "shards").iterdir() if not p.name.startswith(".")) == ["00000", "00001"]
    written.clear()
    monkeypatch.setattr(shards, "write_shard", lambda shard, *a, **k: (written.append(shard.name), real(shard, *a, **k)))
    assert precompute(spec) == folder
    assert written == ["00002"]  # only the missing shard was encoded
    resumed = load_cache(folder)
    monkeypatch.setattr(pc, "SHARD_SIZE", 120)
    fresh = load_cache(precompute(_spec(tmp_path / "fresh")))
    assert np.allclose(resumed.output, fresh.output, atol=1e-5)
    assert np.allclose(resumed.head_eigenvalues, fresh.head_eigenvalues, rtol=1e-4, atol=1e-9)
    top = slice(0, 6)  # well-separated leading PCs; trailing ones have ~0 variance and arbitrary directions
    assert np.allclose(np.abs(resumed.head_components[:, top]), np.abs(fresh.head_components[:, top]), atol=1e-3)


def test_corrupted_foreign_and_old_caches_are_refused_and_rebuilt(tmp_path):
    spec = _spec(tmp_path, limit=60)
    folder = precompute(spec)
    key = json.loads((folder / "manifest.json").read_text())["key"]
    # truncated array
    with open(folder / "output.npy", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(store.CacheError, match="truncated"):
        load_cache(folder)
    assert precompute(spec) == folder
    assert load_cache(folder).output.shape == (60, 32)
    # foreign key
    manifest = json.loads((folder / "manifest.json").read_text())
    with pytest.raises(store.CacheError, match="other inputs"):
        store.read_manifest(folder, key="0" * 20)
    # other schema version
    (folder / "manifest.json").write_text(json.dumps(manifest | {"schema_version": -1}))
    with pytest.raises(store.CacheError, match="schema"):
        load_cache(folder)
    found = lookup(spec)
    assert not found.ready and "schema" in found.problem
    precompute(spec)
    assert store.read_manifest(folder, key)["schema_version"] == store.SCHEMA_VERSION
    # garbage manifest
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(store.CacheError, match="unreadable"):
        load_cache(folder)


def test_basis_from_another_cache(tmp_path, tiny_cache_dir):
    spec = _spec(tmp_path, basis_from=str(tiny_cache_dir))
    cache = load_cache(precompute(spec))
    basis = load_cache(tiny_cache_dir)
    assert np.array_equal(cache.head_components, basis.head_components)
    heads = cache.head_contributions(1, 2)
    assert np.isfinite(heads).all()


def test_float32_caches_reconstruct_encode_image_to_1e5(tmp_path):
    from residual_core.read.cache import reconstruction_error

    fp16 = load_cache(precompute(_spec(tmp_path, limit=60)))
    fp32 = load_cache(precompute(_spec(tmp_path, limit=60, dtype="float32")))
    assert fp32.path != fp16.path  # the dtype is part of the key
    assert fp32.head_scores.dtype == np.float32 and fp16.head_scores.dtype == np.float16
    assert reconstruction_error(fp32) <= 1e-5
    assert 1e-5 < reconstruction_error(fp16) < 2e-3  # fp16 storage: ~3e-4, predictions unchanged
    assert (fp16.base_logits.argmax(1) == fp32.base_logits.argmax(1)).all()
    with pytest.raises(ValueError, match="dtype"):
        _spec(tmp_path, dtype="float64")


def test_the_key_depends_on_the_weights_not_on_the_checkpoint_path(tmp_path):
    import shutil

    from residual_core.engine.models import ASSETS

    shipped = ASSETS / "demo" / "residual-demo.safetensors"
    copy = tmp_path / "elsewhere" / "weights.safetensors"
    copy.parent.mkdir()
    shutil.copy(shipped, copy)
    base = PrecomputeSpec(dataset="mnist-offline", split="val", limit=60, cache_dir=str(tmp_path))
    assert prepare(replace(base, model="demo")).key == prepare(replace(base, model=f"residual-demo:{copy}")).key
    copy.write_bytes(copy.read_bytes()[:-2] + b"\x00\x01")  # other weights: another key (or a refusal)
    try:
        other = prepare(replace(base, model=f"residual-demo:{copy}")).key
    except Exception:  # damaged safetensors may not load at all
        return
    assert other != prepare(replace(base, model="demo")).key


@pytest.mark.slow
def test_the_scale_bench_reports_each_size_and_a_scaling_exponent():
    from residual_core.bench.scale import run_scale

    report = run_scale(sizes=(2_000, 4_000), classes=(10,))
    rows = report["scale"]
    assert [r["n_images"] for r in rows] == [2_000, 4_000] and all("error" not in r for r in rows)
    for row in rows:
        assert row["heads_stored"] == 144 and row["live_images"] == row["n_images"] and row["full"] is None
        assert row["live"]["toggle_ms_p50"] > 0 and row["streamed_head_s"] > 0
        assert 0 < row["anon_peak_mb"] <= row["rss_peak_mb"]
    expected = np.log(rows[1]["streamed_head_s"] / rows[0]["streamed_head_s"]) / np.log(2)
    assert report["streamed_scaling_exponent"]["10"] == pytest.approx(expected)


def test_a_limit_at_or_above_the_split_is_the_whole_split_and_the_same_cache(tmp_path):
    from residual_core.data.datasets import load_dataset

    whole = len(load_dataset("mnist-offline", "test"))
    keys = {limit: prepare(_spec(tmp_path, split="test", limit=limit)).key for limit in (None, whole, whole + 7)}
    assert len(set(keys.values())) == 1  # one cache, whatever size at or above the split is asked for
    assert prepare(_spec(tmp_path, split="test", limit=whole - 1)).key != keys[None]


def test_every_command_and_the_dashboard_share_one_default_size():
    from dashboard.offer import DEFAULT_LIMIT
    from residual_core.build.defaults import DEFAULT_IMAGES
    from residual_core.cli.main import build_parser

    parser = build_parser()
    commands = {"precompute": [], "describe": [], "search": ["--dataset", "mnist-offline", "red"],
                "maps": ["--out", "x", "--image", "y.png"], "specialize": [], "geometry": [], "shortcuts": [], "scorecard": []}
    sizes = {name: parser.parse_args([name, *extra]).limit for name, extra in commands.items()}
    assert set(sizes.values()) == {DEFAULT_IMAGES} == {DEFAULT_LIMIT}, sizes
