import numpy as np
import pytest

from residual_core.analysis.specialize import head_scores, k_values, specialize, topk_accuracy
from synthetic import planted


def test_k_values_follow_the_paper():
    assert k_values(144) == [1, 2, 7, 14, 36, 72, 108]
    assert k_values(384) == [1, 3, 19, 38, 96, 192, 288]


@pytest.mark.parametrize("method", ["S", "U|T"])
def test_the_head_that_carries_the_label_ranks_first(method):
    cache, (layer, head) = planted()
    scores = head_scores(cache, method)
    assert int(np.argmax(scores)) == layer * cache.n_heads + head


def test_topk_curves_and_baselines():
    val, (layer, head) = planted(seed=1)
    test, _ = planted(seed=2)
    target = layer * test.n_heads + head
    assert topk_accuracy(test, np.array([target]), "zero") > 0.95
    others = np.array([u for u in range(12) if u != target][:3])
    assert topk_accuracy(test, others, "zero") < 0.6
    report = specialize(val, test, n_random=3)
    assert report["curves"]["S"]["zero"][0] > 0.95  # k = 1 picks the label head
    assert report["curves"]["random"]["zero"]["mean"][0] < report["curves"]["S"]["zero"][0]
    assert report["baselines"]["B"] == pytest.approx(test.baseline_accuracy())
    assert np.isclose(topk_accuracy(test, np.arange(12), "zero"), report["baselines"]["H_zero"])


def test_mean_mode_keeping_every_head_is_the_h_mean_baseline():
    cache = _with_emb(seed=3)
    everything = np.arange(cache.n_layers * cache.n_heads)
    report = specialize(cache, cache, n_random=1)
    assert topk_accuracy(cache, everything, "mean") == pytest.approx(report["baselines"]["H_mean"])
    with pytest.raises(ValueError, match="mode"):
        topk_accuracy(cache, everything, "half")


# --- the reference's formulas, re-implemented from their definitions, on planted data -------------------


def _with_emb(seed: int = 0, n: int = 300):
    """A planted cache whose emb unit is large and class-dependent, fp16-exact (as the cache stores it)."""
    from synthetic import make_cache

    rng = np.random.default_rng(seed)
    d, n_classes = 16, 4
    classifier = np.linalg.qr(rng.standard_normal((d, n_classes)))[0]
    labels = np.arange(n) % n_classes
    heads = rng.standard_normal((n, 3, 4, d)) * 0.5
    heads[:, 2, 1] += 2.0 * classifier[:, labels].T
    heads[:, 0, 2] += 1.0 * classifier[:, (labels + 1) % n_classes].T  # a misleading head
    emb = (rng.standard_normal((n, d)) + 3.0 * classifier[:, 0]).astype(np.float16).astype(np.float64)
    return make_cache(heads, labels, classifier, rest=emb)


def _reference_correlation(heads: np.ndarray, prop: np.ndarray | None) -> np.ndarray:
    """heads [n, r, d] -> [r]: Pearson against the sum of the heads, biased covariance over unbiased stds."""
    import torch

    heads_t = torch.from_numpy(heads)
    out = heads_t.sum(1)
    if prop is not None:
        basis = torch.linalg.qr(torch.from_numpy(prop).T).Q.T  # [k, d]
        out, heads_t = out @ basis.T, heads_t @ basis.T
    out, heads_t = out - out.mean(0), heads_t - heads_t.mean(0, keepdim=True)
    covar = (out[:, None, :] * heads_t).mean(0)
    return (covar / (out.std(0)[None, :] * heads_t.std(0))).mean(-1).numpy()


def _heads(cache) -> np.ndarray:
    return np.stack([cache.head_contributions(l, h) for l in range(cache.n_layers)
                     for h in range(cache.n_heads)], 1).astype(np.float64)  # [n, r, d]


@pytest.mark.parametrize("method", ["U|T", "U"])
def test_correlation_scores_are_the_reference_formulas(method):
    cache = _with_emb()
    prop = cache.classifier.T.astype(np.float64) if method == "U|T" else cache.output.astype(np.float64)
    expected = _reference_correlation(_heads(cache), prop)
    assert np.allclose(head_scores(cache, method, reference_compat=True), expected, atol=1e-5)
    n = cache.n_images
    assert np.allclose(head_scores(cache, method), expected * n / (n - 1), atol=1e-5)  # exact Pearson by default


