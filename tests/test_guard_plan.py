"""What the Repair page says about the next repair's guard, and what Review says about the check split
(docs/REPAIR_GUARD.md)."""

from __future__ import annotations

from core.app.guard_plan import GuardKind, GuardPlan, hint_helps
from core.app.i18n import translator
from core.app.summary import check_text
from core.engine.check_results import CheckSource

T = translator("en")
SCORE = {"kept": 0.98, "worst_group": 0.5, "accuracy": 0.8, "balanced": 0.7, "fixed": 30, "broken": 4}
BASE = {"kept": 1.0, "worst_group": 0.1, "accuracy": 0.7, "balanced": 0.5, "fixed": 0, "broken": 0}


def test_each_guard_has_its_sentence():
    carved = GuardPlan(GuardKind.CHECK, 240, 960, CheckSource.CARVED).words(T)
    assert "240 labelled check images, set aside automatically (20% of each group" in carved
    assert "the other 960 images" in carved
    assert "the evaluation rows marked split=val" in GuardPlan(GuardKind.CHECK, 9, 1, CheckSource.VAL_ROWS).words(T)
    assert "on 500 unlabelled reference images" in GuardPlan(GuardKind.REFERENCE, reference_images=500).words(T)
    assert GuardPlan(GuardKind.NONE).words(T).startswith("⚠️ Guard: none.")


def test_review_shows_the_check_split_beside_the_reported_numbers():
    m = {"split": {"reported": 960, "check": 240, "source": "carved"},
         "check": {"step": 35, "alpha": 0.75, "score": SCORE, "base": BASE, "checks": []}}  # fmt: skip
    text = check_text(m, T)
    assert "240 evaluation images (set aside automatically) steered this repair" in text
    assert "(those use 960 images)" in text
    assert "worst group 10.0% → 50.0%" in text and "right answers kept 98.0%" in text and "step 35 at 75.0%" in text


def test_no_check_split_no_words():
    assert check_text({"split": {"reported": 100, "check": 0, "source": "none"}, "check": None}, T) is None
    assert check_text({}, T) is None  # a run of a version before the check split


def test_the_invariance_hint_is_offered_only_where_it_was_measured_to_help():
    assert hint_helps("resnet18", "cpt", {}) and hint_helps("mobilenet_v3_small", "cpt", {"invariance": "none"})
    assert not hint_helps("small_cnn", "cpt", {})  # the demo's and the photo suite's small CNNs: no gain
    assert not hint_helps("resnet18", "cpt", {"invariance": "colour"})  # already given
    assert not hint_helps("resnet18", "lora", {})  # a method without the hint
