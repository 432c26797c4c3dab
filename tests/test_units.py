"""Unit labels and indices have one home; figures hand (layer, head) back as data."""

from types import SimpleNamespace

import numpy as np
import pytest

from dashboard import figures
from residual_core.engine.units import UnitTable, head_label, pc_label


def test_head_index_and_head_at_are_inverse_and_checked():
    units = UnitTable(3, 5)
    assert [units.head_at(units.head_index(l, h)) for l in range(3) for h in range(5)] == \
        [(l, h) for l in range(3) for h in range(5)]
    assert units.head_labels()[units.head_index(2, 4)] == "L2H4" == head_label(2, 4)
    assert units.labels[units.first_head_row + units.head_index(1, 0)] == "L1H0"
    assert pc_label(0, 1, 0) == "L0H1 PC1"
    with pytest.raises(ValueError, match="no head L3H0"):
        units.head_index(3, 0)
    with pytest.raises(ValueError, match="outside"):
        units.head_at(15)


def _click(fig, index: int):
    cell = fig.data[1].customdata[index]  # what Streamlit returns for a clicked marker
    return SimpleNamespace(selection=SimpleNamespace(points=[{"customdata": list(cell)}]))


def test_a_clicked_heatmap_cell_carries_its_layer_and_head():
    values = np.arange(12.0).reshape(3, 4) / 7  # fractional values must not leak into the indices
    fig = figures.heads_heatmap(values, "t", "u")
    assert figures.picked(_click(fig, UnitTable(3, 4).head_index(2, 1))) == (2, 1)
    matrix = np.full((2, 12), 0.5)
    fig = figures.compare_heatmap(matrix, ["a", "b"], UnitTable(3, 4), "t")
    assert figures.picked(_click(fig, 12 + UnitTable(3, 4).head_index(1, 3))) == (1, 3, 1)  # row b
    assert figures.picked(SimpleNamespace(selection=SimpleNamespace(points=[]))) is None
    browser = SimpleNamespace(selection=SimpleNamespace(points=[{"customdata": {"1": 3, "0": 1, "2": 0.25}}]))
    assert figures.picked(browser) == (1, 3)  # what a real browser sends (seen in Chromium)


def test_per_class_bars_hold_both_accuracies_of_every_class_and_a_missing_one_as_null():
    chart = figures.per_class_bars(("cat", "dog"), np.array([0.5, np.nan]), np.array([0.25, 1.0])).to_dict()
    rows = next(iter(chart["datasets"].values()))
    assert [(r["class"], r["which"], r["accuracy"]) for r in rows] == [
        ("cat", "unablated", 0.5), ("dog", "unablated", None), ("cat", "ablated", 0.25), ("dog", "ablated", 1.0)]
    assert chart["encoding"]["x"]["sort"] == ["cat", "dog"] and chart["encoding"]["y"]["scale"]["domain"] == [0, 1]
