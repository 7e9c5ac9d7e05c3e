"""Evaluation metrics (docs/DESIGN.md §4). Everything here returns plain data: dicts and DataFrames.

Groups are the (label, attribute) cells of an evaluation set. Worst-group accuracy is taken only
over cells with at least ``min_group_count`` examples, and that minimum is reported with it, so a
cell of two images cannot decide the headline number. Per-group accuracy carries a bootstrap 95%
interval: with small groups the interval, not the point estimate, is the honest figure.

Comparison metrics follow the model-editing literature: *kept decisions* is the share of examples
the old model got right that the new one still gets right; *errors introduced* is 1 − kept
decisions; *errors corrected* is the share the old model got wrong that the new one gets right.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_MIN_GROUP_COUNT = 10
NO_ATTRIBUTE = "(none)"


def _bootstrap_interval(correct: np.ndarray, rng: np.random.Generator, reps: int) -> tuple[float, float]:
    if len(correct) == 0:
        return float("nan"), float("nan")
    means = rng.choice(correct, size=(reps, len(correct)), replace=True).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def group_metrics(
    y_true,
    y_pred,
    attributes,
    class_names: list[str],
    min_group_count: int = DEFAULT_MIN_GROUP_COUNT,
    bootstrap: int = 200,
    seed: int = 0,
) -> dict:
    """Accuracy, per-(label, attribute) accuracy with counts and intervals, worst group, bias gap.

    If no cell reaches ``min_group_count``, the minimum is lowered to the largest cell's count and
    the lowered value is reported, so the figure is never silently computed over nothing.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    attrs = [NO_ATTRIBUTE if a in (None, "") else str(a) for a in attributes]
    if not (len(y_true) == len(y_pred) == len(attrs)):
        raise ValueError("y_true, y_pred and attributes must have the same length")
    correct = y_true == y_pred
    rng = np.random.default_rng(seed)
    cells: dict[tuple[int, str], list[int]] = {}
    for i, (y, a) in enumerate(zip(y_true.tolist(), attrs)):
        cells.setdefault((y, a), []).append(i)
    groups = []
    for (y, a), idx in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        c = correct[idx]
        lo, hi = _bootstrap_interval(c.astype(np.float64), rng, bootstrap) if bootstrap else (np.nan,) * 2
        groups.append(
            {
                "label": class_names[y],
                "attribute": a,
                "accuracy": float(c.mean()),
                "count": int(len(idx)),
                "correct": int(c.sum()),
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    used_min = min_group_count
    if groups and max(g["count"] for g in groups) < used_min:
        used_min = max(g["count"] for g in groups)
    eligible = [g["accuracy"] for g in groups if g["count"] >= used_min]
    return {
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "worst_group_accuracy": float(min(eligible)) if eligible else float("nan"),
        "bias_gap": float(max(eligible) - min(eligible)) if eligible else float("nan"),
        "min_group_count": int(used_min),
        "n": int(len(y_true)),
        "groups": groups,
    }


def compare_predictions(y_true, before, after) -> dict:
    """How the new predictions relate to the old: kept decisions, corrections, new errors."""
    y_true = np.asarray(y_true)
    before = np.asarray(before)
    after = np.asarray(after)
    old_right = before == y_true
    new_right = after == y_true
    n_old_right = int(old_right.sum())
    n_old_wrong = int((~old_right).sum())
    kept = float((old_right & new_right).sum() / n_old_right) if n_old_right else float("nan")
    corrected = float((~old_right & new_right).sum() / n_old_wrong) if n_old_wrong else float("nan")
    return {
        "kept_decisions": kept,
        "errors_introduced": float(1.0 - kept) if n_old_right else float("nan"),
        "errors_corrected": corrected,
        "changed_predictions": int((before != after).sum()),
        "n_fixed": int((~old_right & new_right).sum()),
        "n_broken": int((old_right & ~new_right).sum()),
    }


def groups_frame(m: dict) -> pd.DataFrame:
    """The per-group table of a metrics dict as a DataFrame (one row per (label, attribute))."""
    cols = ["label", "attribute", "accuracy", "count", "correct", "ci_low", "ci_high"]
    return pd.DataFrame(m.get("groups", []), columns=cols)


def find_worst_finding(m: dict) -> dict | None:
    """The worst eligible group and the accuracy of the same label elsewhere, for a plain sentence.

    Returns ``{"label", "attribute", "accuracy", "count", "other_accuracy"}`` or None when there is
    no attribute to compare against.
    """
    groups = [g for g in m.get("groups", []) if g["count"] >= m.get("min_group_count", 1)]
    if not groups:
        return None
    worst = min(groups, key=lambda g: (g["accuracy"], -g["count"]))
    others = [g for g in m["groups"] if g["label"] == worst["label"] and g["attribute"] != worst["attribute"]]
    n_other = sum(g["count"] for g in others)
    if not n_other:
        return None
    other_acc = sum(g["correct"] for g in others) / n_other
    return {
        "label": worst["label"],
        "attribute": worst["attribute"],
        "accuracy": worst["accuracy"],
        "count": worst["count"],
        "other_accuracy": float(other_acc),
        "other_count": int(n_other),
    }
