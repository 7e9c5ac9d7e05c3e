"""The labelled check split's numbers in a run's metrics (no torch: the page process reads these).

* :class:`SplitCounts`: how many evaluation rows were reported and how many formed the check split
  (:mod:`core.engine.checksplit`), and where the check split came from (:class:`CheckSource`).
* :class:`CheckScore`: a model's numbers on the check split; :class:`CheckReport`: what the guard
  (:mod:`core.engine.guard`) chose on it. :class:`core.engine.results.RunMetrics` holds both.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum


class CheckSource(StrEnum):
    """Where a run's check split came from (:mod:`core.engine.checksplit`)."""

    VAL_ROWS = "val_rows"  # the evaluation set's rows marked split=val
    CARVED = "carved"  # a seeded, group-stratified share carved automatically
    NONE = "none"  # no check split (no evaluation set, or too small to carve)


@dataclass(frozen=True)
class SplitCounts:
    """How many evaluation rows were reported and how many formed the check split, and where it came from."""

    reported: int
    check: int
    source: CheckSource

    def to_json(self) -> dict:
        return {"reported": self.reported, "check": self.check, "source": self.source.value}

    @classmethod
    def from_json(cls, raw: dict) -> SplitCounts:
        return cls(int(raw["reported"]), int(raw["check"]), CheckSource(raw["source"]))


@dataclass(frozen=True)
class CheckScore:
    """A model's numbers on the check split, against the old model's answers there."""

    kept: float  # share of the check rows the old model got right that this model still gets right
    worst_group: float  # lowest accuracy over (label, attribute) cells with at least CHECK_MIN_GROUP rows
    accuracy: float
    balanced: float  # mean of those cells' accuracies
    fixed: int  # rows the old model got wrong and this one gets right
    broken: int  # rows the old model got right and this one gets wrong

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, raw: dict) -> CheckScore:
        return cls(**{f.name: raw[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class CheckReport:
    """What the guard (:class:`core.engine.guard.CheckGuard`) chose: the step and α kept, their check score, the
    old model's (``base``), and every check it made (``{"step", "alpha", **CheckScore}``)."""

    step: int
    alpha: float
    score: CheckScore
    base: CheckScore
    checks: list[dict]

    def to_json(self) -> dict:
        return {"step": self.step, "alpha": self.alpha, "score": self.score.to_json(), "base": self.base.to_json(),
                "checks": self.checks}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict) -> CheckReport:
        return cls(d["step"], d["alpha"], CheckScore.from_json(d["score"]), CheckScore.from_json(d["base"]),
                   d.get("checks", []))  # fmt: skip
