"""The data-free reading: a head's write directions from its weights, their span against the data, pursuit."""

import numpy as np
import pytest
import torch

from residual_core.explain.weights_reading import head_svd, pursuit, read_weights, span, write_maps


@pytest.mark.parametrize("name", ["tiny-random", "hf-tiny-random", "demo"])
def test_a_heads_data_contribution_lies_in_the_span_of_its_weight_directions(name):
    from residual_core.engine.decompose import decompose_images
    from residual_core.engine.models import load_clip

    loaded = load_clip(name)
    size = loaded.arch.image_size
    images = torch.randn(12, 3, size, size, generator=torch.Generator().manual_seed(0))
    heads = decompose_images(loaded.model, images).heads.double().numpy()  # [n, L, H, d_embed]
    for layer, head in [(0, 0), (loaded.arch.n_layers - 1, loaded.arch.n_heads - 1)]:
        basis = span(loaded.model, layer, head)  # [r + 2, d_embed] orthonormal
        centred = heads[:, layer, head] - heads[:, layer, head].mean(0)
        left = centred - (centred @ basis.T) @ basis
        assert np.linalg.norm(left) <= 1e-5 * np.linalg.norm(centred), (name, layer, head)
        assert basis.shape[0] <= loaded.arch.d_model // loaded.arch.n_heads + 2


def test_the_svd_through_the_factors_is_the_svd_of_the_product(tiny):
    a, w_v, _, _ = write_maps(tiny.model)
    singular, directions = head_svd(a[1, 2], w_v[1, 2])
    product = (a[1, 2].double().T @ w_v[1, 2].double()).numpy()  # [d_embed, d_model]
    u, s, _ = np.linalg.svd(product)
    assert np.allclose(singular, s[:len(singular)], rtol=1e-8)
    assert np.allclose(np.abs(directions @ u[:, :len(singular)]), np.eye(len(singular)), atol=1e-6)


def test_pursuit_recovers_a_planted_non_negative_mix():
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((200, 32))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    target = 2.0 * bank[17] + 0.7 * bank[101]
    texts, weights = pursuit(target, bank, 3)
    assert set(texts[:2]) == {17, 101} and dict(zip(texts, weights))[17] == pytest.approx(2.0, abs=1e-6)
    assert pursuit(np.zeros(32), bank, 3) == ((), ())  # nothing to explain


def test_every_head_is_read_with_both_signs(tiny):
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((50, tiny.arch.d_embed))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    readings = read_weights(tiny.model, bank, n_directions=2, n_texts=2)
    assert len(readings) == tiny.arch.n_layers * tiny.arch.n_heads
    first = readings[0]
    assert len(first.texts) == 2 and all(len(plus) and len(minus) for plus, minus in first.texts)
    assert set(first.texts[0][0]).isdisjoint(first.texts[0][1])  # + and − read different texts
