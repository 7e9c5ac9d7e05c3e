"""A finished repair run built to order, without training: for tests of the Review page and report.

``make_tradeoff_run`` writes a run folder the way the worker does (metrics.json, predictions.csv, a
model/ the same as the base model) from the demo's real "before" predictions, changed on purpose:
most mistakes in the worst groups are fixed, and a share of one healthy group is broken, so that
group gets worse far beyond its interval. The verdict must then name it.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from core.app.evaluation import reported_rows
from core.engine.metrics import compare_predictions, group_metrics

WORSE_GROUP = ("two", "red")  # (label, attribute) of the group the run breaks


def make_tradeoff_run(store, project_id: int, break_share: float = 0.3, fix_share: float = 0.7) -> int:
    p = store.project(project_id)
    base = store.model(p["base_model_id"])
    names = base["meta"]["class_names"]
    ev = store.dataset(p["eval_dataset_id"])
    cached = store.evaluation(p["base_model_id"], p["eval_dataset_id"])
    before = np.load(cached["predictions_path"])["predictions"].astype(np.int64)
    rows = reported_rows(ev["path"], tuple(names))
    y = np.array([r.label for r in rows.records], dtype=np.int64)
    attrs = [r.attribute or "" for r in rows.records]
    rng = np.random.default_rng(0)
    after = before.copy()
    wrong = np.flatnonzero(before != y)
    fix = rng.choice(wrong, size=int(fix_share * len(wrong)), replace=False)
    after[fix] = y[fix]
    target = names.index(WORSE_GROUP[0])
    in_group = np.flatnonzero((y == target) & (np.array(attrs) == WORSE_GROUP[1]) & (before == y))
    brk = rng.choice(in_group, size=int(break_share * len(in_group)), replace=False)
    after[brk] = (y[brk] + 5) % len(names)  # an answer from the other half of the classes
    metrics = {
        "method": "cpt",
        "strength": 1000.0,
        "steps": 12,
        "before": group_metrics(y, before, attrs, names),
        "after": group_metrics(y, after, attrs, names),
        **compare_predictions(y, before, after),
        "device": "cpu",
        "stop_reason": "all_fixed",
        "cancelled": False,
        "counterexamples": 8,
    }
    rid = store.create_run(project_id, base["id"], "cpt", {"strength": 1000.0}, "1000", 8, Path("."), "tester")
    out = store.artifact_dir("runs", str(rid))
    (out / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "path", "label", "attribute", "before", "after"])
        for i, r in enumerate(rows.records):
            w.writerow([i, r.path, names[r.label], r.attribute or "", int(before[i]), int(after[i])])
    shutil.copytree(base["path"], out / "model")
    store.queue_run(rid, out)
    store.finish_run(rid, "done", stop_reason="all_fixed", device="cpu")
    return rid
