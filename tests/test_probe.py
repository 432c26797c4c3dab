import numpy as np
import pytest

from residual_core.read.ablation import AblationMask
from residual_core.data.datasets import load_dataset
from residual_core.read.probe import counterfactual_probs, probe_images


def test_probing_a_cached_image_reproduces_its_cached_coordinates(tiny, tiny_cache):
    source = load_dataset("mnist-offline", "test")
    rows = [0, 5, 17]
    images = [source.image(int(tiny_cache.positions[r])) for r in rows]
    result = probe_images(tiny, tiny_cache, images)
    assert result.decomposition.errors()[1] < 1e-5
    cached = np.stack([np.asarray(tiny_cache.head_scores[:, :, r], dtype=np.float32) for r in rows])
    assert np.allclose(result.scores, cached, atol=2e-3 * np.abs(cached).max())
    assert np.allclose(result.decomposition.output.numpy(), tiny_cache.output[rows], atol=1e-5)
    assert ((result.percentiles >= 0) & (result.percentiles <= 1)).all()
    top = result.top_classes(0)
    assert len(top) == 5 and top[0][1] >= top[1][1]
    assert np.allclose(result.probs.sum(1), 1.0)
    attribution = result.head_logit_attribution(0, top[0][0], tiny_cache)
    assert attribution.shape == (tiny_cache.n_layers, tiny_cache.n_heads)
    # in logits: with the emb's and the MLPs' direct parts, the heads' add up to the class's logit
    decomp, w = result.decomposition, np.asarray(tiny_cache.classifier[:, top[0][0]], np.float64)
    rest = (decomp.embed[0].double().numpy() + decomp.mlps[0].double().numpy().sum(0)) @ w * result.logit_factor(0)
    output = decomp.output[0].double().numpy()
    logit = result.logit_scale * output @ w / np.linalg.norm(output)
    assert attribution.sum() + rest == pytest.approx(logit, rel=1e-4)
    assert len(result.pc_push(0, top[0][0], tiny_cache)) == 10
    same = counterfactual_probs(result, tiny_cache, AblationMask())
    assert np.allclose(same, result.probs, atol=1e-5)
    changed = counterfactual_probs(result, tiny_cache, AblationMask(heads=frozenset({(1, 0), (1, 1)}), mode="zero"))
    assert not np.allclose(changed, result.probs, atol=1e-4)


def test_the_model_input_and_an_unusual_image_are_reported(tiny, tiny_cache):
    from PIL import Image

    source = load_dataset("mnist-offline", "test")
    digit = source.image(int(tiny_cache.positions[3]))
    noise = Image.fromarray((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8))
    result = probe_images(tiny, tiny_cache, [digit, noise])
    assert result.inputs.shape == (2, 32, 32, 3) and result.inputs.dtype == np.uint8
    # the digit, resized by the model's own preprocessing, is what the model saw
    expected = np.asarray(digit.convert("RGB").resize((32, 32), Image.BICUBIC), dtype=np.float32)
    assert np.abs(result.inputs[0].astype(np.float32) - expected).mean() < 12
    assert not result.is_unusual(0)  # one of the cache's own digits
    from residual_core.read.typicality import thumbnail

    # the probe's thumbnail of an image is the one the cache made of it (the pixel view compares the two)
    assert np.array_equal(thumbnail(digit, tiny_cache.thumbs.shape[1]), np.asarray(tiny_cache.thumbs[3]))
    assert result.is_unusual(1) and result.typicality[1] < result.typicality[0]
    heads = result.driving_heads(0, result.top_classes(0)[0][0], tiny_cache, top=3)
    attribution = result.head_logit_attribution(0, result.top_classes(0)[0][0], tiny_cache)
    assert attribution[heads[0]] == attribution.max() and len(set(heads)) == 3


