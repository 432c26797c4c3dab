"""The scorecard on planted data: a unit built to carry one factor scores it, a random one stays at chance."""

import numpy as np
import pytest

from residual_core.data import world
from residual_core.explain.scorecard import Unit, eta_squared, named_values, score_unit


@pytest.mark.parametrize("text, expected", [
    ("three triangles in the centre", {"shape": {"triangle"}, "count": {"three"}, "position": {"centre"}}),
    ("the number eight", {"digit": {"8"}}),
    ("a handwritten digit 5", {"digit": {"5"}}),
    ("a red car", {"colour": {"red"}}),
    ("many squares at the top", {"shape": {"square"}, "position": {"top left", "top right"}}),
    ("a cross on the bottom right", {"shape": {"cross"}, "count": {"one"}, "position": {"bottom right"}}),
    ("a checkered cyan surface", {"texture": {"checkered"}, "colour": {"cyan"}}),
    ("a 3D render of a building", {}),
    ("two shapes", {"count": {"two"}}),
    ("a photo of three small purple stars", {"shape": {"star"}, "count": {"three"}, "size": {"small"},
                                           "colour": {"purple"}}),
])
def test_a_texts_factor_values_are_read_with_the_worlds_vocabulary(text, expected):
    assert named_values(text) == expected


@pytest.mark.parametrize("factor", world.FACTORS)
def test_every_factors_own_class_names_name_exactly_their_value(factor):
    """The labels read from the images are the world's class names: each must name its value and nothing else, or a
    right label scores as wrong (count's "two shapes" once named nothing)."""
    for value, classname in zip(world.FACTORS[factor], world.CLASSNAMES[factor]):
        for template in world.TEMPLATES[factor]:
            assert named_values(template.format(classname)) == {factor: {value}}, template.format(classname)


def _labels(n: int = 1_200, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f: rng.integers(len(v), size=n) for f, v in world.FACTORS.items()}


def test_a_unit_built_to_carry_one_factor_scores_it():
    labels = _labels()
    triangle = world.FACTORS["shape"].index("triangle")
    noise = np.random.default_rng(1).standard_normal(len(labels["shape"])) * 0.05
    unit = Unit("planted", 0, 0, "PC1 +", "two triangles at the top", (labels["shape"] == triangle) + noise)
    scored = score_unit(unit, labels, world.FACTORS, causal="shape")
    assert scored.factor == "shape" and scored.eta["shape"] > 0.95
    assert all(scored.eta[f] < 0.02 for f in world.FACTORS if f != "shape")
    assert scored.ap["shape"][triangle] == pytest.approx(1.0) and scored.auroc["shape"][triangle] == pytest.approx(1.0)
    assert scored.modal == "triangle" and scored.purity == 1.0 and scored.label_right
    wrong = score_unit(Unit("planted", 0, 0, "PC1 +", "many squares at the top", unit.scores), labels, world.FACTORS)
    assert not wrong.label_right  # the label names squares; the images are triangles


def test_a_count_unit_under_the_worlds_own_count_name_is_right_with_label_ap_1():
    labels = _labels(seed=4)
    two = world.FACTORS["count"].index("two")
    unit = Unit("planted", 0, 0, "PC1 +", world.CLASSNAMES["count"][two], (labels["count"] == two).astype(float))
    scored = score_unit(unit, labels, world.FACTORS)
    assert scored.factor == "count" and scored.label_right and scored.label_ap == pytest.approx(1.0)


def test_a_random_unit_stays_at_chance():
    labels = _labels(seed=2)
    unit = Unit("random", 0, 0, "r", "a red car", np.random.default_rng(3).standard_normal(len(labels["shape"])))
    scored = score_unit(unit, labels, world.FACTORS)
    assert max(scored.eta.values()) < 0.03
    base = [np.mean(labels["colour"] == v) for v in range(len(world.FACTORS["colour"]))]
    assert np.allclose(scored.ap["colour"], base, atol=0.06) and np.allclose(scored.auroc["colour"], 0.5, atol=0.08)


