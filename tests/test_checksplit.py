"""The check split: which rows steer a repair and which are reported (docs/REPAIR_GUARD.md)."""

from __future__ import annotations

import numpy as np
import torch

from core.engine.check_results import CheckScore, CheckSource, SplitCounts
from core.engine.check_rows import CHECK_SHARE, MIN_CHECK_ROWS, carve, split_rows
from core.engine.checksplit import CheckSet


def _rows(n_per_cell: int, labels=(0, 1), attrs=("a", "b")):
    y, a = [], []
    for lab in labels:
        for att in attrs:
            y += [lab] * n_per_cell
            a += [att] * n_per_cell
    return y, a


def test_rows_marked_val_are_the_check_split_and_never_reported():
    y, a = _rows(10)
    splits = ["val" if i % 4 == 0 else "test" for i in range(len(y))]
    splits[1] = " VAL "
    rep, check, counts = split_rows(y, a, splits)
    assert set(check) == {i for i, s in enumerate(splits) if s.strip().lower() == "val"}
    assert set(rep).isdisjoint(check) and len(rep) + len(check) == len(y)
    assert counts == SplitCounts(len(rep), len(check), CheckSource.VAL_ROWS)


def test_without_val_rows_a_seeded_share_of_every_group_is_carved():
    y, a = _rows(50, labels=(0, 1, 2), attrs=("red", "blue"))
    rep, check, counts = split_rows(y, a, [None] * len(y))
    assert counts.source is CheckSource.CARVED and counts.check == len(check) == round(CHECK_SHARE * len(y))
    cells = {(y[i], a[i]) for i in check}
    assert len(cells) == 6  # every (label, attribute) group is in the check split
    for cell in cells:
        assert sum((y[i], a[i]) == cell for i in check) == 10  # 20 % of each group of 50
    again, _, _ = split_rows(y, a, [""] * len(y))
    assert list(again) == list(rep)  # seeded: the same rows every time
    other, _, _ = split_rows(y, a, [None] * len(y), seed=1)
    assert list(other) != list(rep)


def test_a_set_too_small_to_spare_rows_has_no_check_split():
    y, a = _rows(3)
    rep, check, counts = split_rows(y, a, [None] * len(y))
    assert len(check) == 0 and len(rep) == len(y) and counts.source is CheckSource.NONE
    assert len(carve(*_rows(3))) < MIN_CHECK_ROWS


def test_split_counts_round_trip():
    c = SplitCounts(80, 20, CheckSource.CARVED)
    assert SplitCounts.from_json(c.to_json()) == c


def test_check_scores_right_decisions_kept_worst_group_and_balanced_accuracy():
    y = np.array([0] * 10 + [1] * 10)
    attrs = ["a"] * 5 + ["b"] * 5 + ["a"] * 5 + ["b"] * 5
    base = y.copy()
    base[15:] = 0  # the old model is wrong on group (1, b)
    check = CheckSet(torch.zeros(20, 1), y, attrs, base, torch.device("cpu"))
    assert check.score_predictions(base) == CheckScore(1.0, 0.0, 0.75, 0.75, 0, 0)
    new = y.copy()
    new[0] = 1  # one right answer broken in (0, a); group (1, b) fixed
    s = check.score_predictions(new)
    assert s.kept == 14 / 15 and s.fixed == 5 and s.broken == 1
    assert s.worst_group == 0.8 and s.accuracy == 19 / 20 and abs(s.balanced - 0.95) < 1e-12
    assert CheckScore.from_json(s.to_json()) == s


def test_check_predicts_in_batches_through_any_callable():
    y = np.arange(7) % 3
    x = torch.nn.functional.one_hot(torch.as_tensor(y), 3).float()
    check = CheckSet(x, y, [None] * 7, y, torch.device("cpu"))
    assert list(check.predict(lambda xb: xb, batch=2)) == list(y)
    assert check.score(lambda xb: xb).accuracy == 1.0
