"""Heads in words: TextSpan from the PCA against TextSpan on the images, completeness, concept search."""

from dataclasses import replace

import numpy as np
import pytest

from residual_core.read.ablation import AblationMask, evaluate, evaluate_projected
from residual_core.explain.describe import (check_query, completeness, concept_noise, require_bank, retrieve, search_heads,
                                    textspan, textspan_pcs)
from synthetic import make_cache


def _with_bank(seed: int = 0, n: int = 500, d: int = 12, n_texts: int = 60):
    """A planted cache whose heads vary along a few bank texts each, plus a random text bank."""
    rng = np.random.default_rng(seed)
    bank = rng.standard_normal((n_texts, d))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    heads = rng.standard_normal((n, 2, 3, d)) * 0.2
    for unit, (texts, scales) in enumerate([((0, 1), (3.0, 1.5)), ((5, 9, 2), (2.0, 1.8, 1.0)), ((7,), (4.0,))]):
        for t, s in zip(texts, scales):
            heads[:, unit // 3, unit % 3] += np.outer(rng.standard_normal(n) * s, bank[t])
    labels = np.arange(n) % 4
    classifier = np.linalg.qr(rng.standard_normal((d, 4)))[0]
    cache = make_cache(heads, labels, classifier)
    return replace(cache, text_embeds=bank.astype(np.float32), texts=tuple(f"text {i}" for i in range(n_texts)))


def _textspan_on_images(data: np.ndarray, texts: np.ndarray, span: np.ndarray, m: int) -> list[int]:
    """TextSpan's published loop, written out on the images' contributions [n, d]: project the texts on the head's
    span, centre, pick the text with the largest std of the projection, deflate data and texts along it."""
    texts = texts @ span.T @ span  # onto the span of the head's (centred) contributions
    data = data - data.mean(0, keepdims=True)
    picked = []
    for _ in range(m):
        projection = data @ texts.T  # [n, n_texts]
        j = int(np.argmax(projection.std(0)))
        picked.append(j)
        t = texts[j]
        norm = t @ t
        data = data - np.outer(data @ t / norm, t)
        texts = texts - np.outer(texts @ t / norm, t)
    return picked


def test_textspan_from_the_pca_picks_what_textspan_on_the_images_picks():
    cache = _with_bank()
    for unit in range(cache.units.n_heads_total):
        layer, head = cache.units.head_at(unit)
        data = cache.head_contributions(layer, head).astype(np.float64)  # [n, d]
        expected = _textspan_on_images(data, np.asarray(cache.text_embeds, np.float64),
                                       np.asarray(cache.head_components[unit], np.float64), 6)
        [reading] = textspan(cache, 6, units=[unit])
        assert list(reading.texts) == expected, (unit, reading.texts, expected)


def test_explained_shares_are_the_variance_the_picks_remove():
    cache = _with_bank()
    [reading] = textspan(cache, 4, units=[1])  # L0H1, planted along texts 5, 9, 2
    assert set(reading.texts[:3]) == {5, 9, 2}
    data = cache.head_contributions(0, 1).astype(np.float64)
    centred = data - data.mean(0)
    directions = reading.basis @ np.asarray(cache.head_components[1], np.float64)  # [m, d] orthonormal
    assert np.allclose(directions @ directions.T, np.eye(len(directions)), atol=1e-8)
    removed = ((centred @ directions.T) ** 2).sum() / (centred ** 2).sum()
    assert reading.cumulative[-1] == pytest.approx(removed, abs=1e-5)
    assert all(a >= b - 1e-12 for a, b in zip(reading.explained, reading.explained[1:]))  # greedy: most first


def test_textspan_stops_when_no_text_is_left_to_explain():
    picked, shares, basis = textspan_pcs(np.eye(3)[:2], np.array([2.0, 1.0, 0.5]), 10)
    assert picked == [0, 1] and shares == pytest.approx([2 / 3.5, 1 / 3.5]) and basis.shape == (2, 3)


def test_completeness_goes_from_the_mean_ablated_heads_to_the_model():
    cache = _with_bank()
    readings = textspan(cache, cache.n_pcs)
    heads = frozenset(cache.units.head_at(u) for u in range(cache.units.n_heads_total))
    none, everything = completeness(cache, readings, [0, cache.n_pcs])
    assert none == evaluate(cache, AblationMask(heads=heads, mode="mean")).accuracy
    assert everything == cache.baseline_accuracy()  # the full span is the head itself
    full = {u: np.eye(cache.n_pcs) for u in range(cache.units.n_heads_total)}
    assert evaluate_projected(cache, full).accuracy == cache.baseline_accuracy()


def test_search_ranks_the_heads_planted_along_a_concept_and_finds_their_images():
    cache = _with_bank()
    concept = np.asarray(cache.text_embeds[7:8])  # head L0H2 was planted along text 7 alone
    ranked = search_heads(cache, concept)
    assert (ranked[0].layer, ranked[0].head) == (0, 2) and ranked[0].share > 0.9
    assert ranked[-1].share < 0.2
    assert sum(ranked[0].pc_shares) == pytest.approx(1.0, abs=0.05) and ranked[0].pcs[0] == 0  # PC1 carries it
    top = retrieve(cache, [(0, 2)], concept, top=10)
    along = cache.head_contributions(0, 2) @ np.asarray(cache.text_embeds[7], np.float64)
    cosine = along / np.linalg.norm(cache.head_contributions(0, 2), axis=1)
    assert set(top) == set(np.argsort(-cosine)[:10])


def test_a_planted_concept_beats_random_directions_and_the_least_carried_one_is_at_noise_level():
    cache = _with_bank()
    planted = concept_noise(cache, np.asarray(cache.text_embeds[7:8]))  # L0H2 was planted along text 7
    assert not planted.at_noise and planted.best_share > 0.9 > planted.random_q99
    bank = np.asarray(cache.text_embeds, np.float64)
    carried = np.asarray(cache.head_components, np.float64).reshape(-1, bank.shape[1])  # every head's PCs
    absent = np.linalg.svd(carried)[2][-1:]  # the direction the heads carry least
    nothing = concept_noise(cache, absent)
    assert nothing.at_noise and nothing.best_share < nothing.random_median
    assert "noise level" in nothing.words("stripes", "L0H0") and "stripes" in nothing.words("stripes", "L0H0")


@pytest.mark.parametrize("query, what", [("", "empty"), ("   ", "empty"), ("!!! 123 ???", "no words"),
                                         ("a" * 400, "400 characters")])
def test_a_bad_query_is_one_line(query, what):
    with pytest.raises(ValueError, match=what):
        check_query(query)
    assert check_query("  a   red object ") == "a red object"


def test_a_cache_without_a_text_bank_is_one_line():
    cache = replace(_with_bank(), text_embeds=np.zeros((5, 12), np.float32))
    with pytest.raises(ValueError, match="no text bank"):
        require_bank(cache)
    one = replace(_with_bank(), text_embeds=np.ones((1, 12), np.float32))  # a one-line bank: say so, not "rebuild"
    with pytest.raises(ValueError, match="holds 1 text; .* at least 2.*--text-bank"):
        require_bank(one)


def test_a_model_without_its_text_tower_is_one_line_for_a_concept():
    from residual_core.engine.models import load_clip
    from residual_core.engine.zeroshot import embed_texts

    with pytest.raises(ValueError, match="without its text side"):
        embed_texts(load_clip("tiny-random", text=False), ["a red object"])


def _reference_textspan(data: np.ndarray, text_features: np.ndarray, iters: int, rank: int) -> list[int]:
    """TextSpan's algorithm as its paper and script state it, written out here on raw arrays (not the project's
    code): texts projected with the projector onto the top-``rank`` right singular vectors of the uncentred data,
    Vᵀ(V Vᵀ)⁻¹V; then on the centred data, repeatedly the text whose projection has the largest (n − 1) standard
    deviation, that text's direction removed from the data and from every text."""
    _, _, vh = np.linalg.svd(data, full_matrices=False)
    vh = vh[:rank]
    texts = (vh.T @ np.linalg.inv(vh @ vh.T) @ vh @ text_features.T).T
    centred = data - data.mean(axis=0, keepdims=True)
    picks = []
    for _ in range(iters):
        top = int(np.argmax((centred @ texts.T).std(axis=0, ddof=1)))
        picks.append(top)
        t = texts[top].copy()
        centred = centred - np.outer(centred @ t / (t @ t), t)
        texts = texts - np.outer(texts @ t / (t @ t), t)
    return picks


@pytest.mark.parametrize("rank", [80, 6])
def test_the_textspan_convention_picks_what_textspans_own_algorithm_picks(tiny_cache, rank):
    from residual_core.explain.describe import head_data, textspan_reference

    readings = textspan_reference(tiny_cache, 6, rank=rank)
    bank = np.asarray(tiny_cache.text_embeds, np.float64)
    for r in readings:
        u = tiny_cache.head_index(r.layer, r.head)
        data = head_data(tiny_cache, u)
        output = np.asarray(tiny_cache.output, np.float64)  # each image over the norm of its embedding
        raw = tiny_cache.head_contributions(r.layer, r.head) / np.linalg.norm(output, axis=1, keepdims=True)
        assert np.allclose(data, raw, atol=1e-6)
        assert list(r.texts) == _reference_textspan(raw, bank, 6, rank), r.label
    assert 0 < sum(readings[0].explained) <= 1 + 1e-9
