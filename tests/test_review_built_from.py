"""Review's "built from" block (core/app/built_from.py, docs/WORKBENCH.md): the repair's own counterexamples
with label, labeller and both models' answers, how many it fixes, who started it, method and strength."""

from __future__ import annotations

import json

import pytest

from core.app import built_from, pool, projects, review, runs
from core.app.i18n import translator
from tests.test_pages import _app, _finished_run
from tests.wb_helpers import ALICE, MIA, open_demo_here


@pytest.fixture()
def store(home):
    return projects.get_store(home)


def test_review_shows_what_the_repair_was_built_from(home, store):
    pid = open_demo_here(store, ALICE)
    rid = _finished_run(store, pid)  # alice labelled 8 images and started it
    m = runs.run_metrics(store, rid)
    chosen = {c["label"] for c in pool.chosen_set(store, pid)}
    # A label changed after the repair was queued does not change what it was built from.
    first = pool.chosen_set(store, pid)[0]
    other = next(n for n in projects.project_summary(store, pid)["class_names"] if n != first["label"])
    pool.set_label(store, pid, first["key"], other, MIA)
    at = _app("views/review.py")
    assert not at.exception, [e.value for e in at.exception]
    box = at.get_by_key("built_from")
    words = " ".join(str(e.value) for e in box.get("markdown"))
    assert f"{m['counterexamples_fixed']} of 8 counterexamples fixed at full strength" in words
    assert "started by alice" in words and "Change-penalized tuning" in words and "strength 1,000" in words
    assert len(box.get("image")) == 8
    captions = [c.value for c in box.get("caption")]
    assert len(captions) == 8 and all("· alice" in c and "→" in c for c in captions)
    assert captions[0].startswith(f"**{first['label']}**")  # the label the repair used, not the one set since
    assert {c.split("**")[1] for c in captions} <= chosen | {first["label"]}
    # The answers are the task worker's, kept in the run folder, one per counterexample, in the manifest's order.
    answers = json.loads(built_from.answers_file(store.run(rid)).read_text(encoding="utf-8"))
    b = built_from.built_from(store, rid)
    assert [c.after for c in b.images] == answers["after"] and len(answers["before"]) == 8
    assert sum(1 for c in captions if c.count("✓")) == sum(1 for c in b.images if c.fixed)
    assert any(c.before != c.label for c in b.images)  # the old model got counterexamples wrong


def test_the_strength_auto_chose_is_named_wherever_a_repair_is_listed():
    t = translator("en")
    auto = {"id": 4, "strength_label": "auto", "config": {"strength": "auto"}}
    assert review.strength_words(auto, {"strength": 10000.0}, t) == "auto → 10,000"
    assert review.strength_words(auto, None, t) == "auto"  # not finished yet: nothing chosen
    assert review.auto_strength(auto, {"strength": 10000.0}) == 10000.0
    saved = {
        "id": 5,
        "strength_label": "auto · α 0.50",
        "config": {"strength": "auto", "interpolation": {"from_run": 4, "alpha": 0.5}},
    }
    assert review.strength_words(saved, {"strength": 10000.0}, t) == "auto → 10,000 · α 0.50"
    assert review.auto_strength(saved, {"strength": 10000.0}) is None  # its model is not the one auto chose
    fixed = {"id": 6, "strength_label": "1000", "config": {"strength": 1000.0}}
    assert review.strength_words(fixed, {"strength": 1000.0}, t) == "1,000"
    assert translator("ja")("strength_auto_chose", strength="10,000") == "自動 → 10,000"
