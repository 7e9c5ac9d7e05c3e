"""Every page through ``streamlit.testing.v1.AppTest``: the app script with st.navigation, real store,
real demo (built once per session), no browser."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.app import (
    decisions,
    display,
    interpolated_runs,
    pool,
    projects,
    runs,
    suspected_groups,
    uploads,
    verdict,
)
from core.app.i18n import translator
from core.app.worker import execute_run
from core.errors import UserError
from tests.run_fixtures import make_tradeoff_run
from tests.wb_helpers import (
    ALICE,
    APP,
    FAST_RUN,
    MIA,
    label_top,
    no_attribute_project,
    open_demo_here,
    sign_in_app,
    wait_for,
    zip_folder_bytes,
)


@pytest.fixture()
def store(home):
    return projects.get_store(home)


def _app(page: str | None = None, lang: str = "en", user: str | None = "mia") -> AppTest:
    """The app as ``user`` (signed in with their password; None: signed out) on ``page``."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["lang"] = lang
    if user:
        sign_in_app(at, projects.get_store(), user)
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at) -> str:
    parts = []
    for kind in ("title", "markdown", "caption", "info", "warning", "error", "success", "subheader"):
        parts += [str(e.value) for e in at.get(kind)]
    return "\n".join(parts)


def test_model_page_opens_the_demo_and_shows_the_bias(home, store):
    at = _app()
    assert "Press “Open the demo”" in _texts(at)
    at.button(key="open_demo").click().run()
    assert not at.exception
    text = _texts(at)
    assert "On images marked" in text and "recognised correctly" in text
    assert len(at.get("plotly_chart")) == 2  # heat map and bars
    assert [m.label for m in at.metric][:2] == ["Accuracy", "Worst-group accuracy"]
    assert store.projects()[0]["is_demo"]


def test_model_page_in_japanese(home, store):
    open_demo_here(store, ALICE)
    at = _app(lang="ja")
    text = _texts(at)
    assert "モデル：どこに偏りがあるか" in text and "の画像では" in text
    at.sidebar.radio[0].set_value("en").run()
    assert "Model: where is it biased?" in _texts(at)


def test_model_page_names_a_suspected_group_and_the_heat_map_uses_it(home, store, demo_dir):
    pid = no_attribute_project(store, demo_dir)
    at = _app()
    assert not at.exception
    text = _texts(at)
    assert "has no attribute column" in text and "suspected groups, the clearest first" in text
    heat = at.get("plotly_chart")[0].proto.spec
    assert "(none)" in heat and "red corner" not in heat  # one column: classes only
    assert not any("On images marked" in w.value for w in at.warning)  # no finding without groups
    top = suspected_groups.project_groups(store, pid, compute=False)[0]
    assert at.get_by_key(f"suspect_{top['id']}") is not None  # the clearest group is on the page
    strips = [len(e.proto.imgs) for e in at.get("image")]
    assert strips and min(strips) >= 5, strips  # a strip of thumbnails per group
    at.text_input(key=f"suspect_name_{top['id']}").input("red corner")
    at.button(key=f"suspect_apply_{top['id']}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Named “red corner”" in s.value for s in at.success), [s.value for s in at.success]
    # The heat map, the group table, worst group and the finding now group by the new name.
    heat = at.get("plotly_chart")[0].proto.spec
    assert "red corner" in heat
    table = at.dataframe[0].value
    named = table[table["Attribute"] == "red corner"]
    assert list(named["Label"]) == [top["label_name"]] and int(named["Images"].iloc[0]) == top["size"]
    finding = next(w.value for w in at.warning if "On images marked" in w.value)
    assert "red corner" in finding and top["label_name"] in finding
    assert f"suspect_name_{top['id']}" not in [w.key for w in at.text_input]  # named: shows its name instead
    assert [e["action"] for e in store.audit_events(pid)][-1] == "group_named"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not a zip at all", "is not a valid zip file"),
        (None, "has no model.safetensors"),
    ],
)
def test_bad_model_upload_shows_a_message_not_a_traceback(home, store, payload, message):
    import io
    import zipfile

    if payload is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("model.json", "{}")
        payload = buf.getvalue()
    at = _app()
    at.file_uploader(key="up_bundle").set_value(("bad.zip", payload, "application/zip")).run()
    at.button(key="load_bundle").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(message in e and "Nothing you saved before was changed" in e for e in errors), errors
    assert store.projects() == []


