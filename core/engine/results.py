"""What a repair produced, typed: why it stopped, why it changed nothing, and its metrics.

* :class:`StopReason` (a closed set) and :class:`Stop` (the reason and, for the kept and held-out
  rules, the step the run went back to): what :func:`core.engine.loop.train_method` returns in its
  :class:`LoopResult`. ``Stop.describe()`` is the English line the CLI prints and ``metrics.json`` keeps
  under ``stop_reason``; :meth:`Stop.from_text` reads that line back (old run folders have nothing
  else), and the pages translate a stop through :attr:`StopReason.key`.
* :class:`NoChange`: why a repair's result is the old model, with a translation key per code.
* :class:`GroupMetrics`, :class:`Comparison`, :class:`AutoReport` and :class:`RunMetrics`: one run's
  numbers. :meth:`RunMetrics.from_json` is the one reader of ``metrics.json``
  (:class:`core.engine.runfolder.RunFolder` calls it) and reads every file earlier versions wrote;
  :meth:`RunMetrics.to_json` writes the same keys they wrote.

No torch here: the page process reads these.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from enum import StrEnum

import numpy as np

from core.engine.check_results import CheckReport, SplitCounts
from core.engine.configs import KEEP_TARGET
from core.engine.events import CandidateRow, StepEvent


class StopReason(StrEnum):
    """Why the loop ended (or, for the last two, why there was no loop)."""

    MAX_STEPS = "max_steps"
    ALL_FIXED = "all_fixed"  # the paper's rule: every counterexample right after at least min_steps
    DIVERGED = "diverged"
    HELDOUT_PATIENCE = "heldout_patience"
    STALLED = "stalled"  # automatic strength's runs: no new counterexample fixed for a while
    KEPT_FLOOR = "kept_floor"  # the kept rule: too many reference answers changed
    CHECK_PATIENCE = "check_patience"  # the check rule: no new best on the check split for a while
    CANCELLED = "cancelled"
    AUTO_NO_CHANGE = "auto_no_change"  # automatic strength chose to change nothing: no loop ran
    INTERPOLATED = "interpolated"  # a run saved from another at a lower strength α: no loop ran

    @property
    def key(self) -> str:
        """Its words in ``assets/i18n``."""
        return f"stop_{self.value}"


class RestoreRule(StrEnum):
    """Which rule made a run go back to an earlier step."""

    KEPT = "kept"  # the step with the most counterexamples fixed above the keep floor
    HELDOUT = "heldout"  # the step with the best held-out worst-group accuracy
    CHECK = "check"  # the guard's choice on the check split: a step and a strength α after the fact


@dataclass(frozen=True)
class Restored:
    """The step a run went back to when it stopped (``fixed`` / ``total``: the kept rule's count)."""

    rule: RestoreRule
    step: int
    fixed: int | None = None
    total: int | None = None
    alpha: float | None = None  # the check rule: the share α of the step's change kept (θ + α·δ)

    def describe(self) -> str:
        if self.rule is RestoreRule.HELDOUT:
            return f"restored best held-out step {self.step}"
        if self.rule is RestoreRule.CHECK:
            return f"restored step {self.step} (check split, α {self.alpha:g})"
        return f"restored step {self.step} ({self.fixed}/{self.total} fixed)"


_KEPT_TEXT = re.compile(r"restored step (\d+) \((\d+)/(\d+) fixed\)")
_HELDOUT_TEXT = re.compile(r"restored best held-out step (\d+)")
_CHECK_TEXT = re.compile(r"restored step (\d+) \(check split, α ([0-9.eE+-]+)\)")


@dataclass(frozen=True)
class Stop:
    """Why a run stopped, and the step it went back to (None: it kept its last step)."""

    reason: StopReason
    restored: Restored | None = None

    @property
    def restored_step(self) -> int | None:
        return None if self.restored is None else self.restored.step

    @property
    def kept_old_model(self) -> bool:
        """The kept or check rule went back to step 0: the run's result is the old model."""
        return (
            self.restored is not None
            and self.restored.rule in (RestoreRule.KEPT, RestoreRule.CHECK)
            and self.restored.step == 0
        )

    def describe(self) -> str:
        """The English line: ``max_steps``, ``kept_floor; restored step 3 (5/8 fixed)``, …"""
        return self.reason.value if self.restored is None else f"{self.reason.value}; {self.restored.describe()}"

    @classmethod
    def from_text(cls, text: str) -> Stop:
        """The inverse of :meth:`describe`: how ``metrics.json`` files and the runs of earlier versions
        recorded a stop. Raises ValueError for anything else."""
        head, _, rest = text.partition("; ")
        reason = StopReason(head)
        if not rest:
            return cls(reason)
        if m := _KEPT_TEXT.fullmatch(rest):
            return cls(reason, Restored(RestoreRule.KEPT, int(m[1]), int(m[2]), int(m[3])))
        if m := _HELDOUT_TEXT.fullmatch(rest):
            return cls(reason, Restored(RestoreRule.HELDOUT, int(m[1])))
        if m := _CHECK_TEXT.fullmatch(rest):
            return cls(reason, Restored(RestoreRule.CHECK, int(m[1]), alpha=float(m[2])))
        raise ValueError(f"not a stop reason: {text!r}")


@dataclass(frozen=True)
class LoopResult:
    """What :func:`core.engine.loop.train_method` returns; the method holds the repaired state."""

    history: list[StepEvent]
    stop: Stop
    cancelled: bool = False

    @property
    def reason(self) -> StopReason:
        return self.stop.reason

    @property
    def restored_step(self) -> int | None:
        return self.stop.restored_step


class NoChangeCode(StrEnum):
    """Why a repair's result is the old model."""

    NO_HELDOUT_FIX = "no_heldout_fix"  # automatic strength: no strength fixed held-out counterexamples
    NO_SAFE_SETTING = "no_safe_setting"  # automatic strength: none did without breaking the kept target
    SINGLE_NOT_FIXED = "single_not_fixed"  # automatic strength, one counterexample: none fixed it safely
    KEPT_FLOOR = "kept_floor"  # the kept rule: every step that fixed one changed too many answers
    NOTHING_FIXED = "nothing_fixed"  # the kept rule: no step fixed more than the old model did
    CHECK_NO_GAIN = "check_no_gain"  # the check rule (or auto on the check split): no step beat the old model there

    @property
    def key(self) -> str:
        return f"no_change_{self.value}"


# The English sentence of each code; ``{share:.0%}`` is the share of reference answers in question.
NO_CHANGE_WORDS = {
    NoChangeCode.NO_HELDOUT_FIX: "no strength fixed held-out counterexamples better than the unchanged model",
    NoChangeCode.NO_SAFE_SETTING: "no strength both fixed held-out counterexamples and kept an estimated "
    "{share:.0%} of the old answers on the reference images",
    NoChangeCode.SINGLE_NOT_FIXED: "no strength fixed the single counterexample while keeping an estimated "
    "{share:.0%} of the old answers on the reference images",
    NoChangeCode.KEPT_FLOOR: "every step that fixed a counterexample changed more than {share:.0%} of the answers "
    "on the reference images, so the old model is kept",
    NoChangeCode.NOTHING_FIXED: "no step fixed more counterexamples than the old model, so the old model is kept",
    NoChangeCode.CHECK_NO_GAIN: "no step improved the check images' worst group and balanced accuracy while keeping "
    "{share:.0%} of their right answers, so the old model is kept",
}


@dataclass(frozen=True)
class NoChange:
    """Why a repair's result is the old model: a code, its English sentence, and the share its words name
    (automatic strength's kept target, or the share of answers the kept rule's floor allows to change)."""

    code: str  # a NoChangeCode; a code this version does not know is shown by its stored sentence
    reason: str
    share: float | None = None

    @classmethod
    def of(cls, code: NoChangeCode, share: float | None = None) -> NoChange:
        return cls(code.value, NO_CHANGE_WORDS[code].format(share=share), share)

    @property
    def key(self) -> str | None:
        """Its words in ``assets/i18n`` (placeholder ``{share}``), or None for an unknown code."""
        return NoChangeCode(self.code).key if self.code in _KNOWN_CODES else None

    def words(self, t) -> str:
        """The reason in the language of ``t`` (a :func:`core.app.i18n.translator`)."""
        if self.key is None:
            return self.reason
        return t(self.key, share=f"{self.share:.0%}" if self.share is not None else "")

    def to_json(self) -> dict:
        return {"code": self.code, "reason": self.reason}

    @classmethod
    def from_json(cls, d: dict, keep_floor: float | None = None, check_floor: float | None = None) -> NoChange:
        """``keep_floor`` / ``check_floor``: the run's floors, for the share the kept and check rules' sentences
        name."""
        share = KEEP_TARGET if d["code"] in _AUTO_CODES else None
        if d["code"] == NoChangeCode.KEPT_FLOOR and keep_floor is not None:
            share = 1 - keep_floor
        if d["code"] == NoChangeCode.CHECK_NO_GAIN:
            share = check_floor
        return cls(d["code"], d.get("reason", ""), share)


_KNOWN_CODES = set(NoChangeCode)
_AUTO_CODES = {NoChangeCode.NO_HELDOUT_FIX, NoChangeCode.NO_SAFE_SETTING, NoChangeCode.SINGLE_NOT_FIXED}


@dataclass(frozen=True)
class AutoReport:
    """What automatic strength (:func:`core.engine.strength.choose_strength`) decided, and from what.

    ``chosen`` is the strength, or None to change nothing (then ``code`` says why, see
    :class:`NoChangeCode`); ``rule`` is the English sentence of the rule that decided."""

    chosen: float | None
    code: str | None
    rule: str | None
    folds: int
    candidates: list[CandidateRow]
    base_cv_accuracy: float | None = None
    runs: int | None = None
    skipped: list[float] | None = None
    cancelled: bool = False
    by: str | None = None  # "check_split": chosen by guarded repairs on the labelled check split
    check_trials: list[dict] | None = None  # then: per λ, {"strength", "objective", "step", "alpha", **CheckScore}
    check_floor: float | None = None

    @property
    def no_change(self) -> NoChange | None:
        if self.chosen is not None or self.code is None:
            return None
        if self.code == NoChangeCode.CHECK_NO_GAIN:
            return NoChange(self.code, self.rule or "", self.check_floor)
        return NoChange(self.code, self.rule or "", KEEP_TARGET)

    def to_json(self) -> dict:
        rows = [r.to_json() for r in self.candidates]
        if self.cancelled:
            return {"chosen": None, "code": None, "cancelled": True, "candidates": rows, "folds": self.folds}
        out = {"chosen": self.chosen, "code": self.code, "candidates": rows, "folds": self.folds}
        for name in ("base_cv_accuracy", "runs", "skipped", "by", "check_trials", "check_floor"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out["rule"] = self.rule
        return out

    @classmethod
    def from_json(cls, d: dict) -> AutoReport:
        return cls(
            chosen=d.get("chosen"),
            code=d.get("code"),
            rule=d.get("rule"),
            folds=d.get("folds"),
            candidates=[CandidateRow.from_json(r) for r in d.get("candidates", [])],
            base_cv_accuracy=d.get("base_cv_accuracy"),
            runs=d.get("runs"),
            skipped=d.get("skipped"),
            cancelled=bool(d.get("cancelled", False)),
            by=d.get("by"),
            check_trials=d.get("check_trials"),
            check_floor=d.get("check_floor"),
        )


@dataclass(frozen=True)
class GroupAccuracy:
    """One (label, attribute) cell: accuracy, count, right answers and its bootstrap 95 % interval."""

    label: str
    attribute: str
    accuracy: float | None
    count: int
    correct: int
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class GroupMetrics:
    """One evaluation (:func:`core.engine.metrics.group_metrics`): accuracy, worst group over the cells of at
    least ``min_group_count`` images, bias gap, the number of images and every cell."""

    accuracy: float | None
    worst_group_accuracy: float | None
    bias_gap: float | None
    min_group_count: int
    n: int
    groups: list[GroupAccuracy]

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "groups"}
        out["groups"] = [{f.name: getattr(g, f.name) for f in fields(g)} for g in self.groups]
        return out

    @classmethod
    def from_json(cls, d: dict) -> GroupMetrics:
        groups = [GroupAccuracy(**{f.name: g.get(f.name) for f in fields(GroupAccuracy)}) for g in d["groups"]]
        return cls(d["accuracy"], d["worst_group_accuracy"], d["bias_gap"], d["min_group_count"], d["n"], groups)


@dataclass(frozen=True)
class Comparison:
    """The new answers against the old (:func:`core.engine.metrics.compare_predictions`)."""

    kept_decisions: float | None
    errors_introduced: float | None
    errors_corrected: float | None
    changed_predictions: int
    n_fixed: int | None = None  # None: not recorded (run folders of early versions)
    n_broken: int | None = None

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls, d: dict) -> Comparison:
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Interpolation:
    """A run seen or saved at strength α (θ + α·δ) of run ``from_run``."""

    from_run: int
    alpha: float

    def to_json(self) -> dict:
        return {"from_run": self.from_run, "alpha": self.alpha}


