"""What needs no ground truth (residual_core/explain/agreement.py) and the scorecard's random-heads baseline."""

from dataclasses import replace

import numpy as np
import pytest

from residual_core.explain.agreement import HeadAgreement, head_agreement, pole_purity


def test_two_methods_agree_by_the_share_of_texts_they_both_name():
    h = HeadAgreement(0, 0, nearest=(1, 2, 3), textspan=(3, 2, 4), weights=(9,), data_weights=0.5)
    assert h.jaccard("nearest", "textspan") == pytest.approx(2 / 4)
    assert h.jaccard("nearest", "weights") == 0.0 and h.jaccard("textspan", "textspan") == 1.0
    assert h.shared() == (2, 3)  # named by two methods, in the order they first appear
    unread = replace(h, weights=None)
    assert np.isnan(unread.jaccard("weights", "nearest")) and unread.shared() == (2, 3)


def test_every_head_is_read_three_ways_and_compared(tiny, tiny_cache):
    from residual_core.explain.describe import textspan
    from residual_core.explain.weights_reading import read_weights

    heads = head_agreement(tiny_cache, read_weights(tiny.model, tiny_cache.text_embeds))
    assert len(heads) == tiny_cache.units.n_heads_total
    spans = textspan(tiny_cache, 6)
    for u, h in enumerate(heads):
        assert (h.layer, h.head) == tiny_cache.units.head_at(u)
        assert set(h.nearest) == {int(tiny_cache.text_pos_idx[u, k, 0]) for k in range(3)} | {
            int(tiny_cache.text_neg_idx[u, k, 0]) for k in range(3)}
        assert h.textspan == spans[u].texts and 1 <= len(h.weights) <= 6
        assert 0.0 <= h.data_weights <= 1.0 + 1e-9
    blind = head_agreement(tiny_cache)  # the weights are not on this machine
    assert all(h.weights is None and np.isnan(h.data_weights) for h in blind)
    assert [h.jaccard("nearest", "textspan") for h in blind] == [h.jaccard("nearest", "textspan") for h in heads]


def test_a_pole_whose_images_share_a_class_is_pure():
    from synthetic import planted

    cache, _ = planted()  # labels: row % 4
    top = np.zeros((cache.units.n_heads_total, cache.n_pcs, 8), np.int64)
    top[0, 0] = np.arange(8) * 4 + 1  # every image of class 1
    bottom = np.broadcast_to(np.arange(8), top.shape).copy()  # classes 0, 1, 2, 3, 0, 1, 2, 3
    rows = pole_purity(replace(cache, pole_top=top, pole_bottom=bottom))
    first = {(p.layer, p.head, p.pc, p.sign): p for p in rows}
    assert first[(0, 0, 0, "+")].purity == 1.0 and first[(0, 0, 0, "+")].modal == "1"
    assert first[(0, 0, 0, "−")].purity == 0.25
    assert len(rows) == cache.units.n_heads_total * 3 * 2


def test_random_heads_keep_each_poles_images_and_take_another_heads_label(tiny_cache):
    from residual_core.explain.scorecard_run import pc_units, random_head_units

    own = pc_units(tiny_cache)
    shuffled = random_head_units(tiny_cache, seed=0)
    label_of = {(u.layer, u.head, u.name): u.text for u in own}
    assert len(shuffled) == len(own)
    for mine, baseline in zip(own, shuffled):
        assert np.array_equal(baseline.scores, mine.scores) and baseline.name == mine.name
        assert (baseline.layer, baseline.head) != (mine.layer, mine.head)  # never the head's own label
        assert baseline.text == label_of[(baseline.layer, baseline.head, baseline.name)]
    again = random_head_units(tiny_cache, seed=0)
    assert [(u.layer, u.head) for u in again] == [(u.layer, u.head) for u in shuffled]
    other = random_head_units(tiny_cache, seed=1)
    assert [(u.layer, u.head) for u in other] != [(u.layer, u.head) for u in shuffled]
