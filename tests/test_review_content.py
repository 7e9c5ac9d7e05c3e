"""What the Review page shows and the report holds for one repair, decided in core (core/app/review.py):
the content at full strength and at a previewed strength, which audit rows go into the report, and
the words for a repair and for the model in use."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

from core.app import decisions, projects, report, review, runs, verdict
from core.app.i18n import translator
from tests.run_fixtures import make_tradeoff_run
from tests.wb_helpers import ALICE, ANN, MIA, open_demo_here


@pytest.fixture()
def repaired(home):
    store = projects.get_store(home)
    pid = open_demo_here(store, ALICE)
    return store, pid, make_tradeoff_run(store, pid)


def test_the_content_at_full_strength_and_at_a_previewed_strength(repaired):
    store, _, rid = repaired
    t = translator("en")
    c = review.review_content(store, rid, t)
    assert c.verdict == verdict.judge(runs.run_metrics(store, rid))
    assert c.verdict.kind == "mixed" and "two · red" in c.words
    assert len(c.fixed) == c.metrics["n_fixed"] and len(c.broken) == c.metrics["n_broken"]
    assert len(c.changed) == c.metrics["changed_predictions"]
    assert html.escape(c.words) in c.card_html(t, with_verdict=True)
    assert html.escape(c.words) not in c.card_html(t)  # the page shows the words in its own alert box

    # A preview at a strength where nothing changes: the old answers for the same rows.
    old = [r["before"] for r in runs.prediction_rows(store, rid)]
    m0 = {
        **c.metrics,
        "after": c.metrics["before"],
        **{"changed_predictions": 0, "n_fixed": 0, "n_broken": 0, "kept_decisions": 1.0},
    }
    p = review.review_content(store, rid, t, preview={"metrics": m0, "after": old})
    assert p.verdict.kind == "unchanged" and p.changed == [] and p.run == c.run


def test_an_auto_strength_is_named_only_when_the_workbench_chose_it():
    assert review.auto_strength({"config": {"strength": "auto"}}, {"strength": 300.0}) == 300.0
    assert review.auto_strength({"config": {"strength": 300.0}}, {"strength": 300.0}) is None


def test_only_finished_repairs_can_be_reviewed(repaired):
    store, pid, rid = repaired
    base = store.project(pid)["base_model_id"]
    failed = store.create_run(pid, base, "cpt", {"strength": 1.0}, "1", 8, Path("."), "tester")
    store.finish_run(failed, "failed", error="no")
    assert [r["id"] for r in review.reviewable_runs(store, pid)] == [rid]


def test_the_report_holds_the_decisions_on_its_repair_and_no_other_rows(repaired):
    store, pid, rid = repaired
    other = make_tradeoff_run(store, pid)
    t = translator("en")
    project = store.project(pid)
    assert review.in_use_line(store, pid, t) == "In use now: the original model."
    decisions.approve_run(store, rid, "fine for the pilot", MIA)
    data = decisions.export_bytes(store, rid, MIA)
    decisions.record_export(store, rid, data, MIA)
    decisions.record_report(store, rid, b"<html></html>", MIA)
    decisions.reject_run(store, other, "not this one", ANN)
    assert review.in_use_line(store, pid, t) == f"In use now: the repaired model of repair #{rid}."
    project = store.project(pid)
    assert review.run_item(store.run(rid), project, t) == f"Repair #{rid} · strength 1,000 · approved · in use now"
    decisions.rollback(store, pid, ANN, "back to the original for the audit")

    events = review.decision_events(store, store.run(rid))
    assert [e["action"] for e in events] == ["approved", "exported", "rolled_back"]
    page = report.report_html(store, rid, ANN, t, "en", "Asia/Tokyo")
    assert "fine for the pilot" in page and "not this one" not in page
    assert "rejected a repair" not in page and "downloaded a report" not in page
    assert "approved a repair" in page and "exported a repaired model" in page
    assert "rolled back to the original model" in page
    assert "This report was made by ann at" in page and " JST." in page
    assert html.escape(review.review_content(store, rid, t).words) in page
