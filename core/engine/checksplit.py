"""The labelled check split: evaluation rows that steer a repair and never enter a reported number.

Which rows are in it is decided by :mod:`core.engine.check_rows` (no torch, so the Repair page can say so before a
run); this module adds :func:`split_dataset` and :class:`CheckSet`, which scores a model on them.

A repair is promised to fix the shortcut-conflicting images and keep the right answers. Reference images
(:mod:`core.engine.anchor`) have no labels, so on them a wrong answer fixed and a right answer broken look alike.
The evaluation set has labels: a share of it, the *check split*, can tell the two apart during a run
(:mod:`core.engine.guard`), as long as no reported number is computed on it.

Which rows (:func:`split_rows`):

* the rows marked ``split=val``, when the set has any (the user chose them);
* otherwise a seeded, group-stratified share (:data:`CHECK_SHARE`) carved from every (label, attribute) cell, so the
  check split has every group the reported part has, in the same proportions;
* none, when the set is too small to spare :data:`MIN_CHECK_ROWS` rows, or the share asked for is 0.

The reported numbers come from the other rows only, and a run's metrics say how many rows each part has
(:class:`core.engine.check_results.SplitCounts`). :class:`CheckSet` scores a model on the check split: right decisions kept, worst-group
accuracy, accuracy, and the mean of the groups' accuracies (balanced accuracy, a steadier signal on small groups).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from core.engine.check_results import CheckScore
from core.engine.check_rows import CHECK_SEED, CHECK_SHARE, split_rows
from core.engine.inference import rows_on
from core.engine.metrics import NO_ATTRIBUTE

CHECK_MIN_GROUP = 5  # the check split's worst group is over cells with at least this many rows


def split_dataset(dataset, share: float = CHECK_SHARE, seed: int = CHECK_SEED):
    """:func:`split_rows` for an :class:`core.formats.datasets.ImageDataset`."""
    records = dataset.records
    return split_rows(
        [r.label for r in records], [r.attribute for r in records], [r.split for r in records], share, seed
    )


class CheckSet:
    """The check split's images and labels, with the old model's answers on them.

    ``x`` is a tensor or :class:`core.engine.inference.DiskImages`; ``base_pred`` the old model's classes."""

    def __init__(self, x, y: np.ndarray, attributes: Sequence, base_pred: np.ndarray, device: torch.device):
        self.x, self.y = x, np.asarray(y, dtype=np.int64)
        self.base_pred = np.asarray(base_pred, dtype=np.int64)
        self.device = device
        keys = [(int(c), NO_ATTRIBUTE if a in (None, "") else str(a)) for c, a in zip(self.y, attributes)]
        cells: dict[tuple[int, str], list[int]] = {}
        for i, k in enumerate(keys):
            cells.setdefault(k, []).append(i)
        big = [np.array(v) for v in cells.values() if len(v) >= CHECK_MIN_GROUP]
        self.cells = big or [np.array(v) for v in cells.values()]
        self.base_right = self.base_pred == self.y

    def __len__(self) -> int:
        return len(self.y)

    def score_predictions(self, pred: np.ndarray) -> CheckScore:
        right = np.asarray(pred) == self.y
        accs = [float(right[c].mean()) for c in self.cells]
        n_right = int(self.base_right.sum())
        kept = float((right & self.base_right).sum() / n_right) if n_right else 1.0
        return CheckScore(
            kept=kept,
            worst_group=min(accs) if accs else float("nan"),
            accuracy=float(right.mean()) if len(right) else float("nan"),
            balanced=float(np.mean(accs)) if accs else float("nan"),
            fixed=int((right & ~self.base_right).sum()),
            broken=int((~right & self.base_right).sum()),
        )

    @torch.no_grad()
    def predict(self, predict: Callable[[torch.Tensor], torch.Tensor], batch: int = 512) -> np.ndarray:
        """Classes ``predict`` (images → logits) gives the check rows, a batch at a time."""
        outs = [
            predict(rows_on(self.x, slice(i, i + batch), self.device)).argmax(1).cpu()
            for i in range(0, len(self.y), batch)
        ]
        return torch.cat(outs).numpy() if outs else np.zeros(0, dtype=np.int64)

    def score(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> CheckScore:
        return self.score_predictions(self.predict(predict))
