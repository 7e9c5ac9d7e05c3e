"""The strengths the Repair page's slider offers (core/app/strength_scale.py): a log scale between a
method's bounds, four steps a decade, read as a person writes them, starting at the method's default."""

from __future__ import annotations

from core.app import runs
from core.app.strength_scale import strength_scale


def _strength(method: str) -> dict:
    return next(s for s in runs.method_schema(method) if s["name"] == "strength")


def test_change_penalized_tuning_offers_four_steps_a_decade_from_1_to_a_million():
    scale = strength_scale(_strength("cpt"))
    assert len(scale.options) == 25 and scale.options[0] == 1.0 and scale.options[-1] == 1e6
    assert scale.options[:5] == [1.0, 1.78, 3.16, 5.62, 10.0]
    assert scale.options == sorted(set(scale.options))
    assert scale.default == 1000.0 and scale.default in scale.options


def test_the_default_snaps_to_the_nearest_step_and_missing_bounds_span_1_to_a_million():
    scale = strength_scale({"min": None, "max": None, "default": 2500.0})
    assert scale.options[0] == 1.0 and scale.options[-1] == 1e6
    assert scale.default == 3160.0  # log-nearest to 2,500 of 1,780 and 3,160
    narrow = strength_scale({"min": 10.0, "max": 100.0, "default": 50.0})
    assert narrow.options == [10.0, 17.8, 31.6, 56.2, 100.0] and narrow.default == 56.2
