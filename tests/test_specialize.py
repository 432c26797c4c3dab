import numpy as np
import pytest

from residual_core.specialize import head_scores, k_values, specialize, topk_accuracy
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


def test_mean_mode_adds_the_other_heads_means():
    cache, _ = planted(seed=3)
    everything = np.arange(cache.n_layers * cache.n_heads)
    assert topk_accuracy(cache, everything, "mean") == topk_accuracy(cache, everything, "zero")
    with pytest.raises(ValueError, match="mode"):
        topk_accuracy(cache, everything, "half")


def test_jaccard_across_datasets_separates_heads_that_carry_different_labels():
    from residual_core.specialize import jaccard_matrix, top_k

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
