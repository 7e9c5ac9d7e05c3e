"""The gallery's order when attributes are known: likely mistakes first, spread over (attribute, answer) cells.

When the original model gives an answer on images with an attribute (say "seven" on a red tag), how
often is it right? A shortcut answers from the attribute, so its answers are unreliable exactly there
(estimated with add-one smoothing; ½ when never seen); low confidence adds a little. Each image then
loses :data:`REPEAT_PENALTY` for every better-scored image of its (attribute, answer) cell, so a handful
of labels covers many groups instead of eight copies of one mistake (which a repair over-learns).

One home for the Counterexamples page (:mod:`core.app.pool`) and the benchmark's discovery table
(:mod:`core.bench.group_recovery`), which compares discovery's suggestions against it. No torch.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

REPEAT_PENALTY = 0.05  # each earlier image of the same (attribute, answer) cell costs this


def answer_reliability(cells: Iterable[Hashable], right: Iterable[bool]) -> dict[Hashable, tuple[int, int]]:
    """For each (attribute, answer) cell of the evaluation rows: (how often the answer was right, how often given)."""
    table: dict[Hashable, list[int]] = {}
    for cell, ok in zip(cells, right, strict=True):
        counts = table.setdefault(cell, [0, 0])
        counts[0] += int(ok)
        counts[1] += 1
    return {k: (v[0], v[1]) for k, v in table.items()}


def mistake_score(right: int, total: int, confidence: float) -> float:
    """How likely an answer is a mistake: 1 − its smoothed reliability in its cell, plus ½ (1 − confidence)."""
    return (1 - (right + 1) / (total + 2)) + 0.5 * (1 - confidence)


def spread_order(scores: Sequence[float], cells: Sequence[Hashable], keys: Sequence) -> tuple[list[int], list[int]]:
    """Indices in gallery order, and each item's round (how many better-scored items share its cell): by score
    less :data:`REPEAT_PENALTY` per round, ties broken by ``keys``."""
    first = sorted(range(len(scores)), key=lambda i: (-scores[i], keys[i]))
    rounds = [0] * len(scores)
    seen: dict[Hashable, int] = {}
    for i in first:
        rounds[i] = seen.get(cells[i], 0)
        seen[cells[i]] = rounds[i] + 1
    order = sorted(first, key=lambda i: (-(scores[i] - REPEAT_PENALTY * rounds[i]), keys[i]))
    return order, rounds
