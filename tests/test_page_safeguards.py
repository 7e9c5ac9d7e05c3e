"""The workbench's guards against one-click accidents, through ``streamlit.testing.v1.AppTest`` (real store,
real demo): the roles form, Roll back, Approve, and a label overwritten by another curator (docs/WORKBENCH.md)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core.app import accounts, decisions, pool, projects, uploads
from core.app.i18n import translator
from core.errors import UserError
from tests.run_fixtures import make_tradeoff_run
from tests.test_pages import _app, _texts
from tests.wb_helpers import ALICE, ANN, APP, BOB, MIA, ROOT_ADMIN, make_accounts, open_demo_here


@pytest.fixture()
def store(home):
    return projects.get_store(home)


def _roles(store, name: str) -> list[str]:
    return next(u["roles"] for u in accounts.users(store) if u["name"] == name)


def test_roles_form_shows_the_picked_persons_roles_and_saves_only_a_change(home, store):
    at = _app("views/admin.py", user="root")
    at.selectbox(key="roles_user").set_value("mia").run()
    assert sorted(at.multiselect(key="roles_new_mia").value) == ["approver", "curator"]
    # Picking another person shows *their* roles, not the previous person's: saving gives nothing away.
    at.selectbox(key="roles_user").set_value("alice").run()
    assert at.multiselect(key="roles_new_alice").value == ["curator"]
    assert "alice has: curator." in _texts(at)
    assert at.button(key="roles_save").disabled  # nothing to change yet
    at.multiselect(key="roles_new_alice").select("approver").run()
    assert "Saving changes alice from curator to curator, approver." in _texts(at)
    assert _roles(store, "alice") == ["curator"]  # not before the click
    at.button(key="roles_save").click().run()
    assert sorted(_roles(store, "alice")) == ["approver", "curator"]
    assert sorted(_roles(store, "mia")) == ["approver", "curator"]
    assert "Roles of alice changed." in _texts(at)
    at.selectbox(key="roles_user").set_value("bob").run()
    assert at.multiselect(key="roles_new_bob").value == ["curator"]
    assert not at.exception


def _approve(store, pid, rid, who=MIA) -> None:
    decisions.approve_run(store, rid, "ok", who, override=True, reason="test")


def test_roll_back_is_offered_only_for_the_repair_in_use_and_asks_for_confirmation_and_a_reason(home, store):
    pid = open_demo_here(store, ALICE)
    first = make_tradeoff_run(store, pid)
    second = make_tradeoff_run(store, pid)
    _approve(store, pid, first)
    at = _app("views/review.py")
    picker = next(s for s in at.selectbox if s.key.startswith("review_run_"))
    picker.set_value(second).run()
    # On another repair's review the button is off and says where to roll back from.
    assert at.button(key="rollback").disabled
    assert f"The repair in use now is #{first}: roll it back from its review" in _texts(at)
    picker = next(s for s in at.selectbox if s.key.startswith("review_run_"))
    picker.set_value(first).run()
    assert not at.button(key="rollback").disabled
    at.button(key="rollback").click().run()
    # One click opens the confirmation only: nothing changed yet, and it says what will change.
    assert store.project(pid)["active_model_id"] == store.run(first)["repaired_model_id"]
    box = next(w.value for w in at.warning if "Rolling back" in w.value)
    assert f"repaired model of repair #{first} out of use" in box
    at.button(key="rollback_go").click().run()  # no reason: refused
    assert any("write why the repair is rolled back" in e.value for e in at.error)
    assert store.project(pid)["active_model_id"] == store.run(first)["repaired_model_id"]
    at.button(key="rollback_cancel").click().run()  # "Keep it in use" closes the box, nothing changes
    assert "rollback_go" not in [b.key for b in at.button]
    assert store.project(pid)["active_model_id"] == store.run(first)["repaired_model_id"]
    at.button(key="rollback").click().run()
    at.text_area(key="rollback_reason").input("the meeting chose the original").run()
    at.button(key="rollback_go").click().run()
    assert store.project(pid)["active_model_id"] == store.project(pid)["base_model_id"]
    assert "The original model is active again." in _texts(at)
    back = [e for e in store.audit_events(pid) if e["action"] == "rolled_back"][-1]
    assert back["actor"] == "mia"
    assert back["detail"]["reason"] == "the meeting chose the original" and back["detail"]["run_id"] == first
    assert at.button(key="rollback").disabled  # the original is in use: nothing to roll back
    assert not at.exception


def _approve_button(at):
    return next(b for b in at.button if b.label == "Approve")


def test_approve_is_off_with_its_reason_for_a_demo_session_and_a_rejected_repair(home, store):
    pid = open_demo_here(store, ALICE)
    rid = make_tradeoff_run(store, pid)
    demo = AppTest.from_file(APP, default_timeout=120)
    make_accounts(store)
    demo.session_state["auth_token"] = accounts.demo_session(store)
    make_tradeoff_run(store, projects.open_demo(store, accounts.user_for(store, demo.session_state["auth_token"])))
    demo.run()
    demo.switch_page("views/review.py").run()
    assert not demo.exception, [e.value for e in demo.exception]
    assert _approve_button(demo).disabled and "Demo mode cannot approve or reject a repair" in _texts(demo)
    assert next(b for b in demo.button if b.label == "Reject").disabled
    assert demo.button(key="rollback").disabled
    # A curator without the approver role sees why too.
    bob = _app("views/review.py", user="bob")
    assert _approve_button(bob).disabled and "Approving or rejecting needs the approver role." in _texts(bob)
    # An approver may approve a repair nobody has decided on yet ...
    at = _app("views/review.py")
    assert not _approve_button(at).disabled
    # ... but not a rejected one: the button is off and says why, and the service refuses it too.
    decisions.reject_run(store, rid, "no", ANN)
    at.run()
    assert _approve_button(at).disabled
    assert f"Repair #{rid} was rejected, so it cannot be approved." in _texts(at)
    assert f"Repair #{rid} is already rejected." in _texts(at)
    with pytest.raises(UserError, match="was rejected"):
        decisions.approve_run(store, rid, "anyway", MIA, override=True, reason="x")
    assert store.run(rid)["decision"] == "rejected"


def test_approve_blocker_keeps_the_four_eyes_rule_unless_relaxed(home, store):
    pid = open_demo_here(store, ALICE)
    run = {**store.run(make_tradeoff_run(store, pid)), "created_by": "mia"}  # as if mia had started it
    assert decisions.approve_blocker(store, run, MIA) == "review_four_eyes_you"
    assert decisions.approve_blocker(store, run, ANN) is None
    accounts.set_four_eyes_relaxed(store, ROOT_ADMIN, True)
    assert decisions.approve_blocker(store, run, MIA) is None


def test_a_curator_is_told_when_another_overwrites_their_label(home, store, monkeypatch):
    monkeypatch.setenv("BIASREPAIR_LABEL_REFRESH", "0")
    pid = open_demo_here(store, ALICE)
    alice = _app("views/counterexamples.py", user="alice")
    bob = _app("views/counterexamples.py", user="bob")
    top = pool.candidates(store, pid)[0]
    alice.button(key="quick_1").click().run()
    assert "The project's counterexamples (1)" in _texts(alice)
    bob.button(key="quick_0").click().run()  # bob's page has not seen alice's label: he is asked
    bob.button(key="conflict_overwrite").click().run()
    assert [(c["key"], c["label"], c["by"]) for c in pool.chosen_set(store, pid)] == [(top["key"], "zero", "bob")]
    assert "changed your label" not in _texts(bob)  # bob knows what he did
    alice.run()  # alice's page redraws (the label poll reruns it)
    assert "bob changed your label on this image from “one” to “zero”" in _texts(alice)
    assert any(c.value == "— · bob" or c.value.endswith("· bob") for c in alice.caption)  # who labelled it
    alice.button(key="overwritten_ok").click().run()
    assert "changed your label" not in _texts(alice)
    alice.run()
    assert "changed your label" not in _texts(alice)  # told once
    # A removal is told too, naming who removed it.
    alice.button(key="quick_2").click().run()  # the label bar's image is now the next unlabelled one
    second = next(c for c in pool.chosen_set(store, pid) if c["label"] == "two")
    assert second["by"] == "alice" and second["key"] != top["key"]
    pool.remove_label(store, pid, second["key"], BOB)
    alice.run()
    assert "bob removed your label “two” from this image" in _texts(alice)
    assert not alice.exception


def _uploaders(at) -> dict[str, int]:
    """The page's file uploaders, by key, with the limit each states (MB per file)."""
    return {u.proto.id.rsplit("-", 1)[-1]: u.proto.max_upload_size_mb for u in at.get("file_uploader")}


