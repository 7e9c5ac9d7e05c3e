"""Local times, numbers, shares and durations as people read them (docs/WORKBENCH.md, "Page addresses, times
and numbers"): no raw UTC ISO strings, no ``1000.0``, one formatter for each."""

from __future__ import annotations

import math

import pytest

from core.app import display, summary, verdict
from core.app.i18n import translator


@pytest.mark.parametrize(
    ("tz", "shown"),
    [
        ("Asia/Tokyo", "2026-11-30 19:30 JST"),
        ("Europe/Berlin", "2026-11-30 11:30 CET"),
        ("America/New_York", "2026-11-30 05:30 EST"),
        (None, "2026-11-30 10:30 UTC"),
        ("Not/AZone", "2026-11-30 10:30 UTC"),
        ("", "2026-11-30 10:30 UTC"),
    ],
)
def test_a_stored_utc_time_is_shown_in_the_browsers_zone_with_the_zone_named(tz, shown):
    assert display.local_time("2026-11-30T10:30:01Z", tz) == shown


def test_summer_time_date_change_and_the_history_columns_form():
    assert display.local_time("2026-06-30T10:30:01Z", "Europe/Berlin") == "2026-06-30 12:30 CEST"
    assert display.local_time("2026-11-30T20:00:00Z", "Asia/Tokyo", with_zone=False, seconds=True) == (
        "2026-12-01 05:00:00"
    )
    assert display.zone_name("Asia/Tokyo") == "Asia/Tokyo" and display.zone_name(None) == "UTC"
    assert display.zone_name("nonsense") == "UTC"
    assert display.local_time(None, "Asia/Tokyo") == "" and display.local_time("yesterday", None) == "yesterday"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1000.0, "1,000"),
        ("1000.0", "1,000"),
        (100000.0, "1e5"),
        ("1e+06", "1e6"),
        (1e-5, "1e-5"),
        (0.003, "0.003"),
        (2.5, "2.5"),
        (0, "0"),
        ("auto", "auto"),
        ("1000 · α 0.50", "1000 · α 0.50"),
        (None, "–"),
    ],
)
def test_strengths_read_without_trailing_zeros(value, shown):
    assert display.number(value) == shown


def test_the_verdict_names_the_auto_strength_as_a_person_writes_it():
    v = verdict.Verdict(
        kind=verdict.Kind.IMPROVED,
        reasons=(),
        accuracy_change=0.01,
        worst_before=0.5,
        worst_after=0.9,
        kept=0.99,
        max_drop=verdict.MAX_ACCURACY_DROP,
        min_kept=verdict.MIN_KEPT_DECISIONS,
        no_change=None,
        n_fixed=0,
        n_broken=0,
        worse_groups=(),
        better_groups=(),
        biggest_gain=None,
        biggest_loss=None,
    )
    text = summary.verdict_text(v, translator("ja"), auto_strength=1000.0)
    assert "1,000" in text and "1000.0" not in text


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [(0.1234, 1, "12.3%"), (0.1234, 0, "12%"), (1.0, 1, "100.0%"), (0.0, 0, "0%"), (None, 1, "–"), (math.nan, 1, "–")],
)
def test_a_share_reads_as_a_percentage(value, digits, shown):
    assert display.percent(value, digits) == shown


@pytest.mark.parametrize(
    ("value", "kwargs", "shown"),
    [
        (0.523, {}, "52.3"),
        (0.523, {"signed": True}, "+52.3"),
        (-0.023, {"signed": True}, "-2.3"),
        (0.02, {"digits": 0}, "2"),
        (None, {"signed": True}, "–"),
        (math.nan, {}, "–"),
    ],
)
def test_a_change_reads_in_percentage_points(value, kwargs, shown):
    assert display.points(value, **kwargs) == shown


def test_durations_and_group_names():
    assert display.duration(None) == "…" and display.duration(125.4) == "2:05" and display.duration(0) == "0:00"
    assert display.group_name({"label": "two", "attribute": "red"}) == "two · red"
    assert display.group_name({"label": "two", "attribute": "(none)"}) == "two"
    assert display.group_name({"label": "two", "attribute": ""}) == "two"
