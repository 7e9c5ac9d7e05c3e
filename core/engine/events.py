"""What a repair reports while it runs: one frozen dataclass per kind of progress event.

The loop (:mod:`core.engine.loop`) emits a :class:`StepEvent` after every optimizer step; automatic
strength (:mod:`core.engine.strength`) emits an :class:`AutoTrialStarted` before each of its trial
runs, an :class:`AutoCandidateDone` after each candidate strength and an :class:`AutoSweepDone` when
it ends early. A ``progress`` callback receives these objects; the workbench stores each as the JSON
of its ``to_json`` (the progress rows of a run) and :func:`event_from_json` reads a row back. No torch
here, so the page process can read progress rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

AUTO_PHASE = "auto"  # the "phase" of every event of automatic strength's sweep


@dataclass(frozen=True)
class StepStats:
    """What one ``update`` of a method returns: the loss and its parts (``anchor``: the KL term of CPT's
    function-space anchor, only when it is on; ``invariance`` and ``mix``: CPT's invariance-hint and CutMix
    terms, only when they are on)."""

    loss: float
    task_loss: float
    penalty: float
    anchor: float | None = None
    invariance: float | None = None
    mix: float | None = None

    def finite(self) -> bool:
        """Whether the loss, the task loss and the penalty are all finite numbers (else the run diverged)."""
        return all(math.isfinite(v) for v in (self.loss, self.task_loss, self.penalty))

    def to_json(self) -> dict:
        out = {"loss": self.loss, "task_loss": self.task_loss, "penalty": self.penalty}
        for name in ("anchor", "invariance", "mix"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True)
class StepEvent:
    """One training step: the loss, counterexamples fixed, the held-out check (every ``eval_every``
    steps, else None) and the share of reference answers kept (kept rule only, else None).
    ``backtracked``: the kept rule undid this step (see :mod:`core.engine.loop`)."""

    step: int
    max_steps: int
    stats: StepStats
    fixed: int
    total: int
    heldout_worst_group: float | None
    reference_agreement: float | None
    elapsed_s: float
    device: str
    backtracked: bool = False
    check: dict | None = None  # the check rule: the guard's CheckScore on the check split at this step, as JSON
    # The check rule: the step the run stops at unless the check split improves first (the time left is measured
    # to it); None under the other rules, which may run to max_steps.
    stop_by: int | None = None

    def to_json(self) -> dict:
        out = {"step": self.step, "max_steps": self.max_steps, **self.stats.to_json()}
        out.update(
            fixed=self.fixed,
            total=self.total,
            heldout_worst_group=self.heldout_worst_group,
            reference_agreement=self.reference_agreement,
            elapsed_s=self.elapsed_s,
            device=self.device,
        )
        if self.backtracked:
            out["backtracked"] = True
        if self.check is not None:
            out["check"] = self.check
        if self.stop_by is not None:
            out["stop_by"] = self.stop_by
        return out

    @classmethod
    def from_json(cls, d: dict) -> StepEvent:
        stats = StepStats(d.get("loss"), d.get("task_loss"), d.get("penalty"), d.get("anchor"), d.get("invariance"),
                          d.get("mix"))  # fmt: skip
        return cls(
            step=d["step"],
            max_steps=d.get("max_steps"),
            stats=stats,
            fixed=d.get("fixed"),
            total=d.get("total"),
            heldout_worst_group=d.get("heldout_worst_group"),
            reference_agreement=d.get("reference_agreement"),
            elapsed_s=d.get("elapsed_s"),
            device=d.get("device"),
            backtracked=bool(d.get("backtracked", False)),
            check=d.get("check"),
            stop_by=d.get("stop_by"),
        )


@dataclass(frozen=True)
class CandidateRow:
    """One candidate strength of automatic strength's sweep, as its report lists it."""

    strength: float
    cv_accuracy: float | None  # held-out-fold accuracy (None: one counterexample, or stopped early)
    agreement: float | None  # the label-free kept estimate (None without reference images)
    fixes_own: bool
    safe: bool
    stopped_early: bool

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: dict) -> CandidateRow:
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class AutoTrialStarted:
    """Automatic strength is about to run candidate ``candidate`` of ``candidates`` on fold ``fold`` of
    ``folds``; ``done`` of ``total`` trial runs are behind it."""

    candidate: int
    candidates: int
    strength: float
    fold: int
    folds: int
    done: int
    total: int

    def to_json(self) -> dict:
        return {"phase": AUTO_PHASE, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(frozen=True)
class AutoCandidateDone:
    """A candidate strength has been scored (its row of the report)."""

    done: int
    total: int
    row: CandidateRow

    def to_json(self) -> dict:
        return {"phase": AUTO_PHASE, "event": "candidate_done", "done": self.done, "total": self.total,
                **self.row.to_json()}  # fmt: skip


@dataclass(frozen=True)
class AutoSweepDone:
    """The sweep ended before its last trial (an early exit): every trial counts as done."""

    done: int
    total: int

    def to_json(self) -> dict:
        return {"phase": AUTO_PHASE, "event": "sweep_done", "done": self.done, "total": self.total}


AutoEvent = AutoTrialStarted | AutoCandidateDone | AutoSweepDone
ProgressEvent = StepEvent | AutoEvent
Progress = Callable[[ProgressEvent], None]


def event_from_json(d: dict) -> ProgressEvent:
    """A stored progress row as its event (the inverse of each event's ``to_json``)."""
    if d.get("phase") != AUTO_PHASE:
        return StepEvent.from_json(d)
    kind = d.get("event")
    if kind == "candidate_done":
        return AutoCandidateDone(d["done"], d["total"], CandidateRow.from_json(d))
    if kind == "sweep_done":
        return AutoSweepDone(d["done"], d["total"])
    return AutoTrialStarted(**{f.name: d.get(f.name) for f in fields(AutoTrialStarted)})


__all__ = [
    "AUTO_PHASE",
    "AutoCandidateDone",
    "AutoEvent",
    "AutoSweepDone",
    "AutoTrialStarted",
    "CandidateRow",
    "Progress",
    "ProgressEvent",
    "StepEvent",
    "StepStats",
    "event_from_json",
]
