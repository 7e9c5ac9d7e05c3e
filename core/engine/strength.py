"""Automatic penalty strength: a small sweep scored by a rule that never sees evaluation labels.

For each candidate λ in :data:`CANDIDATES` (10⁶, 10⁴, 10², strongest first: the relative l2 penalty of a large model
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
pass, and usually fewer (see :func:`choose_strength` for the early exits).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch

from core.engine.anchor import Reference
from core.engine.backends import LocalBackend
from core.engine.configs import has_strength
from core.engine.devices import select_device
from core.engine.inference import predict_logits, rows_on
from core.engine.loop import PreparedData, train_method
from core.engine.methods import get_method
from core.errors import UserError

CANDIDATES = (1000000.0, 10000.0, 100.0)  # strongest (least change) first: see the early exit
MAX_FOLDS = 2
KEEP_TARGET = 0.97  # the least share of reference answers a chosen setting must keep (estimated)
STALL_STEPS = 20  # a trial run stops once its most-fixed count has not grown for this many steps
NO_CHANGE_CODES = {
    "no_heldout_fix": "no strength fixed held-out counterexamples better than the unchanged model",
    "no_safe_setting": "no strength both fixed held-out counterexamples and kept an estimated {keep:.0%} of the "
    "old answers on the reference images",
    "single_not_fixed": "no strength fixed the single counterexample while keeping an estimated {keep:.0%} of "
    "the old answers on the reference images",
}


def choose_strength(
    bundle,
    data,
    method: str,
    config,
    device,
    seed: int = 0,
    progress=None,
    early_exit: bool = True,
    should_stop=None,
    backend=None,
) -> dict:
    """Pick λ for ``method`` on ``data`` (a :class:`core.engine.repair.PreparedData`). Returns a report:
    ``{"chosen": λ or None, "code": reason code or None, "rule": English text, "folds": k,
    "candidates": [{"strength", "cv_accuracy", "agreement", "fixes_own", "safe", "stopped_early"}],
    "runs": trial runs made, "skipped": candidates never run}``.

    ``agreement`` is the label-free kept estimate: the share of reference images (``data.reference``)
    whose answer is unchanged, mean over folds. A candidate is *safe* when it is at least
    :data:`KEEP_TARGET` (always, without reference images). The choice: among safe candidates that
    beat the unchanged model on held-out folds, the largest λ within one counterexample of the best;
    none → ``chosen = None`` with ``code`` from :data:`NO_CHANGE_CODES`.

    What keeps it cheap (each shortcut gives the same answer as the full sweep, or rules out a
    candidate that could not have been chosen):

    * candidates run strongest first, and the sweep ends at the first safe candidate that gets every
      held-out counterexample right (no weaker λ can beat it, and the rule prefers the stronger);
      with one counterexample, at the first safe candidate that fixes it (``early_exit=False``
      runs them all, for tests and studies);
    * a candidate whose estimate falls under the target on one fold, or that fixes none of its own
      training fold beyond what the old model already got right, is not run on its other folds;
    * trial runs stop once they have fixed no further counterexample for :data:`STALL_STEPS` steps,
      and under the kept rule as soon as every counterexample is right (ε, ``min_steps``, cannot
      change which step the kept rule ends on).

    ``progress`` gets ``{"phase": "auto", "candidate": i, "candidates": m, "strength": λ, "fold": j,
    "folds": k, "done": runs finished, "total": m·k}`` before each fold's run, and
    ``{"phase": "auto", "event": "candidate_done", ...the candidate's row}`` after each candidate.

    ``should_stop()`` is asked before each fold's run and at every step inside it (as in the loop);
    when it says yes the sweep ends at once and the report has ``cancelled: True`` and no choice.

    ``backend`` (:mod:`core.engine.backends`): a parallel one gets every (λ, fold) trial as a task at once,
    the strongest λ's first; the sweep reads their results in its own order and cancels the ones it no
    longer needs at an early exit, so the report is the same as the local one. Each trial is independent
    of the others (the same seed, the reference stream restarted), which is what makes that true.
    ``should_stop`` is then asked only between the sweep's steps, not inside the trials.
    """
    get_method(method)  # an unknown name fails here, listing the valid ones
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
    base_right = base_ce == data.y_ce
    base_cv = float(base_right.float().mean()) if k >= 2 else 0.0
    trials = _Trials(bundle.model, bundle.meta.class_names, data.x_ce, data.y_ce, method, config, device, seed,
                     ref, folds, base_right)  # fmt: skip
    # Every (λ, fold) trial is one task of the backend, in the sweep's order. Local: each runs when the sweep
    # below first asks for it, as a plain loop would. Parallel: all are submitted at once (the strongest λ's
    # folds first) and those the sweep never reads are cancelled at its early exit. Either way the sweep reads
    # the same results, so the report is the same.
    keys = [(ci, fi) for ci in range(len(CANDIDATES)) for fi in range(len(folds))]
    if backend is not None and backend.parallel:
        gpus = 1 if backend.cluster_gpus() >= 1 else 0  # a worker then picks its own device
        pending = backend.start(_run_trial, keys, replace(trials, device=None), gpus)
    else:
        pending = LocalBackend().start(partial(_run_trial, should_stop=should_stop), keys, trials)
    try:
        return _sweep(pending, trials, progress, early_exit, should_stop, k, base_cv)
    finally:
        pending.cancel()


def _sweep(pending, t: _Trials, progress, early_exit: bool, should_stop, k: int, base_cv: float) -> dict:
    """The sweep over candidates and folds, reading trial ``(ci, fi)`` as ``pending.get(ci * folds + fi)``."""
    folds, ref, n = t.folds, t.ref, len(t.y_ce)

    def trial(ci: int, fi: int) -> dict:
        return pending.get(ci * len(folds) + fi)

    rows = []
    total, done, runs = len(CANDIDATES) * len(folds), 0, 0
    for ci, lam in enumerate(CANDIDATES):
        right, agree, fixes_own, stopped = 0, [], False, False
        for fi in range(len(folds)):
            if should_stop is not None and should_stop():
                return {"chosen": None, "code": None, "cancelled": True, "candidates": rows, "folds": k}
            if progress is not None:
                progress(
                    {"phase": "auto", "candidate": ci + 1, "candidates": len(CANDIDATES), "strength": lam,
                     "fold": fi + 1, "folds": len(folds), "done": done, "total": total}
                )  # fmt: skip
            result = trial(ci, fi)
            if result["cancelled"]:
                return {"chosen": None, "code": None, "cancelled": True, "candidates": rows, "folds": k}
            done, runs = done + 1, runs + 1
            if k < 2:
                fixes_own = result["own_all"]
            right += result["right"]
            if result["agreement"] is not None:
                agree.append(result["agreement"])
            last = fi == len(folds) - 1
            hopeless = (ref is not None and agree[-1] < KEEP_TARGET) or not result["fixes_new"]
            if hopeless and not last:
                stopped = True  # it cannot be chosen: it broke the kept target, or fixed nothing new
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
        decided = row["safe"] and (row["fixes_own"] if k < 2 else row["cv_accuracy"] == 1.0)
        if decided and early_exit:  # strongest first: no weaker candidate can be chosen over this one
            if progress is not None and done < total:
                progress({"phase": "auto", "event": "sweep_done", "done": total, "total": total})
            break
    skipped = [lam for lam in CANDIDATES if lam not in {r["strength"] for r in rows}]
    report = {"chosen": None, "code": None, "candidates": rows, "folds": k, "base_cv_accuracy": base_cv,
              "runs": runs, "skipped": skipped}  # fmt: skip
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


@dataclass
class _Trials:
    """What every trial run needs; sent once to a parallel backend's workers."""

    model: torch.nn.Module
    class_names: list
    x_ce: torch.Tensor
    y_ce: torch.Tensor
    method: str
    config: object
    device: torch.device | None
    seed: int
    ref: Reference | None
    folds: list
    base_right: torch.Tensor


def _run_trial(t: _Trials, key: tuple[int, int], should_stop=None) -> dict:
    """Candidate ``key[0]`` tuned on every fold but ``key[1]`` and scored on that fold and on the
    reference images: ``{"cancelled", "own_all", "fixes_new", "right", "agreement"}``."""
    ci, fi = key
    n, k = len(t.y_ce), len(t.folds)
    device = t.device or select_device("auto")  # None: a backend's worker, with or without a GPU
    if t.ref is not None:
        t.ref.device = device
    cfg = _paper_rule(replace(t.config, strength=CANDIDATES[ci]))
    if cfg.stop_rule in ("kept", "check") and t.ref is not None:
        # Under the kept rule (a trial runs it for the check rule too: it has no check split) a run ends on the
        # earliest step that fixed the most counterexamples, so the steps ε would add after they are all fixed
        # change nothing: a trial skips them.
        cfg = replace(cfg, min_steps=0)
    f = t.folds[fi]
    train_idx = np.setdiff1d(np.arange(n), f) if k >= 2 else np.arange(n)
    sub = PreparedData(t.x_ce[train_idx], t.y_ce[train_idx])
    if t.ref is not None:
        t.ref.restart()
    impl = get_method(t.method)(t.model, cfg, device)
    impl.reference = t.ref
    _, _, cancelled = train_method(
        impl, sub, device, t.class_names, seed=t.seed, should_stop=should_stop, stall_steps=STALL_STEPS
    )
    if cancelled:
        return {"cancelled": True}
    own = _predict(impl, sub.x_ce, device) == sub.y_ce
    right = int((_predict(impl, t.x_ce[f], device) == t.y_ce[f]).sum()) if len(f) else 0
    return {
        "cancelled": False,
        "own_all": bool(own.all()),
        "fixes_new": bool((own & ~t.base_right[train_idx]).any()),
        "right": right,
        "agreement": t.ref.agreement(impl.predict) if t.ref is not None else None,
    }


def _paper_rule(cfg):
    return replace(cfg, stop_rule="paper") if cfg.stop_rule == "heldout" else cfg


@torch.no_grad()
def _predict(impl, x: torch.Tensor, device) -> torch.Tensor:
    outs = [impl.predict(rows_on(x, slice(i, i + 1024), device)).argmax(1).cpu() for i in range(0, len(x), 1024)]
    return torch.cat(outs)
