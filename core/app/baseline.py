"""What a repair is compared with on the Review page and in its report: the *original* model (the base model
the repair was tuned from; the run's own numbers) or the model *in use now* (the repaired model of another
approved repair that the project uses).

Against the model in use, nothing is copied from either run's ``metrics.json``: the "before" side is
computed from the in-use repair's answers on the reviewed run's evaluation rows (:func:`relative_metrics`,
with :func:`core.engine.metrics.group_metrics` and :func:`core.engine.metrics.compare_predictions`, as the
engine computes its own), so the card, the verdict, the counts, the bars, the trade-off chart and both
galleries all follow the switch. The two runs must have answered the same images with the same classes;
otherwise, and when the project uses the original model or the reviewed run itself, the switch offers only
the original and :func:`in_use_option` says why. Page side: no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from core.app import runs
from core.app.runs import model_in_use, prediction_rows, run_result
from core.app.store import Store
from core.engine.metrics import compare_predictions, group_metrics


class BaselineKind(StrEnum):
    ORIGINAL = "original"
    IN_USE = "in_use"


@dataclass(frozen=True)
class Baseline:
    """The model a repair is compared with: the original, or the repaired model of run ``run_id``."""

    kind: BaselineKind = BaselineKind.ORIGINAL
    run_id: int | None = None

    def words(self, t: Callable[..., str]) -> str:
        """``Compared with: the original model`` / ``… the model in use now (repair #3)``."""
        if self.kind is BaselineKind.IN_USE:
            return t("baseline_compared_in_use", run=self.run_id)
        return t("baseline_compared_original")

    def name(self, t: Callable[..., str]) -> str:
        """The baseline's name on a chart: ``Original model`` / ``In use now (repair #3)``."""
        if self.kind is BaselineKind.IN_USE:
            return t("baseline_name_in_use", run=self.run_id)
        return t("baseline_name_original")


ORIGINAL = Baseline()


@dataclass(frozen=True)
class InUseOption:
    """Whether the switch can offer the model in use: ``run_id`` the repair in use (None for the original),
    ``reason`` a translation key saying why it cannot (None when it can)."""

    run_id: int | None
    reason: str | None

    @property
    def available(self) -> bool:
        return self.reason is None

    def baseline(self) -> Baseline:
        return Baseline(BaselineKind.IN_USE, self.run_id) if self.available else ORIGINAL


def in_use_option(store: Store, run_id: int) -> InUseOption:
    """The model in use as a baseline for the repair ``run_id``, or why there is none."""
    run = store.run(run_id)
    in_use = model_in_use(store, run["project_id"])
    if in_use is None:
        return InUseOption(None, "baseline_none_in_use")
    if in_use == run_id:
        return InUseOption(in_use, "baseline_is_this_run")
    if _aligned(store, run_id, in_use) is None:
        return InUseOption(in_use, "baseline_other_rows")
    return InUseOption(in_use, None)


def _aligned(store: Store, run_id: int, other_id: int) -> np.ndarray | None:
    """The answers of ``other_id``'s model on ``run_id``'s evaluation rows, in their order; None when the two
    runs did not answer the same images with the same classes."""
    run, other = store.run(run_id), store.run(other_id)
    if run_result(store, other_id) is None:
        return None
    names = store.model(run["model_id"])["meta"]["class_names"]
    if store.model(other["model_id"])["meta"]["class_names"] != names:
        return None
    rows, theirs = prediction_rows(store, run_id), prediction_rows(store, other_id)
    answers = {r["path"]: r["after"] for r in theirs}
    if not rows or len(answers) != len(rows) or any(r["path"] not in answers for r in rows):
        return None
    return np.array([answers[r["path"]] for r in rows], dtype=np.int64)


def baseline_answers(store: Store, run_id: int, baseline: Baseline) -> list[int] | None:
    """The baseline's answers on the run's evaluation rows: None for the original (the rows' own ``before``)."""
    if baseline.kind is BaselineKind.ORIGINAL:
        return None
    base = _aligned(store, run_id, baseline.run_id)
    if base is None:
        raise ValueError(f"run {baseline.run_id} did not answer the evaluation rows of run {run_id}")
    return base.tolist()


def relative_metrics(metrics: dict, rows: list[dict], base: list[int], after: list[int], names: list[str]) -> dict:
    """``metrics`` (a run's, or a preview's) with its "before" side and every comparison count recomputed
    against the answers ``base`` on the same ``rows``; ``after`` are the reviewed model's answers."""
    y = np.array([r["label"] for r in rows], dtype=np.int64)
    attributes = [r["attribute"] for r in rows]
    min_count = metrics["before"]["min_group_count"]
    out = {k: v for k, v in metrics.items() if k != "no_change"}  # "no change" was said of the original
    out["before"] = group_metrics(y, np.asarray(base), attributes, names, min_count)
    out.update(compare_predictions(y, np.asarray(base), np.asarray(after)))
    return out


def against(store: Store, run_id: int, metrics: dict, after: list[int] | None, baseline: Baseline) -> dict:
    """The reviewed metrics against ``baseline`` (unchanged for the original). ``after``: the reviewed
    answers when they are not the run's own (a preview at a lower α)."""
    if baseline.kind is BaselineKind.ORIGINAL:
        return metrics
    run = store.run(run_id)
    rows = prediction_rows(store, run_id)
    names = store.model(run["model_id"])["meta"]["class_names"]
    mine = after if after is not None else [r["after"] for r in rows]
    return relative_metrics(metrics, rows, baseline_answers(store, run_id, baseline), mine, names)


def kept_against(store: Store, run_id: int, baseline: Baseline) -> float | None:
    """The kept decisions of run ``run_id`` against ``baseline`` (for the trade-off chart); None when the run
    did not answer the baseline's rows."""
    if baseline.kind is BaselineKind.ORIGINAL:
        m = run_result(store, run_id)
        return None if m is None else m.comparison.kept_decisions
    rows = prediction_rows(store, run_id)
    base = _aligned(store, run_id, baseline.run_id)
    if base is None:
        return None
    y = np.array([r["label"] for r in rows], dtype=np.int64)
    return compare_predictions(y, base, np.array([r["after"] for r in rows]))["kept_decisions"]


def tradeoff_points(store: Store, project_id: int, baseline: Baseline) -> list[dict]:
    """:func:`core.app.runs.tradeoff_points` with each run's kept decisions against ``baseline``; runs that did
    not answer the baseline's rows are left out."""
    points = runs.tradeoff_points(store, project_id)
    if baseline.kind is BaselineKind.ORIGINAL:
        return points
    out = []
    for p in points:
        kept = kept_against(store, p["run_id"], baseline)
        if kept is not None:
            out.append({**p, "kept": kept})
    return out