def test_eta_squared_is_the_share_of_variance_between_groups():
    groups = np.array([0, 0, 1, 1])
    assert eta_squared(np.array([1.0, 1.0, 3.0, 3.0]), groups) == pytest.approx(1.0)
    assert eta_squared(np.array([1.0, 3.0, 1.0, 3.0]), groups) == pytest.approx(0.0)


def test_ap_and_auroc_are_scikit_learns_on_continuous_scores():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from residual_core.explain.scorecard import value_aps

    rng = np.random.default_rng(5)
    labels = rng.integers(4, size=300)
    scores = rng.standard_normal(300) + 0.8 * (labels == 2)
    ap, auroc = value_aps(scores, labels)
    for v in range(4):
        assert ap[v] == pytest.approx(average_precision_score(labels == v, scores))
        assert auroc[v] == pytest.approx(roc_auc_score(labels == v, scores))
    ap, _ = value_aps(scores, np.zeros(300, int))
    assert np.isnan(ap[0])  # a value present everywhere has no one-against-the-rest


def test_the_verdict_names_only_the_measures_that_beat_random_directions():
    from residual_core.explain.leaderboard import verdict

    method = {"label_accuracy": 0.51, "coverage": 1.0, "best_eta_mean": 0.75, "causal_agreement": 0.40}
    chance = {"label_accuracy": 0.22, "label_accuracy_std": 0.03, "coverage": 0.99, "coverage_std": 0.01,
              "best_eta_mean": 0.74, "best_eta_mean_std": 0.02, "causal_agreement": 0.36, "causal_agreement_std": 0.03}
    maps = {"pointing_game": 0.61, "pointing_game_raw_attention": 0.65, "mass_on_objects": 0.59,
            "mass_on_objects_raw_attention": 0.60}
    line = verdict({"methods": {"TextSpan": method, "random directions": chance, "heatmaps": maps}})
    assert line.startswith("Trust label accuracy: only it separates") and "TextSpan (51% against 22%)" in line
    assert "wrong 49%" in line and "Do not read coverage, η² and causal agreement" in line
    assert "does not beat raw attention" in line
    nothing = verdict({"methods": {"TextSpan": chance | {"label_accuracy": 0.23}, "random directions": chance}})
    assert nothing.startswith("No measure separates")


def test_a_unit_carrying_one_value_is_labelled_from_the_images_and_a_noise_unit_abstains():
    from residual_core.explain.image_labels import Family, Reader

    labels = _labels()
    rng = np.random.default_rng(3)
    families = tuple(Family(f, world.CLASSNAMES[f], np.eye(len(v))) for f, v in world.FACTORS.items())
    reader = Reader(families, tuple(labels[f] for f in world.FACTORS))  # the model reads every image right here
    triangle = world.FACTORS["shape"].index("triangle")
    carrier = Unit("planted", 0, 0, "PC1 +", "", (labels["shape"] == triangle) + 0.05 * rng.standard_normal(1_200))
    read = reader.label(carrier.scores)
    assert read.text == "triangle shapes" and read.family == "shape" and read.agree == 8 and read.eta > 0.9
    assert "8 of its top 8 images read as “triangle shapes”" in read.evidence()
    scored = score_unit(Unit("planted", 0, 0, "PC1 +", read.text, carrier.scores), labels, world.FACTORS)
    assert scored.label_right and scored.label_ap == pytest.approx(1.0) and scored.best_ap == pytest.approx(1.0)
    noise = reader.label(rng.standard_normal(1_200))
    assert noise.abstains and noise.eta < 0.05 and noise.evidence().startswith("no clear label")


