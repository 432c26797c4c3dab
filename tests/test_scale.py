"""The read side beyond RAM: streamed passes equal the in-RAM ones; a sample's ablation is the whole's on its rows."""

import numpy as np
import pytest
import torch

from residual_core.read import cache as cache_module
from residual_core.read.ablation import AblationMask, evaluate, evaluate_streamed, keep_heads
from residual_core.read.live import LogitState
from residual_core.analysis.specialize import head_scores

MASKS = [
    AblationMask(heads=frozenset({(0, 1)}), pcs=frozenset({(1, 2, 0), (1, 2, 3)}), mlps=frozenset({1}), embed=True),
    AblationMask(heads=frozenset({(1, 0)}), pcs=frozenset({(0, 3, 1)}), mlps=frozenset({0}), embed=True, mode="zero"),
    AblationMask(scales=((0, 2, 0, 0.5), (1, 1, 1, 2.0))),
]


@pytest.fixture()
def small_chunks(monkeypatch):
    """Chunks of 64 images and a logit budget of 1,000 numbers: the tiny cache takes the streamed paths."""
    monkeypatch.setattr(cache_module, "CHUNK_IMAGES", 64)
    monkeypatch.setattr(cache_module, "IN_RAM_LOGITS", 1_000)


@pytest.mark.parametrize("mask", MASKS)
def test_streamed_evaluation_is_the_in_ram_one(tiny_cache, small_chunks, mask):
    assert tiny_cache.n_images > 64 * 3  # several chunks, the last one short
    whole = evaluate(tiny_cache, mask)
    streamed = evaluate_streamed(tiny_cache, mask)
    assert np.array_equal(streamed.predictions, whole.predictions)
    assert streamed.accuracy == whole.accuracy and streamed.delta == whole.delta
    assert np.array_equal(streamed.per_class_accuracy, whole.per_class_accuracy, equal_nan=True)


def test_streamed_baseline_is_the_in_ram_one(tiny_cache_dir, small_chunks):
    from residual_core.read.cache import load_cache

    fresh = load_cache(tiny_cache_dir)  # a new Cache object: its baseline is computed under the small budget
    assert not fresh.logits_fit_in_ram
    expected = (torch.from_numpy(fresh.output) @ torch.from_numpy(fresh.classifier)).numpy().argmax(1)
    assert np.array_equal(fresh.baseline_predictions(), expected)


def test_keep_heads_streamed_matches_the_mask_it_stands_for(tiny_cache, small_chunks):
    keep = [0, 5]
    others = {tiny_cache.units.head_at(u) for u in range(tiny_cache.units.n_heads_total)} - \
        {tiny_cache.units.head_at(u) for u in keep}
    for mode in ("zero", "mean"):
        mask = AblationMask(heads=frozenset(others), mlps=frozenset(range(tiny_cache.n_layers)), embed=True, mode=mode)
        agree = keep_heads(tiny_cache, keep, mode).predictions == evaluate(tiny_cache, mask).predictions
        assert agree.mean() > 0.99, mode  # two sums of the same terms in different orders: near-ties may differ


