"""The non-colour shortcuts (core/bench/marks.py): where the mark is, and which shape, follow the class."""

from __future__ import annotations

import numpy as np

from core.bench import marks


def test_corner_mark_is_grey_and_sits_in_the_chosen_corner():
    img = np.full((4, 32, 32, 3), 100, dtype=np.uint8)
    out = marks.add_corner_marks(img, np.array([0, 1, 2, 3]))
    for i, (top, left) in enumerate([(1, 1), (1, 25), (25, 1), (25, 25)]):
        patch = out[i, top : top + marks.MARK, left : left + marks.MARK]
        assert (patch[1:-1, 1:-1] == 255).all() and (patch[0] == 0).all()
        assert (patch[..., 0] == patch[..., 1]).all() and (patch[..., 1] == patch[..., 2]).all()  # no colour
        rest = out[i].copy()
        rest[top : top + marks.MARK, left : left + marks.MARK] = 100
        assert (rest == 100).all()  # nothing else changed


def test_shape_marks_differ_only_in_shape():
    gray = np.zeros((2, 28, 28), dtype=np.uint8)
    ring, cross = marks.add_shape_marks(gray, np.array([0, 1]))
    a, b = ring[1:7, 1:7, 0], cross[1:7, 1:7, 0]
    assert a.sum() != 0 and b.sum() != 0 and not np.array_equal(a, b)
    assert (ring[..., 0] == ring[..., 2]).all() and (cross[..., 0] == cross[..., 1]).all()  # grey only
    assert a[2, 2] == 0 and b[2, 2] == 255  # a hollow square vs two diagonals


def test_training_sets_agree_with_the_shortcut_as_documented():
    _, y, agree = marks.training_data("corner")
    assert abs(agree.mean() - 0.9) < 0.02 and len(y) == 2000
    _, y, agree = marks.training_data("shape")
    assert abs(agree.mean() - 0.99) < 0.01 and len(y) == 5000


def test_parts_keep_the_source_suites_check_rows():
    p = marks.parts("corner")
    assert {"eval", "pool"} <= set(p) and p["eval"]["split"].count("val") == 200
    assert set(p["eval"]["attributes"]) == set(marks.CORNERS)
