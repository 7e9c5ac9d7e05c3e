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
(:class:`core.engine.results.NoChangeCode`). With a single counterexample, the largest safe λ that fixes it.

Cost: at most ``len(CANDIDATES) · k`` short runs on the already-prepared tensors, no evaluation
pass, and usually fewer. What keeps it cheap (each shortcut gives the same answer as the full sweep,
or rules out a candidate that could not have been chosen):

* candidates run strongest first, and the sweep ends at the first safe candidate that gets every
  held-out counterexample right (no weaker λ can beat it, and the rule prefers the stronger);
  with one counterexample, at the first safe candidate that fixes it;
* a candidate whose estimate falls under the target on one fold, or that fixes none of its own
  training fold beyond what the old model already got right, is not run on its other folds;
* trial runs stop once they have fixed no further counterexample for :data:`STALL_STEPS` steps,
  and under the kept rule as soon as every counterexample is right (ε, ``min_steps``, cannot
  change which step the kept rule ends on).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch

from core.engine.anchor import Reference
from core.engine.backends import LocalBackend
from core.engine.configs import KEEP_TARGET, has_strength
from core.engine.devices import select_device
from core.engine.events import AutoCandidateDone, AutoSweepDone, AutoTrialStarted, CandidateRow, Progress
from core.engine.inference import predict_logits, rows_on
from core.engine.loop import PreparedData, train_method
from core.engine.methods import get_method
from core.engine.results import AutoReport, NoChange, NoChangeCode
from core.errors import UserError

CANDIDATES = (1000000.0, 10000.0, 100.0)  # strongest (least change) first: see the early exit
MAX_FOLDS = 2
STALL_STEPS = 20  # a trial run stops once its most-fixed count has not grown for this many steps
# KEEP_TARGET (core.engine.configs): the least share of reference answers a chosen setting must keep (estimated).


def choose_strength(
    bundle,
    data,
    method: str,
    config,
    device,
    seed: int = 0,
    progress: Progress | None = None,
    early_exit: bool = True,
    should_stop=None,
    backend=None,
) -> AutoReport:
    """Pick λ for ``method`` on ``data`` (a :class:`core.engine.repair.PreparedData`): an
    :class:`core.engine.results.AutoReport` with the choice (None: change nothing, with a ``code`` from
    :data:`core.engine.results.NO_CHANGE_WORDS` and its sentence as ``rule``), the folds, a
    :class:`core.engine.events.CandidateRow` per candidate run, the trial runs made and the candidates
    never run.

    ``agreement`` is the label-free kept estimate: the share of reference images (``data.reference``)
    whose answer is unchanged, mean over folds. A candidate is *safe* when it is at least
    :data:`KEEP_TARGET` (always, without reference images). The choice: among safe candidates that
    beat the unchanged model on held-out folds, the largest λ within one counterexample of the best.

    ``early_exit=False`` runs every candidate (for tests and studies; see the module docstring).

    ``progress`` gets an :class:`core.engine.events.AutoTrialStarted` before each fold's run, an
    :class:`core.engine.events.AutoCandidateDone` after each candidate and an
    :class:`core.engine.events.AutoSweepDone` when the sweep ends early.

    ``should_stop()`` is asked before each fold's run and at every step inside it (as in the loop);
    when it says yes the sweep ends at once and the report is ``cancelled`` with no choice.

    ``backend`` (:mod:`core.engine.backends`): a parallel one gets every (λ, fold) trial as a task at once,
    the strongest λ's first; the sweep reads their results in its own order and cancels the ones it no
    longer needs at an early exit, so the report is the same as the local one. Each trial is independent
    of the others (the same seed, the reference stream restarted), which is what makes that true.
    ``should_stop`` is then asked only between the sweep's steps, not inside the trials.
    """
    get_method(method)  # an unknown name fails here, listing the valid ones
    if not has_strength(method):
        raise UserError(f"strength 'auto' needs a method with a penalty strength; {method!r} has none")
    trials = _prepare_trials(bundle, data, method, config, device, seed)
    # Every (λ, fold) trial is one task of the backend, in the sweep's order. Local: each runs when the sweep
    # below first asks for it, as a plain loop would. Parallel: all are submitted at once (the strongest λ's
    # folds first) and those the sweep never reads are cancelled at its early exit. Either way the sweep reads
    # the same results, so the report is the same.
    keys = [(ci, fi) for ci in range(len(CANDIDATES)) for fi in range(len(trials.folds))]
    if backend is not None and backend.parallel:
        gpus = 1 if backend.cluster_gpus() >= 1 else 0  # a worker then picks its own device
        pending = backend.start(_run_trial, keys, replace(trials, device=None), gpus)
    else:
        pending = LocalBackend().start(partial(_run_trial, should_stop=should_stop), keys, trials)
    try:
        return _Sweep(pending, trials, progress, should_stop).run(early_exit)
    finally:
        pending.cancel()