@dataclass(frozen=True)
class RunMetrics:
    """One run's ``metrics.json``. ``before``/``after``/``comparison`` are None without an evaluation
    set; a cancelled run holds only what it did before it stopped."""

    method: str
    steps: int
    stop: Stop
    cancelled: bool = False
    seconds: float | None = None
    strength: float | None = None
    before: GroupMetrics | None = None
    after: GroupMetrics | None = None
    comparison: Comparison | None = None
    device: str | None = None
    counterexamples: int | None = None
    counterexamples_fixed: int | None = None
    config: dict | None = None
    auto_strength: AutoReport | None = None
    seed: int | None = None
    no_change: NoChange | None = None
    reference_agreement: float | None = None
    interpolation: Interpolation | None = None
    split: SplitCounts | None = None  # the evaluation set's reported and check parts (None: runs before the split)
    check: CheckReport | None = None  # the guard's choice, for a run under the check rule

    @property
    def stop_reason(self) -> str:
        return self.stop.describe()

    def to_json(self) -> dict:
        """The dict ``metrics.json`` holds (numbers may be NaN; :func:`jsonable` makes them null)."""
        auto = self.auto_strength.to_json() if self.auto_strength is not None else None
        if self.cancelled:
            return {"method": self.method, "steps": self.steps, "cancelled": True, "stop_reason": self.stop_reason,
                    "auto_strength": auto, "seconds": self.seconds}  # fmt: skip
        out: dict = {"method": self.method, "strength": self.strength, "steps": self.steps}
        if self.before is not None:
            out["before"] = self.before.to_json()
        if self.after is not None:
            out["after"] = self.after.to_json()
        if self.comparison is not None:
            out.update(self.comparison.to_json())
        for key in ("seconds", "device"):  # absent only from files of early versions
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["stop_reason"] = self.stop_reason
        out["cancelled"] = self.cancelled
        if self.counterexamples is not None:
            out["counterexamples"] = self.counterexamples
        out["counterexamples_fixed"] = self.counterexamples_fixed
        if self.config is not None:
            out["config"] = self.config
        out["auto_strength"] = auto
        if self.seed is not None:
            out["seed"] = self.seed
        out["no_change"] = self.no_change.to_json() if self.no_change is not None else None
        out["reference_agreement"] = self.reference_agreement
        if self.interpolation is not None:
            out["interpolation"] = self.interpolation.to_json()
        if self.split is not None:  # absent from files of versions before the check split
            out["split"] = self.split.to_json()
        if self.check is not None:
            out["check"] = self.check.to_json()
        return out

    @classmethod
    def from_json(cls, d: dict) -> RunMetrics:
        """A ``metrics.json`` as any version wrote it (keys added later are None when absent)."""
        config = d.get("config")
        no_change = d.get("no_change")
        floor = config.get("keep_floor") if isinstance(config, dict) else None
        check_floor = config.get("check_floor") if isinstance(config, dict) else None
        return cls(
            method=d["method"],
            steps=d["steps"],
            stop=Stop.from_text(d["stop_reason"]),
            cancelled=bool(d.get("cancelled", False)),
            seconds=d.get("seconds"),
            strength=d.get("strength"),
            before=GroupMetrics.from_json(d["before"]) if "before" in d else None,
            after=GroupMetrics.from_json(d["after"]) if "after" in d else None,
            comparison=Comparison.from_json(d) if "kept_decisions" in d else None,
            device=d.get("device"),
            counterexamples=d.get("counterexamples"),
            counterexamples_fixed=d.get("counterexamples_fixed"),
            config=config,
            auto_strength=AutoReport.from_json(d["auto_strength"]) if d.get("auto_strength") else None,
            seed=d.get("seed"),
            no_change=NoChange.from_json(no_change, floor, check_floor) if no_change else None,
            reference_agreement=d.get("reference_agreement"),
            interpolation=Interpolation(**d["interpolation"]) if d.get("interpolation") else None,
            split=SplitCounts.from_json(d["split"]) if d.get("split") else None,
            check=CheckReport.from_json(d["check"]) if d.get("check") else None,
        )


def jsonable(obj):
    """``obj`` with numpy numbers as Python numbers and NaN or infinite Python floats as None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