def test_typicality_flags_what_the_cache_never_saw_and_rarely_its_own_kind():
    """Planted Gaussian heads: new images from the same law are flagged at about the stated rate; images whose heads
    are scaled (the explanation's coordinates) or whose embedding turns away (the classifier's) are flagged."""
    from synthetic import make_cache

    from residual_core.read.typicality import ALARM, typicality_model

    rng = np.random.default_rng(0)
    n, d = 4_000, 8
    scale = np.linspace(0.5, 2.0, d)  # an anisotropic law: a Euclidean distance would not be calibrated
    heads = rng.standard_normal((n, 2, 2, d)) * scale + 1.0
    cache = make_cache(heads, np.arange(n) % 3, np.linalg.qr(rng.standard_normal((d, 3)))[0])
    model = typicality_model(cache)

    def read(new):  # [m, 2, 2, d] -> typicality of each new image, in the cache's basis
        flat = new.reshape(len(new), 4, d)
        scores = np.einsum("mud,ukd->muk", flat - cache.head_mean, cache.head_components)
        return model.typicality(flat.sum(1), scores, np.zeros((len(new), 1, 1, 3), np.uint8))

    assert model.pixels is None  # an in-memory cache keeps no thumbnails: the two model views alone
    same = read(rng.standard_normal((2_000, 2, 2, d)) * scale + 1.0)
    assert np.mean(same < ALARM) <= 3 * ALARM  # about ALARM in all (twice the smaller of two shares)
    assert 0.45 < np.median(same) < 0.75  # twice the smaller of two uniform shares: median 2 (1 − √½) ≈ 0.59
    scaled = read((rng.standard_normal((500, 2, 2, d)) * scale) * 4 + 1.0)
    assert np.mean(scaled < ALARM) > 0.95
    turned = read(rng.standard_normal((500, 2, 2, d)) * scale - 1.0)  # the mean embedding points the other way
    assert np.mean(turned < ALARM) > 0.95
    # continuous beyond the calibration set: farther is always less typical (a share of 1/n_cal steps read 0 for both)
    far, farther = read(np.stack([np.full((2, 2, d), 6.0), np.full((2, 2, d), 9.0)]))
    assert 0 < farther < far < 1e-4
    ladder = read((rng.standard_normal((1, 2, 2, d)) * scale) * np.linspace(1, 3, 50)[:, None, None, None] + 1.0)
    assert len(np.unique(ladder)) == 50  # no ties from steps of the calibration set


def test_the_pixel_view_flags_photographs_that_drawn_scenes_never_look_like():
    """Thumbnails of drawn scenes (flat colours from a palette, a hard-edged shape) against photograph-like ones
    (smooth shading and grain, as a crop of sky or wall has): the pixel view fitted on scenes flags every one of
    the latter far below the alarm, and few new scenes."""
    from residual_core.read.typicality import ALARM, _fit, pixel_features

    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (8, 3))

    def scenes(n):
        out = np.empty((n, 32, 32, 3), np.uint8)
        for i in range(n):
            out[i] = palette[rng.integers(8)]
            x, y, w = rng.integers(0, 20), rng.integers(0, 20), rng.integers(6, 12)
            out[i, y:y + w, x:x + w] = palette[rng.integers(8)]
        return out

    def photos(n):
        ramp = np.linspace(0, 1, 32)[None, :, None, None] * rng.uniform(20, 90, (n, 1, 1, 3))
        base = rng.uniform(60, 160, (n, 1, 1, 3)) + ramp + rng.normal(0, 6, (n, 32, 32, 3))
        return np.clip(base, 0, 255).astype(np.uint8)

    features = pixel_features(scenes(2_000))
    assert features.shape == (2_000, 72) and np.allclose((features ** 2)[:, :64].sum(1), 1)
    view = _fit(features, np.arange(1_000), np.arange(1_000, 2_000), tail=True)
    assert np.mean(view.share_further(pixel_features(scenes(1_000))) < ALARM) <= 3 * ALARM
    assert view.share_further(pixel_features(photos(50))).max() < ALARM / 100
