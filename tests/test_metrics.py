"""Metrics on hand-built predictions give hand-computed values."""

import math

import pytest

from core.engine.metrics import compare_predictions, find_worst_finding, group_metrics, groups_frame

CLASSES = ["a", "b"]


def test_group_metrics_by_hand():
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    p = [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
    attr = ["x", "x", "y", "y", "x", "x", "y", "y", "y", "y"]
    m = group_metrics(y, p, attr, CLASSES, min_group_count=2, bootstrap=0)
    assert m["accuracy"] == pytest.approx(0.7)
    cells = {(g["label"], g["attribute"]): (g["accuracy"], g["count"]) for g in m["groups"]}
    assert cells == {("a", "x"): (1.0, 2), ("a", "y"): (0.5, 2), ("b", "x"): (1.0, 2), ("b", "y"): (0.5, 4)}
    assert m["worst_group_accuracy"] == 0.5
    assert m["bias_gap"] == 0.5
    assert m["min_group_count"] == 2


def test_small_groups_excluded_from_worst_and_reported():
    y = [0, 0, 0, 1]
    p = [0, 0, 0, 0]
    m = group_metrics(y, p, ["x", "x", "x", "x"], CLASSES, min_group_count=2, bootstrap=0)
    assert m["worst_group_accuracy"] == 1.0  # the single "b" image is below the minimum count
    assert m["min_group_count"] == 2


def test_bootstrap_interval_brackets_the_estimate():
    y = [0] * 40
    p = [0] * 30 + [1] * 10
    g = group_metrics(y, p, ["x"] * 40, CLASSES, min_group_count=1, bootstrap=300)["groups"][0]
    assert g["ci_low"] < g["accuracy"] < g["ci_high"]


def test_compare_predictions_by_hand():
    y = [0, 0, 1, 1, 1]
    before = [0, 1, 1, 0, 0]  # right: 0, 2; wrong: 1, 3, 4
    after = [0, 0, 0, 1, 0]  # keeps 0, breaks 2, fixes 1 and 3
    c = compare_predictions(y, before, after)
    assert c["kept_decisions"] == 0.5
    assert c["errors_introduced"] == 0.5
    assert c["errors_corrected"] == pytest.approx(2 / 3)
    assert c["changed_predictions"] == 3
    assert (c["n_fixed"], c["n_broken"]) == (2, 1)


def test_nothing_right_before_gives_nan_not_a_number_made_up():
    c = compare_predictions([0, 1], [1, 0], [0, 1])
    assert math.isnan(c["kept_decisions"])


def test_finding_and_frame():
    y = [0] * 20 + [0] * 20
    p = [0] * 19 + [1] + [0] * 4 + [1] * 16
    attr = ["blue"] * 20 + ["red"] * 20
    m = group_metrics(y, p, attr, CLASSES, bootstrap=0)
    f = find_worst_finding(m)
    assert (f["label"], f["attribute"]) == ("a", "red")
    assert f["accuracy"] == pytest.approx(0.2) and f["other_accuracy"] == pytest.approx(0.95)
    assert list(groups_frame(m)["count"]) == [20, 20]
