"""Automatic penalty strength: a small sweep scored by a rule that never sees evaluation labels.

For each candidate λ in :data:`CANDIDATES`, the counterexamples are split into k folds (k ≤ 4).
The method is tuned on k−1 folds with the normal stopping rule and scored on the held-out fold:
does the repair *generalise* to counterexamples it did not see? Where unlabelled images are given
(the candidate pool), the share of them whose prediction is unchanged is measured too, a
label-free proxy for kept decisions.

The rule (a one-counterexample-tolerance version of the one-standard-error rule): take the
largest λ (least change) whose held-out-fold accuracy is within one counterexample (1/n) of the
best. If no candidate beats the unchanged model's accuracy on the same held-out folds, the answer
is "change nothing" (``chosen = None``), as docs/DESIGN.md §8 asks. The unlabelled agreement is
reported beside each candidate but does not decide: the pool is *meant* to be full of images
whose prediction should change. With a single counterexample there is nothing to hold out, and
the largest λ that still fixes it on its own is taken.
"""

from __future__ import annotations

import numpy as np
import torch

from core.engine.configs import make_config
from core.engine.inference import predict_logits
from core.engine.methods import get_method
from core.errors import UserError

CANDIDATES = (10.0, 100.0, 1000.0, 10000.0)
MAX_FOLDS = 4


def choose_strength(bundle, data, method: str, overrides: dict, device, seed: int = 0) -> dict:
    """Pick λ for ``method`` on ``data`` (a :class:`core.engine.repair.PreparedData`). Returns a report:
    ``{"chosen": λ or None, "candidates": [{"strength", "cv_accuracy", "agreement"}], "rule": str}``.
    """
    from core.engine.repair import PreparedData, train_method

    cls = get_method(method)
    names = {s["name"] for s in _schema(method)}
    if "strength" not in names:
        raise UserError(f"strength 'auto' needs a method with a penalty strength; {method!r} has none")
    n = len(data.y_ce)
    k = min(MAX_FOLDS, n)
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(n), k) if k >= 2 else [np.arange(0)]
    base = bundle.model.to(device)
    base_ce = predict_logits(base, data.x_ce, device).argmax(1)
    base_unl = predict_logits(base, data.unlabeled, device).argmax(1) if data.unlabeled is not None else None
    bundle.model.to("cpu")
    base_cv = float((base_ce == data.y_ce).float().mean()) if k >= 2 else 0.0
    rows = []
    for lam in CANDIDATES:
        cfg = make_config(method, {**{k2: v for k2, v in overrides.items() if k2 != "strength"}, "strength": lam})
        cfg = _paper_rule(cfg)
        right, agree, fixes_own = 0, [], False
        for f in folds if k >= 2 else [np.arange(0)]:
            train_idx = np.setdiff1d(np.arange(n), f) if k >= 2 else np.arange(n)
            sub = PreparedData(data.x_ce[train_idx], data.y_ce[train_idx])
            impl = cls(bundle.model, cfg, device)
            train_method(impl, sub, cfg, device, bundle.meta.class_names, seed=seed)
            if k < 2:
                sub_pred = impl.predict(data.x_ce.to(device)).argmax(1).cpu()
                fixes_own = bool((sub_pred == data.y_ce).all())
            if len(f):
                right += int((impl.predict(data.x_ce[f].to(device)).argmax(1).cpu() == data.y_ce[f]).sum())
            if base_unl is not None:
                pred = _predict(impl, data.unlabeled, device)
                agree.append(float((pred == base_unl).float().mean()))
        rows.append(
            {
                "strength": lam,
                "cv_accuracy": right / n if k >= 2 else None,
                "agreement": float(np.mean(agree)) if agree else None,
                "fixes_own": fixes_own,
            }
        )
    if k < 2:
        fixes = [r for r in rows if r["fixes_own"]]
        if not fixes:
            return {"chosen": None, "candidates": rows, "rule": "no strength fixed the single counterexample"}
        chosen = max(r["strength"] for r in fixes)
        return {"chosen": chosen, "candidates": rows, "rule": "one counterexample: largest strength that fixes it"}
    best = max(r["cv_accuracy"] for r in rows)
    if best <= base_cv:
        return {
            "chosen": None,
            "candidates": rows,
            "rule": "no strength fixed held-out counterexamples better than the unchanged model",
        }
    chosen = max(r["strength"] for r in rows if r["cv_accuracy"] >= best - 1.0 / n - 1e-9)
    return {
        "chosen": chosen,
        "candidates": rows,
        "rule": "largest strength within one counterexample of the best held-out-fold accuracy",
    }


def _schema(method: str) -> list[dict]:
    from core.engine.configs import config_schema

    return config_schema(method)


def _paper_rule(cfg):
    import dataclasses

    return dataclasses.replace(cfg, stop_rule="paper") if cfg.stop_rule == "heldout" else cfg


@torch.no_grad()
def _predict(impl, x: torch.Tensor, device) -> torch.Tensor:
    outs = [impl.predict(x[i : i + 1024].to(device)).argmax(1).cpu() for i in range(0, len(x), 1024)]
    return torch.cat(outs)
