"""Which evaluation rows form the check split (:mod:`core.engine.checksplit`), without torch: the Repair page says
how many check images the next repair will be steered by before it runs.

:func:`split_rows`: the rows marked ``split=val`` when the set has any; else a seeded, group-stratified share
(:data:`CHECK_SHARE`) carved by :func:`carve`; none when that gives fewer than :data:`MIN_CHECK_ROWS` rows or the
share is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.engine.check_results import CheckSource, SplitCounts
from core.engine.metrics import NO_ATTRIBUTE

CHECK_SHARE = 0.2  # share of an evaluation set carved into the check split when it has no split=val rows
CHECK_SEED = 2404  # the carve is seeded: the same set always gives the same split
MIN_CHECK_ROWS = 20  # fewer check rows than this: no check split (too few to steer by)


def carve(
    labels: Sequence[int], attributes: Sequence, share: float = CHECK_SHARE, seed: int = CHECK_SEED
) -> np.ndarray:
    """Indices of a seeded share of each (label, attribute) cell, sorted: the automatic check split.

    Each cell gives ``round(share · size)`` rows (cells of one or two rows may give none), chosen by a generator
    seeded from ``seed`` alone, so the split depends only on the rows' labels and attributes and their order."""
    cells: dict[tuple[int, str], list[int]] = {}
    for i, (y, a) in enumerate(zip(labels, attributes)):
        cells.setdefault((int(y), NO_ATTRIBUTE if a in (None, "") else str(a)), []).append(i)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for key in sorted(cells):
        idx = np.array(cells[key])
        take = int(round(share * len(idx)))
        chosen.extend(rng.permutation(idx)[:take].tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def split_rows(
    labels: Sequence[int],
    attributes: Sequence,
    splits: Sequence[str | None],
    share: float = CHECK_SHARE,
    seed: int = CHECK_SEED,
) -> tuple[np.ndarray, np.ndarray, SplitCounts]:
    """(reported indices, check indices, counts) for an evaluation set's rows; see the module docstring."""
    n = len(labels)
    marked = np.array([(s or "").strip().lower() == "val" for s in splits], dtype=bool)
    if marked.any():
        check, source = np.flatnonzero(marked), CheckSource.VAL_ROWS
    else:
        check, source = carve(labels, attributes, share, seed), CheckSource.CARVED
        if len(check) < MIN_CHECK_ROWS or share <= 0:
            check, source = np.zeros(0, dtype=np.int64), CheckSource.NONE
    keep = np.ones(n, dtype=bool)
    keep[check] = False
    reported = np.flatnonzero(keep)
    return reported, check, SplitCounts(int(len(reported)), int(len(check)), source)
