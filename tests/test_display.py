"""Local times and numbers as people read them (docs/WORKBENCH.md, "Page addresses, times and numbers"): no raw UTC ISO strings, no ``1000.0``."""

from __future__ import annotations

import pytest

from core.app import display, summary
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
    v = {
        "kind": "improved",
        "worst_before": 0.5,
        "worst_after": 0.9,
        "accuracy_change": 0.01,
        "kept": 0.99,
        "reasons": [],
        "worse_groups": [],
    }
    text = summary.verdict_text(v, translator("ja"), auto_strength=1000.0)
    assert "1,000" in text and "1000.0" not in text