def test_a_label_says_what_its_ranking_tracks_where_its_top_images_share_something_else():
    from residual_core.explain.image_labels import Family, Reader, reading_aps

    labels = _labels()
    families = tuple(Family(f, world.CLASSNAMES[f], np.eye(len(v))) for f, v in world.FACTORS.items())
    reader = Reader(families, tuple(labels[f] for f in world.FACTORS))
    triangle = labels["shape"] == world.FACTORS["shape"].index("triangle")
    # large triangles first, then small triangles, then the other large shapes: the top 8 are large (and size
    # explains most of the score), while over every image the score puts all the triangles first
    scores = 1.0 * (labels["size"] == 1) + 1.3 * triangle
    read = reader.label(scores)
    assert (read.text, read.family, read.ranks) == ("large shapes", "size", "triangle shapes")
    assert read.ranks_ap == pytest.approx(1.0) and read.ranks_chance == pytest.approx(triangle.mean())
    assert "over every image it ranks “triangle shapes” first (AP 1.00" in read.evidence()
    first = score_unit(Unit("planted", 0, 0, "PC1 +", read.text, scores), labels, world.FACTORS)
    both = score_unit(Unit("planted", 0, 0, "PC1 +", read.text, scores, also=read.ranks), labels, world.FACTORS)
    assert first.label_right and both.label_right  # accuracy reads the first part alone
    assert first.label_ap < 0.9 and both.label_ap == pytest.approx(1.0) and both.label_lift == pytest.approx(1.0)
    # a second part is never the label's own value: a unit carrying one value has none
    single = reader.label(1.0 * triangle)
    assert single.text == "triangle shapes" and not single.ranks and single.ap == pytest.approx(1.0)
    from sklearn.metrics import average_precision_score

    noisy = scores + np.random.default_rng(5).standard_normal(len(scores))  # no ties: scikit-learn's AP is the same
    aps = reading_aps(np.argsort(-noisy, kind="stable"), labels["digit"], 10)
    assert np.allclose(aps, [average_precision_score(labels["digit"] == v, noisy) for v in range(10)])


def test_a_label_naming_any_tied_modal_value_is_right_and_the_tie_is_counted():
    labels = _labels()
    shape = labels["shape"]
    triangles, squares = np.flatnonzero(shape == 2)[:4], np.flatnonzero(shape == 1)[:4]
    scores = np.zeros(len(shape))
    scores[triangles], scores[squares] = 10.0, 10.0  # the top 8: four triangles and four squares
    scores += (shape == 2) * 1.0 + (shape == 1) * 1.0  # so that shape is the unit's factor
    for text in ("square shapes", "triangle shapes"):  # argmax would have picked one of them only
        scored = score_unit(Unit("planted", 0, 0, "PC1 +", text, scores), labels, world.FACTORS)
        assert scored.factor == "shape" and scored.tied and scored.label_right, text
    assert not score_unit(Unit("planted", 0, 0, "PC1 +", "circle shapes", scores), labels, world.FACTORS).label_right


def test_a_leaderboard_cell_with_nothing_to_score_is_a_dash_and_no_spread_is_left_out():
    from residual_core.explain.leaderboard import HEADERS, leaderboard_cells

    row = {"units": 4, "labelled": 1.0, "label_accuracy": 0.5, "label_ap": 0.4, "ap_ceiling": 0.6, "label_lift": 0.3,
           "lift_ceiling": 0.5,
           "causal_agreement": float("nan"), "purity_mean": 0.75, "coverage": 1.0, "best_eta_mean": 0.3,
           "label_accuracy_std": 0.0, "purity_mean_std": 0.05}
    [cells] = leaderboard_cells({"m": row})
    named = dict(zip(HEADERS, cells))
    assert named["causal agreement"] == "—" and named["label accuracy"] == "50.0%"
    assert named["purity@8"] == "75.0% ± 5.0%" and named["label AP"] == "0.40"


def test_a_heads_causal_factor_is_kept_only_where_the_images_decide_it():
    from residual_core.explain.scorecard_run import causal_factors, wilson
    from tests.synthetic import planted

    a, head_a = planted(label_head=(2, 1), seed=0)
    b, head_b = planted(label_head=(0, 0), seed=0)
    causal = causal_factors(a, {"a": a, "b": b})
    assert causal[a.head_index(*head_a)] == "a" and causal[a.head_index(*head_b)] == "b"
    noise = [u for u in range(a.units.n_heads_total) if a.units.head_at(u) not in (head_a, head_b)]
    assert all(causal[u] is None for u in noise)  # a head whose ablation moves nothing decides nothing
    low, high = wilson(31, 100)
    assert low < 0.31 < high and 0.22 < low and high < 0.41
