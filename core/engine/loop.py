"""The training loop and its stopping rules: one loop for every repair method.

One loop serves every method in :mod:`core.engine.methods`: each step calls ``method.update`` on a batch
of counterexamples, then checks the stopping rule.

* **paper** (Penzel et al. 2024, §3.3): stop as soon as every counterexample in the tuning set is
  classified correctly *and* at least ``min_steps`` (ε) steps have passed; otherwise run to
  ``max_steps``. Checked after each step on the current θ + δ.
* **kept**: the paper's rule, plus a floor on the label-free kept estimate: after every step, the
  share of reference images (typical, unlabelled; :mod:`core.engine.anchor`) whose answer is unchanged is
  measured; as soon as it falls below ``keep_floor`` the run stops. Either way (floor, or the
  paper's condition, or ``max_steps``) the run ends on the step with the most counterexamples
  fixed among those above the floor, the earliest such step (the least change); that is step 0,
  the unchanged model, if no step fixed more than the old model did. Without reference images it
  is the paper's rule. With ``backtracks`` > 0 a step that takes the estimate under the floor is
  first undone and the step size halved (a trust region on the answers: the floor is a constraint
  the run works within, not only a reason to stop); the run stops at the floor once that has
  happened ``backtracks`` times.
* **heldout**: every ``eval_every`` steps, measure worst-group accuracy on a labelled validation
  set; keep the best state, stop after ``patience`` checks without improvement, restore the best.
* **check** (CPT's default): the guard on the labelled check split (:mod:`core.engine.guard`) scores the
  model every few steps, stops after its patience, and leaves the method on the step and the strength
  after the fact (θ + α·δ) it chose. Without a check split it is the kept rule.

The evaluation set's check split (:mod:`core.engine.checksplit`: rows with ``split == "val"``, else a
carved share) is the validation set (used for the check and held-out rules and the live curves); the reported before/after numbers use the other rows only, so no
number shown to the user was used to steer the run.

:func:`train_method` relies only on the :class:`core.engine.methods.base.RepairMethod` protocol and
returns a :class:`core.engine.results.LoopResult`: the step events, a :class:`core.engine.results.Stop`
(the :class:`core.engine.results.StopReason` and the step the kept or held-out rule went back to) and
whether it was cancelled.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from core.engine.augment import augmenter
from core.engine.devices import describe_device
from core.engine.events import Progress, StepEvent
from core.engine.inference import predict_logits
from core.engine.methods.base import RepairMethod
from core.engine.metrics import group_metrics
from core.engine.old_answers import OldAnswers
from core.engine.results import LoopResult, Restored, RestoreRule, Stop, StopReason
from core.errors import UserError


@dataclass
class PreparedData:
    """Tensors for one run: counterexamples, the reported evaluation part and the validation part.

    The image sets other than the counterexamples may also be :class:`core.engine.inference.DiskImages`
    (indexed like a tensor, read from disk a batch at a time). They are read-only once prepared: ``old``
    (:class:`core.engine.old_answers.OldAnswers`) keeps the old model's answers on them, so the runs that share one
    prepared draw (auto's trials, the benchmark's methods) predict those once."""

    x_ce: torch.Tensor
    y_ce: torch.Tensor
    x_eval: torch.Tensor | None = None
    y_eval: np.ndarray | None = None
    attr_eval: list | None = None
    eval_indices: np.ndarray | None = None
    x_val: torch.Tensor | None = None
    y_val: np.ndarray | None = None
    attr_val: list | None = None
    unlabeled: torch.Tensor | None = None
    reference: torch.Tensor | None = None  # typical unlabelled images: anchor + kept estimate
    split: object | None = None  # core.engine.checksplit.SplitCounts: reported and check rows (the val part)
    old: OldAnswers = field(default_factory=OldAnswers)  # the old model's answers on these rows, computed once


def _worst_group(preds, y, attrs, class_names) -> float:
    return group_metrics(y, preds, attrs, class_names, bootstrap=0)["worst_group_accuracy"]


def train_method(
    method: RepairMethod,
    data: PreparedData,
    device: torch.device,
    class_names: list[str],
    *,
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    stall_steps: int | None = None,
    guard=None,
) -> LoopResult:
    """The shared loop, run with the method's own config; the method holds the result.

    ``stall_steps`` (used by automatic strength, in its trial runs and in the repair it then runs): stop with reason
    ``stalled`` once ``min_steps`` have passed and the most counterexamples fixed so far has not grown
    for this many steps (a strength that cannot fix them would otherwise run to ``max_steps``).

    ``guard`` (a :class:`core.engine.guard.CheckGuard`, for the ``check`` rule): scores the check split every few
    steps, stops after its patience, and leaves the method on the step and α it chose; its report is then
    ``guard.report``."""
    config = method.config
    if config.stop_rule == "heldout" and data.x_val is None:
        raise UserError("stop_rule 'heldout' needs a labelled validation set (rows with split=val)")
    loop = _Loop(method, data, device, class_names, seed, stall_steps, guard, live=progress is not None)
    reason = StopReason.MAX_STEPS
    for step in range(1, config.max_steps + 1):
        if should_stop is not None and should_stop():
            return LoopResult(loop.history, Stop(StopReason.CANCELLED), cancelled=True)
        event = loop.take_step(step)
        if progress is not None:
            progress(event)
        ended = loop.rules(event)
        if ended is not None:
            reason = ended
            break
    return LoopResult(loop.history, Stop(reason, loop.restore_best()))


class _Loop:
    """One run of the loop: its data on the device, its history and the state of its stopping rules."""

    def __init__(self, method: RepairMethod, data: PreparedData, device, class_names, seed: int, stall_steps,
                 guard=None, live: bool = True):  # fmt: skip
        self.method, self.config, self.data, self.device = method, method.config, data, device
        self.class_names, self.stall_steps, self.guard = class_names, stall_steps, guard
        # The check rule without a check split (no guard) is the kept rule.
        self.rule = "kept" if self.config.stop_rule == "check" and guard is None else self.config.stop_rule
        # The held-out curve is computed only when someone reads it: a progress callback or the heldout rule.
        self.live = live or self.rule == "heldout"
        self.augment = augmenter(self.config.augment, seed)  # fresh random copies of the counterexamples, or None
        self.gen = torch.Generator().manual_seed(seed)
        self.x_ce, self.y_ce = data.x_ce.to(device), data.y_ce.to(device)
        self.x_val = data.x_val  # a tensor, or DiskImages read a batch at a time (see core.engine.repair.prepare_data)
        if isinstance(self.x_val, torch.Tensor):
            self.x_val = self.x_val.to(device)
        self.n = len(self.y_ce)
        self.history: list[StepEvent] = []
        self.most_fixed, self.improved_at = -1, 0
        self.heldout_best: tuple[float, list | None, int] = (-1.0, None, 0)  # (score, snapshot, step)
        self.since_best = 0
        self.kept_rule = self.rule == "kept" and method.reference is not None
        self.backtracks = self.config.backtracks if self.kept_rule else 0
        self.before = None  # the state before the current step, while backtracking is possible
        if self.kept_rule:  # step 0 = the unchanged model, the fallback when no step stays above the floor
            self.kept_best = (self._fixed(), method.snapshot(), 0)  # (fixed, snapshot or None, step)
        if guard is not None:
            guard.start(method)
        self.start = time.perf_counter()

    def _fixed(self) -> int:
        return int((self.method.predict(self.x_ce).argmax(1) == self.y_ce).sum())

    def take_step(self, step: int) -> StepEvent:
        """One update on a batch of counterexamples, measured; the event joins the history."""
        method, config = self.method, self.config
        if self.backtracks:
            self.before = method.snapshot()
        xb, yb = self.x_ce, self.y_ce
        if self.n > config.batch_size:
            idx = torch.randperm(self.n, generator=self.gen)[: config.batch_size].to(self.device)
            xb, yb = self.x_ce[idx], self.y_ce[idx]
        stats = method.update(self.augment(xb) if self.augment is not None else xb, yb)
        fixed = self._fixed()
        last = step == config.max_steps
        scored = self.guard.after_step(step, method, last=last) if self.guard is not None else None
        heldout = None if scored is None else scored.worst_group  # the guard's check split is the validation part
        if self.guard is None and self.live and self.x_val is not None and (step % config.eval_every == 0 or last):
            val_pred = predict_logits(PredictAdapter(method), self.x_val, self.device).argmax(1).numpy()
            heldout = _worst_group(val_pred, self.data.y_val, self.data.attr_val, self.class_names)
        event = StepEvent(
            step=step,
            max_steps=config.max_steps,
            stats=stats,
            fixed=fixed,
            total=self.n,
            heldout_worst_group=heldout,
            reference_agreement=method.reference.agreement(method.predict) if self.kept_rule else None,
            elapsed_s=time.perf_counter() - self.start,
            device=describe_device(self.device),
            check=scored.to_json() if scored is not None else None,
            stop_by=self.guard.stop_by(step, config.min_steps, config.max_steps) if self.guard is not None else None,
        )
        self.history.append(event)
        return event

    def rules(self, event: StepEvent) -> StopReason | None:
        """The stopping rules after a step, in order: why the loop ends now, or None to go on."""
        config, step, fixed = self.config, event.step, event.fixed
        if not event.stats.finite():
            return StopReason.DIVERGED
        if self.kept_rule:
            if event.reference_agreement < config.keep_floor:
                return self._under_floor(event)
            if fixed > self.kept_best[0]:  # ties keep the earlier step: the least change that fixes as many
                self.kept_best = (fixed, None, step)  # the current state; snapshot taken only if needed
        if self.rule in ("paper", "kept") and fixed == self.n and step >= config.min_steps:
            return StopReason.ALL_FIXED
        if self.kept_rule and self.kept_best[2] == step:
            self.kept_best = (fixed, self.method.snapshot(), step)
        if fixed > self.most_fixed:
            self.most_fixed, self.improved_at = fixed, step
        if self.stall_steps is not None and step >= config.min_steps and step - self.improved_at >= self.stall_steps:
            return StopReason.STALLED
        if self.guard is not None and self.guard.should_stop(step, config.min_steps):
            return StopReason.CHECK_PATIENCE
        if config.stop_rule == "heldout" and event.heldout_worst_group is not None:
            return self._heldout(event)
        return None

    def _under_floor(self, event: StepEvent) -> StopReason | None:
        """The kept rule's floor is crossed: undo the step and halve the step size while backtracks are left
        (a trust region on the answers), else stop at the floor."""
        if self.backtracks and self.method.halve_step():
            self.method.restore(self.before)
            self.backtracks -= 1
            # The progress callback has already had this event; the history marks it undone.
            self.history[-1] = dataclasses.replace(event, backtracked=True)
            return None
        return StopReason.KEPT_FLOOR

    def _heldout(self, event: StepEvent) -> StopReason | None:
        if event.heldout_worst_group > self.heldout_best[0]:
            self.heldout_best, self.since_best = (event.heldout_worst_group, self.method.snapshot(), event.step), 0
            return None
        self.since_best += 1
        if self.since_best >= self.config.patience and event.step >= self.config.min_steps:
            return StopReason.HELDOUT_PATIENCE
        return None

    def restore_best(self) -> Restored | None:
        """Go back to the step the rule keeps (kept: the most fixed above the floor; heldout: the best
        held-out check; check: the guard's step and α), unless the run ends on it."""
        if self.guard is not None:
            self.guard.report = report = self.guard.finish(self.method)
            return Restored(RestoreRule.CHECK, report.step, alpha=report.alpha)
        if self.kept_rule and self.history and self.kept_best[2] != self.history[-1].step:
            fixed, snap, step = self.kept_best
            self.method.restore(snap)
            return Restored(RestoreRule.KEPT, step, fixed, self.n)
        if self.config.stop_rule == "heldout" and self.heldout_best[1] is not None:
            self.method.restore(self.heldout_best[1])
            return Restored(RestoreRule.HELDOUT, self.heldout_best[2])
        return None


class PredictAdapter(torch.nn.Module):
    """Lets :func:`predict_logits` batch over a method's ``predict``."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, x):
        return self.method.predict(x)
