"""The read side beyond RAM: streamed passes equal the in-RAM ones; a sample's ablation is the whole's on its rows."""

import numpy as np
import pytest
import torch

from residual_core import cache as cache_module
from residual_core.ablation import AblationMask, LogitState, evaluate, evaluate_streamed, keep_heads
from residual_core.specialize import head_scores

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
    from residual_core.cache import load_cache

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