def _prepare_trials(bundle, data, method: str, config, device, seed: int) -> _Trials:
    """The folds, the old model's answers on the counterexamples and the reference images' answers."""
    n = len(data.y_ce)
    k = min(MAX_FOLDS, n) if n >= 2 else 1
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(n), k) if k >= 2 else [np.arange(0)]
    base = bundle.model.to(device)
    base_ce = predict_logits(base, data.x_ce, device).argmax(1)
    ref = Reference(data.reference, bundle.model, device, seed) if data.reference is not None else None
    bundle.model.to("cpu")
    base_right = base_ce == data.y_ce
    return _Trials(bundle.model, bundle.meta.class_names, data.x_ce, data.y_ce, method, config, device, seed,
                   ref, folds, base_right, k)  # fmt: skip


class _Sweep:
    """The sweep over candidates and folds, reading trial ``(ci, fi)`` as ``pending.get(ci * folds + fi)``."""

    def __init__(self, pending, trials: _Trials, progress: Progress | None, should_stop):
        self.pending, self.t, self.progress, self.should_stop = pending, trials, progress, should_stop
        self.n = len(trials.y_ce)
        self.total, self.done, self.runs = len(CANDIDATES) * len(trials.folds), 0, 0
        self.base_cv = float(trials.base_right.float().mean()) if trials.k >= 2 else 0.0

    def _emit(self, event) -> None:
        if self.progress is not None:
            self.progress(event)

    def run(self, early_exit: bool) -> AutoReport:
        rows: list[CandidateRow] = []
        for ci, lam in enumerate(CANDIDATES):
            row = self._candidate(ci, lam)
            if row is None:
                return AutoReport(None, None, None, self.t.k, rows, cancelled=True)
            rows.append(row)
            self._emit(AutoCandidateDone(self.done, self.total, row))
            decided = row.safe and (row.fixes_own if self.t.k < 2 else row.cv_accuracy == 1.0)
            if decided and early_exit:  # strongest first: no weaker candidate can be chosen over this one
                if self.done < self.total:
                    self._emit(AutoSweepDone(self.total, self.total))
                break
        return self._decide(rows)

    def _candidate(self, ci: int, lam: float) -> CandidateRow | None:
        """Candidate ``ci`` over its folds (fewer when it cannot be chosen); None when cancelled."""
        t, folds = self.t, self.t.folds
        right, agree, fixes_own, stopped = 0, [], False, False
        for fi in range(len(folds)):
            if self.should_stop is not None and self.should_stop():
                return None
            self._emit(AutoTrialStarted(ci + 1, len(CANDIDATES), lam, fi + 1, len(folds), self.done, self.total))
            result = self.pending.get(ci * len(folds) + fi)
            if result.cancelled:
                return None
            self.done, self.runs = self.done + 1, self.runs + 1
            if t.k < 2:
                fixes_own = result.own_all
            right += result.right
            if result.agreement is not None:
                agree.append(result.agreement)
            hopeless = (t.ref is not None and agree[-1] < KEEP_TARGET) or not result.fixes_new
            if hopeless and fi < len(folds) - 1:
                stopped = True  # it cannot be chosen: it broke the kept target, or fixed nothing new
                self.done += len(folds) - fi - 1
                break
        a = float(np.mean(agree)) if agree else None
        return CandidateRow(
            strength=lam,
            cv_accuracy=right / self.n if t.k >= 2 and not stopped else None,
            agreement=a,
            fixes_own=fixes_own,
            safe=a is None or (a >= KEEP_TARGET and not stopped),
            stopped_early=stopped,
        )

    def _decide(self, rows: list[CandidateRow]) -> AutoReport:
        """The rule of the module docstring, over the candidates that ran."""
        skipped = [lam for lam in CANDIDATES if lam not in {r.strength for r in rows}]

        def report(chosen, code, rule) -> AutoReport:
            return AutoReport(chosen, code, rule, self.t.k, rows, self.base_cv, self.runs, skipped)

        def no_change(code: NoChangeCode) -> AutoReport:
            return report(None, code.value, NoChange.of(code, KEEP_TARGET).reason)

        if self.t.k < 2:
            fixes = [r for r in rows if r.fixes_own and r.safe]
            if not fixes:
                return no_change(NoChangeCode.SINGLE_NOT_FIXED)
            return report(
                max(r.strength for r in fixes), None, "one counterexample: the largest safe strength that fixes it"
            )
        helpful = [r for r in rows if r.cv_accuracy is not None and r.cv_accuracy > self.base_cv]
        safe = [r for r in helpful if r.safe]
        if not safe:
            stopped = helpful or any(r.stopped_early for r in rows)
            return no_change(NoChangeCode.NO_SAFE_SETTING if stopped else NoChangeCode.NO_HELDOUT_FIX)
        best = max(r.cv_accuracy for r in safe)
        chosen = max(r.strength for r in safe if r.cv_accuracy >= best - 1.0 / self.n - 1e-9)
        return report(
            chosen, None, "largest safe strength within one counterexample of the best held-out-fold accuracy"
        )


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
    k: int  # the number of folds that score (1: one counterexample, scored on itself)