def test_a_sample_ablates_its_rows_as_the_whole_cache_does(tiny_cache):
    sample = tiny_cache.sample(100)
    step = -(-tiny_cache.n_images // 100)
    assert sample.n_images == len(range(0, tiny_cache.n_images, step)) <= 100 and sample.whole is tiny_cache
    assert tiny_cache.sample(100) is sample and tiny_cache.sample(tiny_cache.n_images) is tiny_cache
    assert np.array_equal(sample.labels, tiny_cache.labels[::step])
    for mask in MASKS:  # mean mode replaces by the whole dataset's means, so each image's answer is the same
        whole = evaluate(tiny_cache, mask).logits[::step]
        assert np.allclose(evaluate(sample, mask).logits, whole, atol=1e-4)
    state = LogitState(sample)
    state.toggle_head(1, 2)
    state.toggle_pc(0, 1, 0)
    assert np.array_equal(state.result().predictions, evaluate(sample, state.mask).predictions)


def test_streamed_specialisation_is_the_direct_pearson(tiny_cache, monkeypatch):
    direct = {}
    for method in ("U|T", "U"):
        direct[method] = head_scores(tiny_cache, method)
    monkeypatch.setattr(cache_module, "CHUNK_IMAGES", 37)
    output = tiny_cache.output.astype(np.float64)
    q_all = np.linalg.qr(output.T)[0]  # QR of every output: the first d images must give the same Q
    heads = [tiny_cache.head_mean[u] + tiny_cache.head_scores[u].astype(np.float64).T @ tiny_cache.head_components[u]
             for u in range(tiny_cache.units.n_heads_total)]  # [n, d] each, the exact contributions
    target = sum(heads)
    for method, basis in (("U", q_all), ("U|T", np.linalg.qr(tiny_cache.classifier.astype(np.float64))[0])):
        expected = [np.mean([np.corrcoef(h @ q, target @ q)[0, 1] for q in basis.T]) for h in heads]
        streamed = head_scores(tiny_cache, method)
        assert np.allclose(streamed, expected, atol=1e-5), method
        assert np.allclose(streamed, direct[method], atol=1e-9), method  # the chunk size changes nothing


def test_lab_on_a_cache_above_the_live_limit_states_its_sample_and_answers_for_all(cache_root, open_app, monkeypatch,
                                                                                    tiny_cache):
    monkeypatch.setattr(cache_module, "LIVE_IMAGES", 100)
    app = open_app(cache_root, {"model": "tiny-random", "dataset": "mnist-offline", "split": "test", "n": "300"})
    app.switch_page("dashboard/pages/4_ablation_lab.py").run()
    assert not app.exception, app.exception
    sample = tiny_cache.sample(100)
    assert any(f"{sample.n_images:,} of {tiny_cache.n_images:,}" in c.value for c in app.caption)
    assert app.metric[0].value == f"{sample.baseline_accuracy():.2%}"
    heads = [(0, h) for h in range(tiny_cache.n_heads)]
    app.multiselect(key="lab_heads").set_value(heads).run()
    mask = app.session_state["mask"]
    assert app.metric[0].value == f"{evaluate(sample, mask).accuracy:.2%}"
    [exact] = [b for b in app.button if b.label.startswith("Exact on all")]
    exact.click().run()
    assert not app.exception, app.exception
    [on_all] = [m for m in app.metric if m.label.startswith("Accuracy on all")]
    assert on_all.value == f"{evaluate(tiny_cache, mask).accuracy:.2%}"
    assert not [b for b in app.button if b.label.startswith("Exact on all")]  # the answer replaced the button


@pytest.fixture()
def align_in_chunks(monkeypatch):
    """Every split is read 50 images at a time, and principal axes come from streamed moments."""
    from residual_core.analysis import adapters
    from residual_core.analysis import align

    monkeypatch.setattr(align, "IN_RAM_NUMBERS", 10)
    monkeypatch.setattr(align, "CHUNK_IMAGES", 50)
    monkeypatch.setattr(adapters, "IN_RAM_NUMBERS", 10)
    monkeypatch.setattr(cache_module, "CHUNK_IMAGES", 50)


def _planted_splits():
    from synthetic import planted, subset

    cache, _ = planted(n=600, noise=2.0, seed=1, label_noise=0.2)  # noisy heads drown a clean label head
    rows = np.arange(600)
    return subset(cache, rows[:360]), subset(cache, rows[360:480]), subset(cache, rows[480:])


def test_streamed_accuracy_and_principal_axes_are_the_in_ram_ones(monkeypatch):
    from residual_core.analysis import adapters
    from residual_core.analysis import align

    train, val, _ = _planted_splits()
    for method in ("fine", "spectral", "full"):
        model = adapters.make_adapter(method, train, compat=False, identity=False, seed=0)
        weights = torch.from_numpy(train.classifier)
        in_ram = align._accuracy(model, align._Split(val, model), weights)
        monkeypatch.setattr(align, "IN_RAM_NUMBERS", 10)
        monkeypatch.setattr(align, "CHUNK_IMAGES", 50)
        split = align._Split(val, model)
        assert split.n_chunks == 3 and align._accuracy(model, split, weights) == in_ram, method
        monkeypatch.undo()
    read = lambda part: torch.from_numpy(np.asarray(part.output, dtype=np.float64))[:, None]  # noqa: E731
    mean, axes = adapters._principal_axes(train, read)
    monkeypatch.setattr(adapters, "IN_RAM_NUMBERS", 10)
    monkeypatch.setattr(cache_module, "CHUNK_IMAGES", 50)
    streamed_mean, streamed_axes = adapters._principal_axes(train, read)
    assert torch.allclose(streamed_mean, mean, atol=1e-5)
    agreement = (streamed_axes[0] * axes[0]).sum(1).abs()  # |cos| of each pair of axes: 1 up to sign
    assert torch.allclose(agreement[:8], torch.ones(8), atol=1e-3)


def test_alignment_trains_on_a_split_read_in_chunks(align_in_chunks):
    from residual_core.analysis.align import align

    train, val, test = _planted_splits()
    result = align(train, val, test, "fine", epochs=30)
    assert result.test_acc > result.zeroshot_test_acc + 0.1  # as in RAM: the planted PC is found
    again = align(train, val, test, "fine", epochs=3)
    assert np.array_equal(again.lambdas, align(train, val, test, "fine", epochs=3).lambdas)  # chunk order is seeded
    assert align(train, val, test, "spectral", epochs=0, identity_start=True).test_acc == \
        pytest.approx(test.baseline_accuracy(), abs=1 / 120)


def _mapped_kb() -> int:
    """File-backed resident pages of this process (RssShmem too: a tmp folder may be a tmpfs)."""
    return sum(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(("RssFile:", "RssShmem:")))


def test_a_streamed_pass_leaves_no_cache_pages_mapped(tmp_path):
    from residual_core.build import store

    path = tmp_path / "big.npy"
    np.save(path, np.random.default_rng(0).standard_normal(32_000_000).astype(np.float32))  # 128 MB
    array = store.load_npy(path)
    before = _mapped_kb()
    total = float(np.asarray(array[:16_000_000], dtype=np.float64).sum())  # maps 64 MB of pages in
    assert _mapped_kb() - before > 50_000
    store.release_pages(array[:16_000_000])
    assert _mapped_kb() - before < 10_000
    assert float(np.asarray(array[:16_000_000], dtype=np.float64).sum()) == total  # read again, unchanged
    store.release_pages(np.zeros(4))  # an in-RAM array: nothing to release, no error


def _mapped_kb_of(path) -> int:
    """Resident pages of this process's mappings of one file (kB), from /proc/self/smaps."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if line[:1].isdigit() or line[:1] in "abcdef":  # a mapping's header: address range … path
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.fixture()
def mapped_at_release(monkeypatch, tmp_path):
    """kB of ``tmp_path``'s head_scores.npy and output.npy mapped each time pages are released, before
    releasing: the most a streamed pass holds mapped between two releases."""
    from residual_core.build import store

    seen, release = {"head_scores": [], "output": []}, store.release_pages

    def recording(array):
        for name, values in seen.items():
            values.append(_mapped_kb_of(tmp_path / f"{name}.npy"))
        release(array)

    monkeypatch.setattr(store, "release_pages", recording)
    return seen


@pytest.mark.parametrize("reader", ["specialisation", "alignment split"])
def test_a_pass_over_every_head_maps_one_head_at_a_time(tmp_path, mapped_at_release, monkeypatch, reader):
    from residual_core.analysis import align
    from residual_core.analysis.adapters import make_adapter
    from residual_core.bench.core import synthetic_cache

    monkeypatch.setattr(align, "IN_RAM_NUMBERS", 1_000)
    monkeypatch.setattr(align, "CHUNK_IMAGES", 16_384)
    # 24 heads × 16 PCs × 48 k images of fp16: 37 MB of scores, 1.5 MB per head
    cache = synthetic_cache(tmp_path, 48_000, n_layers=2, n_heads=12, n_pcs=16, d_embed=16, n_classes=16)
    if reader == "specialisation":
        head_scores(cache, "U|T")
    else:
        split = align._Split(cache, make_adapter("fine", cache, False, False, 0))
        assert split.n_chunks == 3 and split.part(1)["scores"].shape[0] == 16_384
    mapped = mapped_at_release["head_scores"]
    assert len(mapped) >= 24  # head by head
    # one head's rows of a chunk (0.5 MB), and what the kernel maps around reads (≤ 64 kB a head) until its
    # next chunk releases it; a whole chunk of every head, as released before, is 12 MB and more
    assert 0 < max(mapped) < 6_000


def test_a_sample_is_read_in_chunks_that_span_little_of_the_file(tmp_path, mapped_at_release, monkeypatch):
    from residual_core.bench.core import synthetic_cache

    monkeypatch.setattr(cache_module, "CHUNK_SPAN", 1 << 20)
    cache = synthetic_cache(tmp_path, 60_000, n_layers=1, n_heads=2, n_pcs=4, d_embed=256, n_classes=8)  # 61 MB
    sample = cache.sample(6_000)  # one image in 10: 10 kB apart in output.npy
    assert [part.n_images for part in sample.chunks()] == [102] * 58 + [84]  # 1 MB ÷ 10 kB
    assert np.allclose(sample.base_logits, np.asarray(cache.output[::10]) @ cache.classifier, atol=1e-4)
    # a chunk of the sample spans 1 MB, and the kernel maps up to a few MB around what it reads; one chunk of
    # every sampled row (as before CHUNK_SPAN) maps the whole 61 MB file
    assert 0 < max(mapped_at_release["output"]) < 12_000
