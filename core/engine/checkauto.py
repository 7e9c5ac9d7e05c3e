"""One trained repair, and automatic strength chosen on the labelled check split.

:func:`train_one` is the training half of :func:`core.engine.repair.repair`: the method built on the base model, its
reference images, the guard of the ``check`` rule (:mod:`core.engine.guard`), and the loop.

:func:`auto_by_check`: where a check split exists (:mod:`core.engine.checksplit`), automatic strength needs no
label-free estimate and no folds of the counterexamples. It trains one guarded repair per candidate λ in
:data:`CHECK_CANDIDATES` (strongest first) and keeps the one whose guard found the best check-split objective
(:func:`core.engine.guard.objective`, among steps that keep ``check_floor`` of the check split's right decisions);
ties go to the stronger λ (the smaller change). The chosen repair is the result itself, not trained again, so auto
costs ``len(CHECK_CANDIDATES)`` default repairs. When no candidate beats the old model there, auto changes nothing
(``chosen`` None, code ``check_no_gain``), as the label-free rule may. Without a check split, auto is the label-free sweep of
:mod:`core.engine.strength`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.engine import guard as check_guard
from core.engine.events import AutoTrialStarted
from core.engine.loop import train_method
from core.engine.methods import get_method
from core.engine.methods.base import RepairMethod
from core.engine.results import AutoReport, LoopResult, NoChangeCode, Stop, StopReason
from core.engine.strength import CANDIDATES

CHECK_CANDIDATES = CANDIDATES  # the label-free sweep's λs (10⁶, 10⁴, 10²), strongest (least change) first: it wins ties


@dataclass
class Trained:
    """A trained method, the config it ran with, its guard (check rule) and how its loop went."""

    impl: RepairMethod
    config: object
    guard: check_guard.CheckGuard | None
    loop: LoopResult
    auto: AutoReport | None = None


def train_one(base_model, method: str, cfg, data, device, class_names, seed: int, *, progress=None,
              should_stop=None, stall_steps: int | None = None, trials: int = 1) -> Trained:  # fmt: skip
    """Build ``method`` on ``base_model`` with ``cfg`` and run the loop (with the guard under the check rule; ``trials``:
    how many such runs the caller keeps the best of)."""
    impl = get_method(method)(base_model, cfg, device, unlabeled=data.unlabeled)
    if impl.needs_reference():
        impl.use_reference(data.reference, seed, counterexamples=data.x_ce)
    guard = check_guard.build_guard(cfg, data, base_model, device, trials)
    base_model.to("cpu")
    loop = train_method(impl, data, device, class_names, seed=seed, progress=progress, should_stop=should_stop,
                        stall_steps=stall_steps, guard=guard)  # fmt: skip
    return Trained(impl, cfg, guard, loop)


def applies(cfg, data) -> bool:
    """Whether automatic strength chooses on the check split: the check rule, and a check split to steer by."""
    return check_guard.resolve_rule(cfg, data).stop_rule == "check"


def auto_by_check(base_model, method: str, cfg, data, device, class_names, seed: int, *, progress=None,
                  should_stop=None) -> Trained:  # fmt: skip
    """One guarded repair per λ in :data:`CHECK_CANDIDATES`; the best on the check split is returned, with its
    :class:`core.engine.results.AutoReport` (``by="check_split"``; ``check_trials``: per λ, ``{"strength",
    "objective", "step", "alpha", **check score}``)."""
    best: Trained | None = None
    best_obj = float("-inf")
    rows: list[dict] = []
    n = len(CHECK_CANDIDATES)
    for i, lam in enumerate(CHECK_CANDIDATES):
        if progress is not None:
            progress(AutoTrialStarted(candidate=i + 1, candidates=n, strength=lam, fold=1, folds=1, done=i, total=n))
        run = train_one(base_model, method, replace(cfg, strength=lam), data, device, class_names, seed,
                        should_stop=should_stop, trials=n)  # fmt: skip
        if run.loop.cancelled:
            run.auto = AutoReport(None, None, None, folds=1, candidates=[], cancelled=True, by="check_split",
                                  check_trials=rows)  # fmt: skip
            return run
        report = run.guard.report
        obj = check_guard.objective(report.score)
        rows.append({"strength": lam, "objective": obj, "step": report.step, "alpha": report.alpha,
                     **report.score.to_json()})  # fmt: skip
        if best is None or obj > best_obj + 1e-12:
            best, best_obj = run, obj
    rule = "the strength whose guarded repair scored best on the labelled check split"
    chosen, code = best.config.strength, None
    if best.guard.report.step == 0:  # no strength beat the old model on the check split: change nothing
        no_change = check_guard.no_change(cfg)
        chosen, code, rule = None, NoChangeCode.CHECK_NO_GAIN.value, no_change.reason
        best.loop = LoopResult(best.loop.history, Stop(StopReason.AUTO_NO_CHANGE))
    best.auto = AutoReport(chosen, code, rule, folds=1, candidates=[], runs=len(rows), by="check_split",
                           check_trials=rows, check_floor=cfg.check_floor)  # fmt: skip
    return best