def test_a_core_upload_error_reads_in_japanese(home, store):
    at = _app(lang="ja")
    at.file_uploader(key="up_bundle").set_value(("bad.zip", b"not a zip at all", "application/zip")).run()
    at.button(key="load_bundle").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("bad.zip は正しい zip ファイルではありません" in e for e in errors), errors
    assert not any("is not a valid zip file" in e for e in errors)


def test_eval_upload_through_the_page(home, store, demo_dir):
    pid = uploads.upload_model_zip(store, zip_folder_bytes(demo_dir / "model"), "mine.zip", ALICE)
    at = _app()
    assert "Upload an evaluation set" in _texts(at)
    at.file_uploader(key="up_eval").set_value(("bad.zip", b"PK\x03\x04broken", "application/zip")).run()
    at.button(key="load_eval").click().run()
    assert any("not a valid zip" in e.value for e in at.error)
    assert projects.project_summary(store, pid)["active_model"]  # the model is still there


def test_weights_file_and_form_make_a_project(home, store, demo_dir):
    at = _app()
    raw = (demo_dir / "model" / "model.safetensors").read_bytes()
    at.file_uploader(key="up_weights").set_value(("weights.safetensors", raw, "application/octet-stream")).run()
    at.selectbox(key="w_arch").set_value("small_cnn")
    at.text_area(key="w_classes").input("zero, one, two, three, four, five, six, seven, eight, nine")
    at.text_input(key="w_size").input("3 28 28")
    at.text_input(key="w_mean").input("0.16 0.15 0.14")
    at.text_input(key="w_std").input("0.32 0.31 0.30")
    next(b for b in at.button if b.label == "Load these weights").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Model weights.safetensors loaded and checked." in _texts(at)
    assert store.projects()[0]["name"] == "weights"
    # the same form with a wrong class count is refused with a message
    at.text_area(key="w_classes").input("a, b, c")
    next(b for b in at.button if b.label == "Load these weights").click().run()
    assert any("num_classes" in e.value or "do not fit" in e.value for e in at.error), [e.value for e in at.error]
    assert len(store.projects()) == 1


def test_single_images_and_pool_zip_through_the_page(home, store, demo_dir):
    pid = open_demo_here(store, ALICE)
    at = _app("views/counterexamples.py")
    png = next((demo_dir / "pool" / "images").glob("*.png")).read_bytes()
    at.file_uploader(key="up_single").set_value([("mine.png", png, "image/png")]).run()
    at.text_input(key="single_attr").input("red")
    at.button(key="add_single").click().run()
    assert "1 image(s) added to the gallery." in _texts(at)
    assert any(c["source"] == "uploads" for c in pool.candidates(store, pid))
    at.file_uploader(key="up_pool").set_value(("pool.zip", b"PK\x05\x06" + b"\x00" * 18, "application/zip")).run()
    at.button(key="load_pool").click().run()
    assert any("holds no PNG or JPEG images" in e.value or "is empty" in e.value for e in at.error), [
        e.value for e in at.error
    ]


def test_counterexamples_page_labels_by_click_bulk_and_relabel(home, store):
    pid = open_demo_here(store, ALICE)
    at = _app("views/counterexamples.py")
    assert "Quick labelling" in _texts(at)
    top = pool.candidates(store, pid)[0]
    at.button(key="quick_7").click().run()
    assert [(c["key"], c["label"]) for c in pool.chosen_set(store, pid)] == [(top["key"], "seven")]
    # tick two images on the grid and label them at once
    ticks = [c for c in at.checkbox if c.key.startswith("sel_") and c.key != f"sel_{top['key']}"][:2]
    for c in ticks:
        c.check()
    at.run()
    at.selectbox(key="bulk_label").set_value("three").run()
    at.button(key="bulk_apply").click().run()
    chosen = {c["key"]: c["label"] for c in pool.chosen_set(store, pid)}
    assert len(chosen) == 3 and [chosen[t.key.removeprefix("sel_")] for t in ticks] == ["three", "three"]
    assert "The project's counterexamples (3)" in _texts(at)
    # relabel and remove in the chosen list
    at.selectbox(key=f"relabel_{top['key']}_seven").set_value("one").run()
    assert {c["key"]: c["label"] for c in pool.chosen_set(store, pid)}[top["key"]] == "one"
    at.button(key=f"rm_{top['key']}").click().run()
    assert len(pool.chosen_set(store, pid)) == 2
    assert not at.exception


