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

The evaluation set's rows with ``split == "val"`` are the validation set (used for the held-out
rule and the live curves); the reported before/after numbers use the other rows only, so no
number shown to the user was used to steer the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from core.engine.augment import augmenter
from core.engine.devices import describe_device
from core.engine.inference import predict_logits
from core.engine.metrics import group_metrics
from core.errors import UserError

Progress = Callable[[dict], None]


@dataclass
class PreparedData:
    """Tensors for one run: counterexamples, the reported evaluation part and the validation part.

    The image sets other than the counterexamples may also be :class:`core.engine.inference.DiskImages`
    (indexed like a tensor, read from disk a batch at a time)."""

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


def _worst_group(preds, y, attrs, class_names) -> float:
    return group_metrics(y, preds, attrs, class_names, bootstrap=0)["worst_group_accuracy"]


def train_method(
    method,
    data: PreparedData,
    device: torch.device,
    class_names: list[str],
    *,
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    stall_steps: int | None = None,
    guard=None,
) -> tuple[list[dict], str, bool]:
    """The shared loop, run with the method's own config. Returns (history, stop_reason, cancelled);
    the method holds the result.

    ``stall_steps`` (used by automatic strength, in its trial runs and in the repair it then runs): stop with reason
    ``stalled`` once ``min_steps`` have passed and the most counterexamples fixed so far has not grown
    for this many steps (a strength that cannot fix them would otherwise run to ``max_steps``).

    ``guard`` (a :class:`core.engine.guard.CheckGuard`, for the ``check`` rule): scores the check split every few
    steps, stops after its patience, and leaves the method on the step and α it chose; its report is then
    ``guard.report``."""
    config = method.config
    gen = torch.Generator().manual_seed(seed)
    x_ce, y_ce = data.x_ce.to(device), data.y_ce.to(device)
    x_val = data.x_val  # a tensor, or DiskImages read a batch at a time (see core.engine.repair.prepare_data)
    if isinstance(x_val, torch.Tensor):
        x_val = x_val.to(device)
    n = len(y_ce)
    history: list[dict] = []
    best = (-1.0, None, 0)  # (score, snapshot, step) for the held-out rule
    since_best = 0
    if config.stop_rule == "heldout" and x_val is None:
        raise UserError("stop_rule 'heldout' needs a labelled validation set (rows with split=val)")
    stop_reason, cancelled = "max_steps", False
    ref = getattr(method, "reference", None)
    rule = "kept" if config.stop_rule == "check" and guard is None else config.stop_rule  # no check split: kept
    kept_rule = rule == "kept" and ref is not None
    floor = getattr(config, "keep_floor", 0.97)
    if kept_rule:  # step 0 = the unchanged model, the fallback when no step stays above the floor
        kept_best = (int((method.predict(x_ce).argmax(1) == y_ce).sum()), method.snapshot(), 0)
    most_fixed, improved_at = -1, 0
    backtracks = getattr(config, "backtracks", 0) if kept_rule else 0
    before = None
    augment = augmenter(config.augment, seed)  # fresh random copies of the counterexamples each step, or None
    if guard is not None:
        guard.start(method)
    start = time.perf_counter()
    for step in range(1, config.max_steps + 1):
        if should_stop is not None and should_stop():
            stop_reason, cancelled = "cancelled", True
            break
        if backtracks:
            before = method.snapshot()
        xb, yb = x_ce, y_ce
        if n > config.batch_size:
            idx = torch.randperm(n, generator=gen)[: config.batch_size].to(device)
            xb, yb = x_ce[idx], y_ce[idx]
        stats = method.update(augment(xb) if augment is not None else xb, yb)
        fixed = int((method.predict(x_ce).argmax(1) == y_ce).sum())
        scored = guard.after_step(step, method, last=step == config.max_steps) if guard is not None else None
        heldout = None if scored is None else scored.worst_group  # the guard's check split is the validation part
        live = progress is not None or config.stop_rule == "heldout"  # nobody reads the live curve otherwise
        if guard is None and live and x_val is not None and (step % config.eval_every == 0 or step == config.max_steps):
            val_pred = predict_logits(PredictAdapter(method), x_val, device).argmax(1).numpy()
            heldout = _worst_group(val_pred, data.y_val, data.attr_val, class_names)
        event = {
            "step": step,
            "max_steps": config.max_steps,
            **stats,
            "fixed": fixed,
            "total": n,
            "heldout_worst_group": heldout,
            "reference_agreement": ref.agreement(method.predict) if kept_rule else None,
            "elapsed_s": time.perf_counter() - start,
            "device": describe_device(device),
        }
        if scored is not None:
            event["check"] = scored.to_json()
        history.append(event)
        if progress is not None:
            progress(event)
        if not all(math.isfinite(stats[k]) for k in ("loss", "task_loss", "penalty")):
            stop_reason = "diverged"
            break
        if kept_rule:
            if event["reference_agreement"] < floor:
                if backtracks and method.optimizer is not None:
                    method.restore(before)  # undo the step and try again with half the step size
                    for group in method.optimizer.param_groups:
                        group["lr"] *= 0.5
                    backtracks -= 1
                    event["backtracked"] = True
                    continue
                stop_reason = "kept_floor"
                break
            if fixed > kept_best[0]:  # ties keep the earlier step: the least change that fixes as many
                kept_best = (fixed, None, step)  # the current state; snapshot taken only if needed
        if rule in ("paper", "kept") and fixed == n and step >= config.min_steps:
            stop_reason = "all_fixed"
            break
        if kept_rule and kept_best[2] == step:
            kept_best = (fixed, method.snapshot(), step)
        if fixed > most_fixed:
            most_fixed, improved_at = fixed, step
        if stall_steps is not None and step >= config.min_steps and step - improved_at >= stall_steps:
            stop_reason = "stalled"
            break
        if guard is not None and guard.should_stop(step, config.min_steps):
            stop_reason = "check_patience"
            break
        if config.stop_rule == "heldout" and heldout is not None:
            if heldout > best[0]:
                best, since_best = (heldout, method.snapshot(), step), 0
            else:
                since_best += 1
                if since_best >= config.patience and step >= config.min_steps:
                    stop_reason = "heldout_patience"
                    break
    if kept_rule and not cancelled and history and kept_best[2] != history[-1]["step"]:
        method.restore(kept_best[1])
        stop_reason = f"{stop_reason}; restored step {kept_best[2]} ({kept_best[0]}/{n} fixed)"
    if guard is not None and not cancelled:
        guard.report = guard.finish(method)
        stop_reason = f"{stop_reason}; restored step {guard.report.step} (check split, α {guard.report.alpha:g})"
    if config.stop_rule == "heldout" and best[1] is not None and not cancelled:
        method.restore(best[1])
        stop_reason = f"{stop_reason}; restored best held-out step {best[2]}"
    return history, stop_reason, cancelled


class PredictAdapter(torch.nn.Module):
    """Lets :func:`predict_logits` batch over a method's ``predict``."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, x):
        return self.method.predict(x)
