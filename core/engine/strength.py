"""Automatic penalty strength: a small sweep scored by a rule that never sees evaluation labels.

For each candidate λ in :data:`CANDIDATES` (10², 10⁴, 10⁶: the relative l2 penalty of a large model
needs the upper end), the counterexamples are split into k ≤ :data:`MAX_FOLDS` folds (none with one
counterexample). The method is tuned on the other folds with its normal stopping rule and scored on
the held-out fold: does the repair *generalise* to counterexamples it did not see? Beside it, the
label-free kept estimate: the share of *reference* images (typical unlabelled inputs,
:mod:`core.engine.anchor`; never the candidate pool, which is full of images whose answer should change)
whose answer is unchanged.

The rule: a candidate is *safe* when its kept estimate is at least :data:`KEEP_TARGET` (97 %).
Among safe candidates that beat the unchanged model on the held-out folds, take the largest λ
(least change) within one counterexample (1/n) of the best. If there is none, the answer is
"change nothing" (``chosen = None``) with a machine-readable ``code`` and an English ``rule``
(:data:`NO_CHANGE_CODES`). With a single counterexample, the largest safe λ that fixes it.

Cost: at most ``len(CANDIDATES) · k`` short runs on the already-prepared tensors, no evaluation
pass; a candidate that fails the kept target on one fold skips its other folds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from core.engine.anchor import Reference
from core.engine.configs import has_strength
from core.engine.inference import predict_logits
from core.engine.loop import PreparedData, train_method
from core.engine.methods import get_method
from core.errors import UserError

CANDIDATES = (100.0, 10000.0, 1000000.0)
MAX_FOLDS = 2
KEEP_TARGET = 0.97  # the least share of reference answers a chosen setting must keep (estimated)
NO_CHANGE_CODES = {
    "no_heldout_fix": "no strength fixed held-out counterexamples better than the unchanged model",
    "no_safe_setting": "no strength both fixed held-out counterexamples and kept an estimated {keep:.0%} of the "
    "old answers on the reference images",
    "single_not_fixed": "no strength fixed the single counterexample while keeping an estimated {keep:.0%} of "
    "the old answers on the reference images",
}


def choose_strength(bundle, data, method: str, config, device, seed: int = 0, progress=None, should_stop=None) -> dict:
    """Pick λ for ``method`` on ``data`` (a :class:`core.engine.repair.PreparedData`). Returns a report:
    ``{"chosen": λ or None, "code": reason code or None, "rule": English text, "folds": k,
    "candidates": [{"strength", "cv_accuracy", "agreement", "fixes_own", "safe", "stopped_early"}]}``.

    ``agreement`` is the label-free kept estimate: the share of reference images (``data.reference``)
    whose answer is unchanged, mean over folds. A candidate is *safe* when it is at least
    :data:`KEEP_TARGET` (always, without reference images). The choice: among safe candidates that
    beat the unchanged model on held-out folds, the largest λ within one counterexample of the best;
    none → ``chosen = None`` with ``code`` from :data:`NO_CHANGE_CODES`. A candidate whose estimate
    falls under the target on one fold is not run on the others (it cannot be chosen).

    ``progress`` gets ``{"phase": "auto", "candidate": i, "candidates": m, "strength": λ, "fold": j,
    "folds": k, "done": runs finished, "total": m·k}`` before each fold's run, and
    ``{"phase": "auto", "event": "candidate_done", ...the candidate's row}`` after each candidate.

    ``should_stop()`` is asked before each fold's run and at every step inside it (as in the loop);
    when it says yes the sweep ends at once and the report has ``cancelled: True`` and no choice.
    """
    cls = get_method(method)
    if not has_strength(method):
        raise UserError(f"strength 'auto' needs a method with a penalty strength; {method!r} has none")
    n = len(data.y_ce)
    k = min(MAX_FOLDS, n) if n >= 2 else 1
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(n), k) if k >= 2 else [np.arange(0)]
    base = bundle.model.to(device)
    base_ce = predict_logits(base, data.x_ce, device).argmax(1)
    ref = Reference(data.reference, bundle.model, device, seed) if data.reference is not None else None
    bundle.model.to("cpu")
    base_cv = float((base_ce == data.y_ce).float().mean()) if k >= 2 else 0.0
    rows = []
    total, done = len(CANDIDATES) * len(folds), 0
    for ci, lam in enumerate(CANDIDATES):
        cfg = _paper_rule(replace(config, strength=lam))
        right, agree, fixes_own, stopped = 0, [], False, False
        for fi, f in enumerate(folds):
            if should_stop is not None and should_stop():
                return {"chosen": None, "code": None, "cancelled": True, "candidates": rows, "folds": k}
            if progress is not None:
                progress(
                    {"phase": "auto", "candidate": ci + 1, "candidates": len(CANDIDATES), "strength": lam,
                     "fold": fi + 1, "folds": len(folds), "done": done, "total": total}
                )  # fmt: skip
            train_idx = np.setdiff1d(np.arange(n), f) if k >= 2 else np.arange(n)
            sub = PreparedData(data.x_ce[train_idx], data.y_ce[train_idx])
            impl = cls(bundle.model, cfg, device)
            impl.reference = ref
            _, _, cancelled = train_method(
                impl, sub, device, bundle.meta.class_names, seed=seed, should_stop=should_stop
            )
            if cancelled:
                return {"chosen": None, "code": None, "cancelled": True, "candidates": rows, "folds": k}
            done += 1
            if k < 2:
                sub_pred = impl.predict(data.x_ce.to(device)).argmax(1).cpu()
                fixes_own = bool((sub_pred == data.y_ce).all())
            if len(f):
                right += int((impl.predict(data.x_ce[f].to(device)).argmax(1).cpu() == data.y_ce[f]).sum())
            if ref is not None:
                agree.append(ref.agreement(impl.predict))
                if agree[-1] < KEEP_TARGET and fi < len(folds) - 1:
                    stopped = True  # hopeless: it already failed the kept target on one fold
                    done += len(folds) - fi - 1
                    break
        a = float(np.mean(agree)) if agree else None
        row = {
            "strength": lam,
            "cv_accuracy": right / n if k >= 2 and not stopped else None,
            "agreement": a,
            "fixes_own": fixes_own,
            "safe": a is None or (a >= KEEP_TARGET and not stopped),
            "stopped_early": stopped,
        }
        rows.append(row)
        if progress is not None:
            progress({"phase": "auto", "event": "candidate_done", "done": done, "total": total, **row})
    report = {"chosen": None, "code": None, "candidates": rows, "folds": k, "base_cv_accuracy": base_cv}
    keep = {"keep": KEEP_TARGET}
    if k < 2:
        fixes = [r for r in rows if r["fixes_own"] and r["safe"]]
        if not fixes:
            code = "single_not_fixed"
            return {**report, "code": code, "rule": NO_CHANGE_CODES[code].format(**keep)}
        return {**report, "chosen": max(r["strength"] for r in fixes),
                "rule": "one counterexample: the largest safe strength that fixes it"}  # fmt: skip
    helpful = [r for r in rows if r["cv_accuracy"] is not None and r["cv_accuracy"] > base_cv]
    safe = [r for r in helpful if r["safe"]]
    if not safe:
        code = "no_safe_setting" if helpful or any(r["stopped_early"] for r in rows) else "no_heldout_fix"
        return {**report, "code": code, "rule": NO_CHANGE_CODES[code].format(**keep)}
    best = max(r["cv_accuracy"] for r in safe)
    chosen = max(r["strength"] for r in safe if r["cv_accuracy"] >= best - 1.0 / n - 1e-9)
    return {
        **report,
        "chosen": chosen,
        "rule": "largest safe strength within one counterexample of the best held-out-fold accuracy",
    }


def _paper_rule(cfg):
    return replace(cfg, stop_rule="paper") if cfg.stop_rule == "heldout" else cfg


@torch.no_grad()
def _predict(impl, x: torch.Tensor, device) -> torch.Tensor:
    outs = [impl.predict(x[i : i + 1024].to(device)).argmax(1).cpu() for i in range(0, len(x), 1024)]
    return torch.cat(outs)
