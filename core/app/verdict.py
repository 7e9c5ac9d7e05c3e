"""The verdict on a repair, in one place: its kinds, the "do no harm" rules, what was gained and lost,
and how each kind is shown (its sentence's translation key, alert tone, icon and colours).

The rules are those of docs/DESIGN.md §8: a repair that lowers held-out accuracy by more than
:data:`MAX_ACCURACY_DROP` or keeps fewer than :data:`MIN_KEPT_DECISIONS` of the right decisions is
*flagged*, and cannot be approved without an override and a reason (:mod:`core.app.decisions`).
Both sides of a repair are found here too: the groups that got better or worse *beyond their
interval* (the repaired accuracy lies outside the old model's bootstrap 95% range), the biggest gain
and the biggest loss by group. The words are in :mod:`core.app.summary`. Plain data in (the metrics
dict of :mod:`core.engine.metrics` and the comparison counts), a :class:`Verdict` out; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.app.display import finite, group_name
from core.engine.results import NoChange

# "Do no harm" thresholds (docs/DESIGN.md §8), shown on the Review page.
MAX_ACCURACY_DROP = 0.02
MIN_KEPT_DECISIONS = 0.90
MIN_ACCURACY_GAIN = 0.01  # "better overall" needs at least one point, not noise


class Kind(StrEnum):
    """What the verdict says of a repair (:func:`judge` says when each applies)."""

    IMPROVED = "improved"
    MIXED = "mixed"
    PARTIAL = "partial"
    FLAGGED = "flagged"
    NO_GAIN = "no_gain"
    UNCHANGED = "unchanged"

    @property
    def key(self) -> str:
        """The translation key of its sentence, ``verdict_<kind>``."""
        return f"verdict_{self.value}"

    @property
    def look(self) -> Look:
        return _LOOKS[self]


class Reason(StrEnum):
    """Why a repair is flagged."""

    ACCURACY_DROP = "accuracy_drop"
    KEPT_LOW = "kept_low"

    @property
    def key(self) -> str:
        """The translation key of its sentence, ``verdict_reason_<reason>``."""
        return f"verdict_reason_{self.value}"


@dataclass(frozen=True)
class Look:
    """How a kind of verdict is shown: the page's alert box (``success``, ``warning``, ``info`` or
    ``error``), its icon, and the background and border colours of the card's and the report's box."""

    tone: str
    icon: str
    background: str
    border: str


_LOOKS = {
    Kind.IMPROVED: Look("success", "✅", "#e8f5ee", "#1a7f5a"),
    Kind.MIXED: Look("warning", "⚖️", "#fff6e0", "#b36b00"),
    Kind.PARTIAL: Look("info", "➕", "#eef3fb", "#3c6fb4"),
    Kind.FLAGGED: Look("error", "⛔", "#fdecea", "#b3261e"),
    Kind.NO_GAIN: Look("warning", "⚠️", "#fff6e0", "#b36b00"),
    Kind.UNCHANGED: Look("info", "ℹ️", "#f1f3f5", "#6c757d"),
}


@dataclass(frozen=True)
class GroupChange:
    """One group's accuracy before and after, and whether it moved beyond its interval: ``worse``
    when the repaired accuracy is below the old model's 95% interval for that group, ``better`` when
    above it. Without an interval (no bootstrap) the point estimate is the interval."""

    name: str
    label: str
    attribute: str
    count: int
    before: float
    after: float
    delta: float
    worse: bool
    better: bool


@dataclass(frozen=True)
class Verdict:
    """The verdict and both sides of a repair, from computed numbers only."""

    kind: Kind
    reasons: tuple[Reason, ...]
    accuracy_change: float
    worst_before: float | None
    worst_after: float | None
    kept: float
    max_drop: float
    min_kept: float
    no_change: NoChange | None  # why the repair changed nothing, when it recorded why (its words in each language)
    n_fixed: int
    n_broken: int
    worse_groups: tuple[GroupChange, ...]
    better_groups: tuple[GroupChange, ...]
    biggest_gain: GroupChange | None
    biggest_loss: GroupChange | None

    @property
    def flagged(self) -> bool:
        """Approving it needs an explicit override and a written reason."""
        return self.kind is Kind.FLAGGED


def group_changes(before: dict, after: dict) -> list[GroupChange]:
    """Per group present in both evaluations: old and new accuracy, the change, and whether it moved
    beyond its interval (:class:`GroupChange`)."""
    new = {(g["label"], str(g["attribute"])): g for g in after.get("groups", [])}
    out = []
    for g in before.get("groups", []):
        a = new.get((g["label"], str(g["attribute"])))
        if a is None:
            continue
        acc_b, acc_a = g["accuracy"], a["accuracy"]
        lo, hi = finite(g.get("ci_low")), finite(g.get("ci_high"))
        lo = acc_b if lo is None else lo
        hi = acc_b if hi is None else hi
        out.append(
            GroupChange(
                name=group_name(g),
                label=g["label"],
                attribute=g["attribute"],
                count=g["count"],
                before=acc_b,
                after=acc_a,
                delta=acc_a - acc_b,
                worse=acc_a < lo,
                better=acc_a > hi,
            )
        )
    return out


def _reasons(metrics: dict) -> tuple[Reason, ...]:
    drop = metrics["before"]["accuracy"] - metrics["after"]["accuracy"]
    reasons = []
    if drop > MAX_ACCURACY_DROP:
        reasons.append(Reason.ACCURACY_DROP)
    if metrics["kept_decisions"] < MIN_KEPT_DECISIONS:
        reasons.append(Reason.KEPT_LOW)
    return tuple(reasons)


def _kind(metrics: dict, reasons: tuple[Reason, ...], some_worse: bool) -> Kind:
    before, after = metrics["before"], metrics["after"]
    wg_b, wg_a = before.get("worst_group_accuracy"), after.get("worst_group_accuracy")
    if reasons:
        return Kind.FLAGGED
    if metrics.get("changed_predictions", 0) == 0:
        return Kind.UNCHANGED
    if wg_b is not None and wg_a is not None and wg_a > wg_b:
        return Kind.MIXED if some_worse else Kind.IMPROVED
    if after["accuracy"] - before["accuracy"] >= MIN_ACCURACY_GAIN:
        return Kind.MIXED if some_worse else Kind.PARTIAL
    return Kind.NO_GAIN


def judge(metrics: dict) -> Verdict:
    """The "do no harm" verdict of a repair's metrics (docs/DESIGN.md §8), with both sides.

    ``flagged`` when held-out accuracy drops by more than MAX_ACCURACY_DROP or kept decisions fall
    below MIN_KEPT_DECISIONS; ``unchanged`` when no prediction changed at all (e.g. "auto" chose to
    change nothing; ``no_change``, a :class:`core.engine.results.NoChange`, says why when the repair
    recorded it);
    ``improved`` when worst-group accuracy went up and no group got worse beyond its interval;
    ``mixed`` when worst-group accuracy (or overall accuracy) went up but some group got worse beyond
    its interval; ``partial`` when overall accuracy rose by at least MIN_ACCURACY_GAIN but the worst
    group did not; else ``no_gain``. It also carries what was gained and lost: answers fixed and
    broken, the groups that got worse or better beyond their interval, and the biggest gain and the
    biggest loss by group.
    """
    before, after = metrics["before"], metrics["after"]
    changes = group_changes(before, after)
    worse = sorted((c for c in changes if c.worse), key=lambda c: c.delta)
    better = sorted((c for c in changes if c.better), key=lambda c: -c.delta)
    gains = [c for c in changes if c.delta > 0]
    losses = [c for c in changes if c.delta < 0]
    reasons = _reasons(metrics)
    floor = (metrics.get("config") or {}).get("keep_floor")  # the kept rule's floor names a share of answers
    no_change = NoChange.from_json(metrics["no_change"], floor) if metrics.get("no_change") else None
    return Verdict(
        kind=_kind(metrics, reasons, bool(worse)),
        reasons=reasons,
        accuracy_change=after["accuracy"] - before["accuracy"],
        worst_before=before.get("worst_group_accuracy"),
        worst_after=after.get("worst_group_accuracy"),
        kept=metrics["kept_decisions"],
        max_drop=MAX_ACCURACY_DROP,
        min_kept=MIN_KEPT_DECISIONS,
        no_change=no_change,
        n_fixed=int(metrics.get("n_fixed", 0) or 0),
        n_broken=int(metrics.get("n_broken", 0) or 0),
        worse_groups=tuple(worse),
        better_groups=tuple(better),
        biggest_gain=max(gains, key=lambda c: c.delta) if gains else None,
        biggest_loss=min(losses, key=lambda c: c.delta) if losses else None,
    )