def test_only_people_who_may_upload_see_uploaders_each_stating_the_workbenchs_own_limit(home, store):
    open_demo_here(store, ALICE)
    pages = {"views/model.py": ["up_bundle", "up_weights", "up_eval", "up_ref"], "views/counterexamples.py":
             ["up_pool", "up_single"]}  # fmt: skip
    kinds = {"up_bundle": "model", "up_weights": "model", "up_eval": "eval_zip", "up_ref": "images_zip",
             "up_pool": "images_zip", "up_single": "image"}  # fmt: skip
    for page, keys in pages.items():
        at = _app(page, lang="ja", user="alice")  # a curator
        assert _uploaders(at) == {k: uploads.upload_limit_mb(kinds[k]) for k in keys}, page
        # Streamlit's own line rounds 600 MB to "1GB" (in English): hidden, each limit stated in the page's words.
        styles = "".join(h.proto.body for h in at.get("html"))
        for k in keys:
            assert f".st-key-{k} [data-testid=stFileUploaderDropzoneInstructions]{{display:none}}" in styles
        assert "ZIP・1 ファイル 600 MB まで" in _texts(at) or page != "views/model.py"
        assert "ZIP・1 ファイル 512 MB まで" in _texts(at), page
        for lang in ("en", "ja"):  # an approver only: no uploader, one line saying who uploads
            at = _app(page, lang=lang, user="ann")
            assert _uploaders(at) == {} and not at.exception, page
            assert translator(lang)("upload_curators_only") in _texts(at), (page, lang)
    assert uploads.upload_limit_mb("model") == 600 < uploads.SERVER_UPLOAD_MB  # the model's cap, not the server's


def test_a_demo_visitor_sees_no_uploader_and_one_line_saying_why(home, store, monkeypatch):
    open_demo_here(store, ALICE)  # the demo, built: the visitor gets a copy of it
    monkeypatch.setenv("BIASREPAIR_HOME", str(store.home))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["lang"] = "ja"
    at.run()
    at.button(key="open_demo").click().run()
    for page in ("views/model.py", "views/counterexamples.py"):
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        assert _uploaders(at) == {}, page
        assert translator("ja")("upload_not_in_demo") in _texts(at), page
