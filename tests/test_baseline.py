"""The Review page's baseline switch (core/app/baseline.py): a repair compared with the original model or with
the model in use now, every number computed from the two models' answers, the report naming its baseline,
and the switch off with its reason when there is no other model in use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.app import baseline, decisions, projects, report, review, runs, verdict
from core.app.i18n import translator
from tests.run_fixtures import make_tradeoff_run
from tests.test_pages import _app, _texts
from tests.wb_helpers import ALICE, ANN, MIA, open_demo_here


@pytest.fixture()
def two_runs(home):
    """Run A approved (in use now) and run B, made with other fixes and breaks, to review against it."""
    store = projects.get_store(home)
    pid = open_demo_here(store, ALICE)
    a = make_tradeoff_run(store, pid)
    b = make_tradeoff_run(store, pid, break_share=0.1, fix_share=0.4)
    return store, pid, a, b


def _answers(store, rid):
    rows = runs.prediction_rows(store, rid)
    y = np.array([r["label"] for r in rows])
    return y, np.array([r["before"] for r in rows]), np.array([r["after"] for r in rows])


def test_the_original_recomputed_is_the_runs_own_numbers(two_runs):
    store, _, a, _ = two_runs
    m = runs.run_metrics(store, a)
    rows = runs.prediction_rows(store, a)
    names = store.model(store.run(a)["model_id"])["meta"]["class_names"]
    _, before, after = _answers(store, a)
    again = baseline.relative_metrics(m, rows, before.tolist(), after.tolist(), names)
    assert again["before"]["accuracy"] == pytest.approx(m["before"]["accuracy"])
    assert [(g["accuracy"], g["ci_low"]) for g in again["before"]["groups"]] == pytest.approx(
        [(g["accuracy"], g["ci_low"]) for g in m["before"]["groups"]]
    )
    for key in ("kept_decisions", "n_fixed", "n_broken", "changed_predictions"):
        assert again[key] == pytest.approx(m[key]), key


def test_the_switch_is_off_with_its_reason_until_another_model_is_in_use(two_runs):
    store, pid, a, b = two_runs
    assert baseline.in_use_option(store, b).reason == "baseline_none_in_use"
    decisions.approve_run(store, a, "ok", MIA)
    assert baseline.in_use_option(store, a).reason == "baseline_is_this_run"
    opt = baseline.in_use_option(store, b)
    assert opt.available and opt.run_id == a and opt.baseline().kind is baseline.BaselineKind.IN_USE
    # A repair in use that answered other images cannot be compared with.
    path = Path(store.run(a)["out_dir"]) / "predictions.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    assert baseline.in_use_option(store, b).reason == "baseline_other_rows"


def test_against_the_model_in_use_every_number_is_computed_from_both_models(two_runs):
    store, pid, a, b = two_runs
    decisions.approve_run(store, a, "ok", MIA)
    t = translator("en")
    base = baseline.in_use_option(store, b).baseline()
    orig = review.review_content(store, b, t)
    now = review.review_content(store, b, t, baseline=base)
    y, _, a_after = _answers(store, a)
    _, _, b_after = _answers(store, b)
    a_right, b_right = a_after == y, b_after == y
    m = now.metrics
    assert m["before"]["accuracy"] == pytest.approx(runs.run_metrics(store, a)["after"]["accuracy"])
    assert m["after"] == orig.metrics["after"]
    assert m["n_fixed"] == int((~a_right & b_right).sum()) and m["n_broken"] == int((a_right & ~b_right).sum())
    assert m["kept_decisions"] == pytest.approx((a_right & b_right).sum() / a_right.sum())
    assert len(now.changed) == int((a_after != b_after).sum()) != len(orig.changed)
    assert now.verdict == verdict.judge(m) != orig.verdict
    assert now.card_html(t) != orig.card_html(t)
    # The trade-off chart: each run's kept decisions against the model in use (A keeps all of its own).
    points = {p["run_id"]: p for p in baseline.tradeoff_points(store, pid, base)}
    assert points[a]["kept"] == 1.0 and points[b]["kept"] == pytest.approx(m["kept_decisions"])
    # A preview's answers are compared with the model in use too.
    p = review.review_content(
        store,
        b,
        t,
        preview={"metrics": {**orig.metrics, "after": runs.run_metrics(store, a)["after"]}, "after": a_after.tolist()},
        baseline=base,
    )
    assert p.changed == [] and p.metrics["changed_predictions"] == 0 and p.verdict.kind == "unchanged"


def test_the_report_says_which_baseline_it_used(two_runs):
    store, _, a, b = two_runs
    decisions.approve_run(store, a, "ok", MIA)
    t = translator("en")
    base = baseline.in_use_option(store, b).baseline()
    page = report.report_html(store, b, ANN, t, "en", None, baseline=base)
    assert f"Compared with: the model in use now, the repaired model of repair #{a}." in page
    assert review.review_content(store, b, t, baseline=base).words in page
    plain = report.report_html(store, b, ANN, t, "en", None)
    assert "Compared with: the original model." in plain and "model in use now, the" not in plain


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_review_page_switch_changes_the_card_and_is_off_with_a_reason(two_runs, lang):
    store, pid, a, b = two_runs
    t = translator(lang)
    at = _app("views/review.py", lang=lang)
    switch = at.button_group[0]
    assert switch.disabled and t("baseline_none_in_use") in _texts(at)
    decisions.approve_run(store, a, "ok", MIA)
    at = _app("views/review.py", lang=lang)
    picker = next(s for s in at.selectbox if s.key.startswith("review_run_"))
    picker.set_value(b).run()
    switch = at.button_group[0]
    assert not switch.disabled and t("baseline_compared_original") in _texts(at)
    card_original = " ".join(str(h.proto.body) for h in at.get("html") if "summary-card" in str(h.proto.body))
    switch.set_value("in_use").run()
    assert not at.exception
    assert t("baseline_compared_in_use", run=a) in _texts(at)
    card_in_use = " ".join(str(h.proto.body) for h in at.get("html") if "summary-card" in str(h.proto.body))
    assert card_in_use != card_original
    content = review.review_content(store, b, t, baseline=baseline.in_use_option(store, b).baseline())
    alert = " ".join(str(e.value) for kind in ("success", "warning", "info", "error") for e in at.get(kind))
    assert content.words in alert
    fixed_title = t("review_tab_fixed", n=len(content.fixed))
    assert fixed_title in " ".join(str(md.value) for md in at.markdown)