@dataclass(frozen=True)
class _TrialResult:
    """One trial run: whether it fixed all of its own fold (``own_all``) and any the old model got wrong
    (``fixes_new``), how many of the held-out fold it got right, and the kept estimate."""

    cancelled: bool
    own_all: bool = False
    fixes_new: bool = False
    right: int = 0
    agreement: float | None = None


def _run_trial(t: _Trials, key: tuple[int, int], should_stop=None) -> _TrialResult:
    """Candidate ``key[0]`` tuned on every fold but ``key[1]`` and scored on that fold and on the
    reference images."""
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
    impl.adopt_reference(t.ref, sub.x_ce)  # what CPT derives from them (anchor_skip, its weights), as a run does
    loop = train_method(impl, sub, device, t.class_names, seed=t.seed, should_stop=should_stop, stall_steps=STALL_STEPS)
    if loop.cancelled:
        return _TrialResult(cancelled=True)
    own = _predict(impl, sub.x_ce, device) == sub.y_ce
    right = int((_predict(impl, t.x_ce[f], device) == t.y_ce[f]).sum()) if len(f) else 0
    return _TrialResult(
        cancelled=False,
        own_all=bool(own.all()),
        fixes_new=bool((own & ~t.base_right[train_idx]).any()),
        right=right,
        agreement=t.ref.agreement(impl.predict) if t.ref is not None else None,
    )


def _paper_rule(cfg):
    return replace(cfg, stop_rule="paper") if cfg.stop_rule == "heldout" else cfg


@torch.no_grad()
def _predict(impl, x: torch.Tensor, device) -> torch.Tensor:
    outs = [impl.predict(rows_on(x, slice(i, i + 1024), device)).argmax(1).cpu() for i in range(0, len(x), 1024)]
    return torch.cat(outs)