def test_u_uses_the_full_outputs_basis_and_the_sum_of_heads():
    cache = _with_emb()
    identity_vs_output = []  # the old project variant: canonical basis, against the full output
    heads = _heads(cache)
    for u in range(heads.shape[1]):
        a, b = heads[:, u] - heads[:, u].mean(0), cache.output - cache.output.mean(0)
        identity_vs_output.append(np.mean((a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0))))
    assert not np.allclose(head_scores(cache, "U"), identity_vs_output, atol=1e-3)


def test_mean_ablation_replaces_every_other_unit_by_its_mean():
    cache = _with_emb(seed=4)
    heads = _heads(cache)
    emb = cache.embed.astype(np.float64)
    for keep in ([9], [9, 2], [0, 1, 5, 9, 11]):
        rest = [u for u in range(heads.shape[1]) if u not in keep]
        z = heads[:, keep].sum(1) + heads[:, rest].mean(0).sum(0) + emb.mean(0)  # Residual.ablate(keep, "mean")
        expected = ((z @ cache.classifier).argmax(1) == cache.labels).mean()
        assert topk_accuracy(cache, np.array(keep), "mean") == pytest.approx(expected)
        zero = ((heads[:, keep].sum(1) @ cache.classifier).argmax(1) == cache.labels).mean()
        assert topk_accuracy(cache, np.array(keep), "zero") == pytest.approx(zero)
    # the emb mean matters here: leaving it out (the old behaviour) gives another number
    keep = [9]
    rest = [u for u in range(heads.shape[1]) if u not in keep]
    without_emb = heads[:, keep].sum(1) + heads[:, rest].mean(0).sum(0)
    assert ((without_emb @ cache.classifier).argmax(1) == cache.labels).mean() != pytest.approx(
        topk_accuracy(cache, np.array(keep), "mean"))


def test_random_and_tie_conventions():
    import torch

    from residual_core.analysis.specialize import ranking

    cache = _with_emb()
    n_total = cache.n_layers * cache.n_heads
    assert np.array_equal(head_scores(cache, "random", seed=3),
                          torch.randn(n_total, generator=torch.Generator().manual_seed(3)).double().numpy())
    tied = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    assert ranking(tied).tolist() == [1, 3, 0, 2, 4]  # ties by head order
    assert ranking(tied, reference_compat=True).tolist() == torch.topk(torch.tensor(tied, dtype=torch.float32),
                                                                        5).indices.tolist()


def test_jaccard_across_datasets_separates_heads_that_carry_different_labels():
    from residual_core.analysis.specialize import jaccard_matrix, top_k

    a, head_a = planted(n=240, label_head=(2, 1), seed=1)
    b, head_b = planted(n=240, label_head=(0, 3), seed=2)
    c, _ = planted(n=240, label_head=(2, 1), seed=3)
    overlap, sets = jaccard_matrix([a, b, c], fraction=0.05)
    k = top_k(a.n_layers * a.n_heads)
    assert all(len(s) == k for s in sets)
    assert sets[0][0] == head_a[0] * a.n_heads + head_a[1] and sets[1][0] == head_b[0] * b.n_heads + head_b[1]
    assert np.allclose(np.diag(overlap), 1) and np.allclose(overlap, overlap.T)
    assert overlap[0, 2] > overlap[0, 1]  # the same planted head is shared; a different one is not
    with pytest.raises(ValueError, match="one architecture"):
        jaccard_matrix([a, planted(n_heads=2)[0]])


def test_compat_takes_u_and_h_mean_from_the_stored_units_not_from_encode_image():
    """In a real cache encode_image and the sum of the stored (fp16) units differ by the storage error; the
    reference's U basis and its all-heads mean baseline start from the stored units."""
    from dataclasses import replace

    from residual_core.analysis.specialize import specialize, stored_sum

    cache = _with_emb()
    stored = cache.output.astype(np.float64)
    assert np.allclose(stored_sum(cache, slice(None)), stored, atol=1e-4)  # emb + Σ heads, as stored
    gap = np.random.default_rng(3).standard_normal(stored.shape) * 0.3  # what storage would leave out
    real = replace(cache, output=(stored + gap).astype(np.float32))
    expected = _reference_correlation(_heads(real), stored)  # QR of the stored sum, not of the output
    assert np.allclose(head_scores(real, "U", reference_compat=True), expected, atol=1e-5)
    assert not np.allclose(head_scores(real, "U"), expected * real.n_images / (real.n_images - 1), atol=1e-3)
    both = specialize(real, real, n_random=1, reference_compat=True)["baselines"]["H_mean"]
    assert both == topk_accuracy(real, np.arange(real.n_layers * real.n_heads), "mean")