def test_tune_page_starts_watches_and_cancels(home, store):
    pid = open_demo_here(store, ALICE)
    label_top(store, pid, 4)
    at = _app("views/tune.py")
    assert at.toggle(key="tune_auto").value is False
    # advanced settings are built from the method's config schema, with its defaults
    defaults = {s["name"]: s["default"] for s in runs.method_schema("cpt")}
    assert at.number_input(key="cfg_cpt_max_steps").value == defaults["max_steps"]
    assert at.selectbox(key="cfg_cpt_penalty").value == defaults["penalty"]
    at.number_input(key="cfg_cpt_max_steps").set_value(5000)
    at.number_input(key="cfg_cpt_min_steps").set_value(5000)
    at.button(key="tune_start").click().run()
    started = store.runs(pid)
    assert len(started) == 1 and started[0]["config"]["max_steps"] == 5000
    assert "Repair #1 submitted" in _texts(at)
    at.button(key=f"cancel_{started[0]['id']}").click().run()
    wait_for(lambda: store.run(started[0]["id"])["status"] == "cancelled", timeout=120)
    at.run()
    assert "This repair was cancelled." in _texts(at)


def test_the_runs_table_says_cancelling_until_the_worker_has_stopped_the_run(home, store):
    pid = open_demo_here(store, ALICE)
    label_top(store, pid, 2)
    rid = runs.submit_run(store, pid, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    assert store.claim_next_run(os.getpid())["id"] == rid  # running, in this process's hands: no step ends
    runs.cancel_run(store, rid, ALICE)
    for lang in ("en", "ja"):
        tr = translator(lang)
        at = _app("views/tune.py", lang=lang)
        assert list(at.dataframe[0].value[tr("tune_col_status")]) == [tr("status_cancelling")]
        assert tr("status_cancelling") != tr("status_running")
    store.finish_run(rid, "cancelled")  # what the worker does after its current step
    at.run()
    assert list(at.dataframe[0].value[tr("tune_col_status")]) == [tr("status_cancelled")]


def test_tune_page_says_which_guard_the_next_repair_uses(home, store):
    pid = open_demo_here(store, ALICE)
    for lang in ("en", "ja"):  # before any counterexample: no "your 0 counterexamples"
        tr, before = translator(lang), _app("views/tune.py", lang=lang)
        assert tr("tune_intro_none") in _texts(before) and tr("tune_need_labels") in _texts(before)
        assert tr("tune_intro", n=0) not in _texts(before)
    label_top(store, pid, 2)
    at = _app("views/tune.py")
    assert "getting your 2 counterexamples right" in _texts(at)
    # the demo's evaluation set has 1,000 rows marked split=val: CPT's default rule steers by them
    assert "Guard: 1000 labelled check images (the evaluation rows marked split=val)" in _texts(at)
    assert "the other 6000 images" in _texts(at)
    at.selectbox(key="cfg_cpt_stop_rule").set_value("kept").run()
    assert "Guard: no labelled check images, so the repair keeps the old answers on" in _texts(at)
    at.selectbox(key="cfg_cpt_stop_rule").set_value("paper").run()
    assert "Guard: none." in _texts(at)
    assert "What should not matter" not in _texts(at)  # the hint is offered only where it helped: not the small CNN
    assert not at.exception


def test_tune_page_builds_settings_for_every_method(home, store):
    pid = open_demo_here(store, ALICE)
    label_top(store, pid, 2)
    at = _app("views/tune.py")
    for name, _ in runs.method_choices():
        at.selectbox(key="tune_method").set_value(name).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        fields = {s["name"] for s in runs.method_schema(name)}
        assert bool(at.get("select_slider")) == ("strength" in fields), name
        for spec in runs.method_schema(name):
            if spec["name"] != "strength":
                assert at.get_by_key(f"cfg_{name}_{spec['name']}") is not None, (name, spec["name"])


def _finished_run(store, pid) -> int:
    label_top(store, pid, 8)
    rid = runs.submit_run(store, pid, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    execute_run(store, store.claim_next_run(os.getpid()))
    return rid


def test_review_page_verdict_approve_and_roll_back(home, store):
    pid = open_demo_here(store, ALICE)
    rid = _finished_run(store, pid)
    at = _app("views/review.py")
    assert not at.exception
    text = _texts(at)
    assert "Rules used: a repair is flagged if overall accuracy falls by more than 2 points" in text
    # the check split beside the reported numbers, never mixed with them
    assert "Check images: 1000 evaluation images (the rows marked split=val) steered this repair" in text
    assert "(those use 6000 images)" in text and "On the check images: worst group" in text
    assert len(at.get("plotly_chart")) == 2
    v = verdict.judge(runs.run_metrics(store, rid))
    if v.flagged:
        at.checkbox(key="override").check()
        at.text_area(key="override_reason").input("pilot, watched closely")
    at.text_area(key="approve_comment").input("good for the pilot")
    next(b for b in at.button if b.label == "Approve").click().run()
    assert store.run(rid)["decision"] == "approved"
    assert store.project(pid)["active_model_id"] != store.project(pid)["base_model_id"]
    assert "Repair #1 approved" in _texts(at)
    at.button(key="rollback").click().run()
    at.text_area(key="rollback_reason").input("pilot over")
    at.button(key="rollback_go").click().run()
    assert store.project(pid)["active_model_id"] == store.project(pid)["base_model_id"]
    approved = next(e for e in store.audit_events(pid) if e["action"] == "approved")
    assert approved["detail"]["comment"] == "good for the pilot"


def test_flagged_run_cannot_be_approved_without_override(home, store, monkeypatch):
    pid = open_demo_here(store, ALICE)
    rid = _finished_run(store, pid)
    monkeypatch.setattr(verdict, "MIN_KEPT_DECISIONS", 1.01)  # every run is now below the threshold
    at = _app("views/review.py")
    assert at.error and "Careful" in at.error[0].value
    next(b for b in at.button if b.label == "Approve").click().run()
    assert any("tick the override box" in e.value for e in at.error)
    assert store.run(rid)["decision"] is None


def test_a_finished_repair_on_the_repair_page_has_reviews_slider_values_computed(home, store):
    pid = open_demo_here(store, ALICE)
    rid = make_tradeoff_run(store, pid)
    assert store.pending_tasks("alpha_grid") == [] and interpolated_runs.missing(store.run(rid))
    at = _app("views/tune.py")  # showing the finished repair (the only one)
    assert "Finished (" in _texts(at)
    assert [p["run_id"] for p in store.pending_tasks("alpha_grid")] == [rid]
    # the task worker computes them nearest the repair first: the slider's first step is a file read
    wait_for(lambda: interpolated_runs.preview_file(store.run(rid), 0.95).is_file(), timeout=300)
    at.run()
    assert len(store.pending_tasks("alpha_grid")) <= 1  # polling the page does not queue it again


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_review_names_the_group_that_got_worse_and_shows_both_galleries(home, store, lang):
    pid = open_demo_here(store, ALICE)
    rid = make_tradeoff_run(store, pid)
    v = verdict.judge(runs.run_metrics(store, rid))
    assert v.kind == "mixed" and v.worse_groups[0].name == "two · red"
    at = _app("views/review.py", lang=lang)
    box = at.warning[0].value
    assert "two · red" in box and str(v.n_broken) in box and str(v.n_fixed) in box
    assert not any(b.value.startswith("Recommended") for b in at.success)
    card = " ".join(str(h.proto.body) for h in at.get("html"))
    assert "two · red" in card and "font-size:42px" in card
    assert at.get_by_key("gallery_fixed") is not None and at.get_by_key("gallery_broken") is not None
    captions = [c.value for c in at.caption]
    assert any(c.startswith("✗") and "two · red" in c for c in captions)


def test_approve_and_roll_back_update_every_status_and_the_run_list(home, store):
    pid = open_demo_here(store, ALICE)
    rid = make_tradeoff_run(store, pid)
    at = _app("views/review.py")
    assert "In use now: the original model." in _texts(at)
    next(b for b in at.button if b.label == "Approve").click().run()
    text = _texts(at)
    assert "Repair #1 approved" in text and "approved · in use now" in text
    assert "In use now: the repaired model of repair #1." in text
    picker = next(s for s in at.selectbox if s.label == "Repair to review")
    assert "approved · in use now" in picker.format_func(rid) and picker.value == rid
    at.button(key="rollback").click().run()
    at.text_area(key="rollback_reason").input("back to the original")
    at.button(key="rollback_go").click().run()
    text = _texts(at)
    assert "The original model is active again." in text and "In use now: the original model." in text
    picker = next(s for s in at.selectbox if s.label == "Repair to review")
    assert "rolled back" in picker.format_func(rid) and "in use now" not in picker.format_func(rid)
    tune = _app("views/tune.py")
    assert "In use now: the original model." in _texts(tune)
    table = tune.dataframe[0].value
    assert list(table["Decision"]) == ["approved, then rolled back · not in use"]


def _card(at) -> str:
    return " ".join(str(h.proto.body) for h in at.get("html") if "summary-card" in str(h.proto.body))


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_review_strength_slider_previews_and_saves_a_run_to_approve(home, store, lang):
    pid = open_demo_here(store, ALICE)
    rid = _finished_run(store, pid)
    full = runs.run_metrics(store, rid)
    assert full["changed_predictions"] > 0
    at = _app("views/review.py", lang=lang)
    slider = at.slider(key=f"alpha_{rid}")
    assert slider.value == 1.0
    card_full = _card(at)
    assert display.percent(full["after"]["accuracy"]) in card_full

    # α = 0 is the old model: nothing changed, the card's new numbers are the old ones.
    slider.set_value(0.0).run()
    assert not at.exception, [e.value for e in at.exception]
    zero = interpolated_runs.preview(store, rid, 0.0, ALICE)
    assert zero["metrics"]["changed_predictions"] == 0 and zero["metrics"]["kept_decisions"] == 1.0
    assert zero["metrics"]["after"]["accuracy"] == full["before"]["accuracy"]
    assert at.get_by_key("alpha_save").proto.disabled
    assert not any(c.value.startswith(("✓", "✗")) for c in at.caption)  # no image changed its answer

    # α = 0.5: recomputed numbers in the card and the galleries, and a preview line.
    at.slider(key=f"alpha_{rid}").set_value(0.5).run()
    half = interpolated_runs.preview(store, rid, 0.5, ALICE)["metrics"]
    assert 0 < half["changed_predictions"] < full["changed_predictions"]
    card_half = _card(at)
    assert card_half != card_full and display.percent(half["after"]["accuracy"]) in card_half
    assert display.percent(half["kept_decisions"]) in card_half
    preview_line = next(i.value for i in at.info if "0.50" in i.value)
    assert str(half["counterexamples_fixed"]) in preview_line
    marks = [c.value[0] for c in at.caption if c.value[:1] in ("✓", "✗")]
    assert marks and len(marks) <= min(32, half["changed_predictions"])

    # Save α = 0.5: a new finished run with its own model, recorded, selected, and approvable.
    at.button(key="alpha_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    new = max(r["id"] for r in store.runs(pid))
    assert new != rid
    saved = store.run(new)
    assert saved["status"] == "done" and saved["config"]["interpolation"] == {"from_run": rid, "alpha": 0.5}
    assert json.loads(saved["request_json"])["interpolation"] == {"from_run": rid, "alpha": 0.5}
    assert (Path(saved["out_dir"]) / "model" / "model.safetensors").is_file()
    assert runs.run_metrics(store, new)["kept_decisions"] == half["kept_decisions"]
    event = next(e for e in store.audit_events(pid) if e["action"] == "run_interpolated")
    assert event["detail"]["run_id"] == new and event["detail"]["from_run"] == rid
    assert next(s for s in at.selectbox if s.key.startswith("review_run_")).value == new
    assert f"#{new}" in at.success[-1].value and "0.50" in at.success[-1].value
    # mia saved it, so she started this run: the four-eyes rule leaves its approval to another approver. The
    # page does not offer a click it would refuse (Approve is off, with the reason), and the service refuses it.
    assert next(b for b in at.button if b.label == translator(lang)("review_approve")).disabled
    assert translator(lang)("review_four_eyes_you") in _texts(at)
    with pytest.raises(UserError, match="four-eyes rule"):
        decisions.approve_run(store, new, "", MIA, override=True, reason="test")
    assert store.run(new)["decision"] is None
    assert any(e["action"] == "forbidden" and e["detail"].get("run_id") == new for e in store.audit_events())
    at = _app("views/review.py", lang=lang, user="ann")
    assert next(s for s in at.selectbox if s.key.startswith("review_run_")).value == new
    if verdict.judge(runs.run_metrics(store, new)).flagged:
        at.checkbox(key="override").check()
        at.text_area(key="override_reason").input("weaker repair")
    next(b for b in at.button if b.label == translator(lang)("review_approve")).click().run()
    assert store.run(new)["decision"] == "approved"
    assert store.project(pid)["active_model_id"] == store.run(new)["repaired_model_id"]


def test_model_page_shows_the_smallest_group_and_the_threshold_apart(home, store):
    open_demo_here(store, ALICE)
    at = _app()
    smallest = next(m for m in at.metric if m.label == "Smallest group")
    assert int(smallest.value) > 10
    assert "Groups with fewer than 10 test images are shown but not used" in _texts(at)


def test_history_page_lists_and_filters(home, store):
    pid = open_demo_here(store, ALICE)
    label_top(store, pid, 2)
    at = _app("views/history.py", lang="ja")
    assert "履歴" in _texts(at)
    df = at.dataframe[0].value
    assert len(df) == len(store.audit_events(pid))
    at.multiselect(key="history_actions").set_value(["label_added"]).run()
    assert len(at.dataframe[0].value) == 2
    assert set(at.dataframe[0].value["操作"]) == {"画像にラベルを付けた"}


def test_history_names_a_repairs_settings_as_the_repair_page_does_in_japanese(home, store):
    pid = open_demo_here(store, ALICE)
    label_top(store, pid, 2)
    runs.submit_run(store, pid, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    at = _app("views/history.py", lang="ja")
    ja = translator("ja")
    df = at.dataframe[0].value
    queued = df[df[ja("history_col_what")] == ja("action_run_queued")][ja("history_col_details")].iloc[0]
    for name in ("max_steps", "min_steps", "lr", "check_floor", "strength"):
        assert f"{ja(f'cfg_{name}')}: " in queued, (name, queued)
        assert f"{name}: " not in queued and f"{name.replace('_', ' ')}: " not in queued, (name, queued)
    # The picked row's full record: each setting on its own line, by the same names.
    assert df[ja("history_col_what")].iloc[0] == ja("action_run_queued")  # newest first
    at.session_state["history_table"] = {"selection": {"rows": [0]}}
    at.run()
    record = "\n".join(str(m.value) for m in at.markdown)
    for name in ("max_steps", "min_steps", "lr", "check_floor", "strength"):
        assert f"- {ja(f'cfg_{name}')}: " in record, (name, record)
        assert f"{name}:" not in record, (name, record)


def test_pages_without_a_project_point_to_the_model_page(home):
    for page in ("views/counterexamples.py", "views/tune.py", "views/review.py"):
        at = _app(page)
        assert "Open the demo or upload a model first" in _texts(at)
    at = _app("views/history.py")  # no project yet: only the accounts' rows (made, signed in) are there
    en = translator("en")
    assert set(at.dataframe[0].value[en("history_col_what")]) == {en("action_user_created"), en("action_signed_in")}
    assert "Nothing has happened yet." not in _texts(at)
