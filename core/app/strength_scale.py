"""The strengths the Repair page's slider offers for a method: a log scale between the method's
bounds, a few steps a decade, with the method's default snapped to the nearest step.

Strengths span several decades (λ from 1 to 10⁶ for change-penalized tuning), so equal steps on a
log scale give a slider that moves as much at 10 as at 10⁵; each step is rounded to three
significant figures so that it reads as a person would write it (``1,780`` rather than ``1778.28``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STEPS_PER_DECADE = 4
DEFAULT_RANGE = (1.0, 1e6)  # when a method's setting does not bound the strength


@dataclass(frozen=True)
class StrengthScale:
    """The slider's steps, smallest first, and the step it starts on."""

    options: list[float]
    default: float


def strength_scale(spec: dict) -> StrengthScale:
    """The scale for the ``strength`` setting of a method (one entry of
    :func:`core.engine.configs.config_schema`: its ``min``, ``max`` and ``default``)."""
    lo, hi = spec["min"] or DEFAULT_RANGE[0], spec["max"] or DEFAULT_RANGE[1]
    n = int(round(math.log10(hi / lo) * STEPS_PER_DECADE))
    options = [float(f"{lo * 10 ** (i / STEPS_PER_DECADE):.3g}") for i in range(n + 1)]
    default = min(options, key=lambda v: abs(math.log10(v) - math.log10(spec["default"])))
    return StrengthScale(options, default)
