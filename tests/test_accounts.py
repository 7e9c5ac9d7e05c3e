"""Accounts, roles, sessions, demo mode and the four-eyes rule (core/app/accounts.py, decisions.py).

The core functions are called as each role; the pages through AppTest with a real sign-in; the
store file, the audit rows and the logs are searched for every password used.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.app import accounts, decisions, naming, pool, projects, runs, uploads
from core.app.accounts import Forbidden, User
from core.app.i18n import error_text, translator
from core.app.worker import execute_run
from core.errors import UserError
from tests.wb_helpers import (
    ALICE,
    ANN,
    APP,
    BOB,
    FAST_RUN,
    MIA,
    PASSWORDS,
    ROOT_ADMIN,
    make_accounts,
    open_demo_here,
    pool_truth,
    sign_in_app,
    zip_folder_bytes,
)


@pytest.fixture()
def store(home):
    s = projects.get_store(home)
    make_accounts(s)
    return s


def _forbidden_rows(store) -> list[dict]:
    return [e for e in store.audit_events() if e["action"] == "forbidden"]


def _run(store, pid, starter: User, labellers: dict[User, int]) -> int:
    """A finished repair started by ``starter`` on counterexamples labelled by ``labellers``
    (how many each, in the gallery's order)."""
    truth = pool_truth(store, pid)
    top = [c for c in pool.candidates(store, pid) if c["label"] is None]
    for who, n in labellers.items():
        for c in top[:n]:
            pool.set_label(store, pid, c["key"], truth[c["path"]], who)
        top = top[n:]
    rid = runs.submit_run(store, pid, "cpt", dict(FAST_RUN), starter, start_worker=False)
    assert execute_run(store, store.claim_next_run(os.getpid())) == "done"
    return rid


# ---- accounts and sessions ------------------------------------------------------------------------
def test_first_account_is_the_admin_and_only_an_admin_makes_more(home):
    store = projects.get_store(home)
    assert not accounts.has_users(store)
    with pytest.raises(UserError, match="first account must be an admin"):
        accounts.create_user(store, None, "ann", "long-enough-1", ["approver"])
    root = accounts.create_user(store, None, "root", "long-enough-1", ["admin"])
    assert root.can("approver") and root.can("curator")  # an admin may do everything
    with pytest.raises(Forbidden):
        accounts.create_user(store, None, "eve", "long-enough-2", ["admin"])  # not the first any more
    with pytest.raises(Forbidden, match="needs the admin role"):
        accounts.create_user(store, ALICE, "eve", "long-enough-2", ["admin"])
    with pytest.raises(UserError, match="at least 8"):
        accounts.create_user(store, root, "eve", "short", ["curator"])
    with pytest.raises(UserError, match="letters, digits"):  # a name is shown in markdown: no link syntax
        accounts.create_user(store, root, "[x](javascript:alert(1))", "long-enough-2", ["curator"])
    with pytest.raises(UserError, match="kept for the demo"):
        accounts.create_user(store, root, "Demo", "long-enough-2", ["curator"])
    accounts.create_user(store, root, "eve", "long-enough-2", ["curator"])
    with pytest.raises(UserError, match="already an account"):
        accounts.create_user(store, root, "eve", "long-enough-3", ["curator"])
    with pytest.raises(UserError, match="at least one admin"):
        accounts.set_roles(store, root, "root", ["approver"])
    accounts.set_roles(store, root, "eve", ["curator", "approver"])
    assert {u["name"]: u["roles"] for u in accounts.users(store)} == {
        "eve": ["curator", "approver"],
        "root": ["admin"],
    }
    refused = _forbidden_rows(store)
    assert [(e["actor"], e["detail"]["attempted"]) for e in refused] == [
        ("anonymous", "manage_users"),
        ("alice", "manage_users"),
    ]


def test_sign_in_sessions_expire_and_end(store, monkeypatch):
    with pytest.raises(UserError, match="wrong name or password"):
        accounts.sign_in(store, "alice", "not-her-password")
    with pytest.raises(UserError, match="wrong name or password"):
        accounts.sign_in(store, "nobody", "whatever-it-is")
    token = accounts.sign_in(store, "alice", PASSWORDS["alice"])
    user = accounts.user_for(store, token)
    assert user == "alice" and user.roles == {"curator"} and not user.demo
    # The store keeps only the token's hash.
    assert store.session_row(token) is None and store.session_row(hashlib.sha256(token.encode()).hexdigest())
    # A role change takes effect in the open session.
    accounts.set_roles(store, ROOT_ADMIN, "alice", ["curator", "approver"])
    assert accounts.user_for(store, token).can("approver")
    # Expiry: the session lasts $BIASREPAIR_SESSION_HOURS.
    monkeypatch.setenv(accounts.SESSION_HOURS_ENV, "0.5")
    short = accounts.sign_in(store, "bob", PASSWORDS["bob"])
    now = accounts.time.time()
    monkeypatch.setattr(accounts.time, "time", lambda: now + 0.49 * 3600)
    assert accounts.user_for(store, short) == "bob"
    monkeypatch.setattr(accounts.time, "time", lambda: now + 0.51 * 3600)
    assert accounts.user_for(store, short) is None
    monkeypatch.undo()
    accounts.sign_out(store, token)
    assert accounts.user_for(store, token) is None
    # A password reset ends the account's sessions.
    again = accounts.sign_in(store, "mia", PASSWORDS["mia"])
    accounts.reset_password(store, ROOT_ADMIN, "mia", "a-new-Secret-55")
    assert accounts.user_for(store, again) is None
    with pytest.raises(UserError):
        accounts.sign_in(store, "mia", PASSWORDS["mia"])
    assert accounts.user_for(store, accounts.sign_in(store, "mia", "a-new-Secret-55")) == "mia"
    actions = [e["action"] for e in store.audit_events()]
    assert actions.count("sign_in_failed") == 3 and "signed_out" in actions and "password_reset" in actions


def test_repeated_wrong_passwords_lock_the_name_for_a_while(store, monkeypatch):
    """Five failures within 15 minutes lock a name: even the right password is refused, unchecked, until the
    window passes or an admin sets a new password. Unknown names lock alike; a success clears the count."""
    now = accounts.time.time()
    monkeypatch.setattr(accounts.time, "time", lambda: now)
    # A success before the fifth failure starts the count again.
    for _ in range(4):
        with pytest.raises(UserError, match="wrong name or password"):
            accounts.sign_in(store, "bob", "not-his-password")
    accounts.sign_in(store, "bob", PASSWORDS["bob"])
    for _ in range(4):
        with pytest.raises(UserError, match="wrong name or password"):
            accounts.sign_in(store, "bob", "not-his-password")
    assert accounts.locked_minutes(store, "bob") == 0
    with pytest.raises(UserError, match="wrong name or password"):
        accounts.sign_in(store, "bob", "not-his-password")
    with pytest.raises(UserError) as locked:
        accounts.sign_in(store, "bob", PASSWORDS["bob"])
    assert locked.value.key == "sign_in_locked" and locked.value.params["minutes"] == 15
    assert "15 分後" in error_text(locked.value, "ja")
    assert accounts.sign_in(store, "mia", PASSWORDS["mia"])  # other names are not affected
    # 14 minutes later: still locked (1 minute left); after the window: the right password works.
    monkeypatch.setattr(accounts.time, "time", lambda: now + 14 * 60)
    with pytest.raises(UserError, match="try again in 1 minute"):
        accounts.sign_in(store, "bob", PASSWORDS["bob"])
    monkeypatch.setattr(accounts.time, "time", lambda: now + 15 * 60 + 1)
    assert accounts.user_for(store, accounts.sign_in(store, "bob", PASSWORDS["bob"])) == "bob"
    # An unknown name locks exactly like a real one.
    for _ in range(5):
        with pytest.raises(UserError, match="wrong name or password"):
            accounts.sign_in(store, "nobody-here", "guess")
    with pytest.raises(UserError, match="too many failed sign-ins as nobody-here"):
        accounts.sign_in(store, "nobody-here", "guess")
    # An admin's new password lifts a lock at once; the settings come from the environment.
    monkeypatch.setenv(accounts.SIGNIN_ATTEMPTS_ENV, "2")
    monkeypatch.setenv(accounts.SIGNIN_LOCK_MINUTES_ENV, "60")
    for _ in range(2):
        with pytest.raises(UserError, match="wrong name or password"):
            accounts.sign_in(store, "mia", "wrong-again")
    with pytest.raises(UserError, match="try again in 60 minute"):
        accounts.sign_in(store, "mia", PASSWORDS["mia"])
    accounts.reset_password(store, ROOT_ADMIN, "mia", "a-new-Secret-77")
    assert accounts.user_for(store, accounts.sign_in(store, "mia", "a-new-Secret-77")) == "mia"
    actions = [e["action"] for e in store.audit_events()]
    assert actions.count("sign_in_locked") == 4 and actions.count("sign_in_failed") == 4 + 5 + 5 + 2


def test_admin_from_the_environment(home, monkeypatch):
    store = projects.get_store(home)
    monkeypatch.setenv(accounts.ADMIN_USER_ENV, "boss")
    monkeypatch.setenv(accounts.ADMIN_PASSWORD_ENV, "boss-Secret-2024")
    assert accounts.ensure_admin_from_env(store)
    assert not accounts.ensure_admin_from_env(store)  # once only
    assert accounts.user_for(store, accounts.sign_in(store, "boss", "boss-Secret-2024")).can("admin")


# ---- roles in the core functions --------------------------------------------------------------------
def test_every_state_change_checks_the_role(store, demo_dir):
    pid = open_demo_here(store, ALICE)
    key = pool.candidates(store, pid)[0]["key"]
    curator_only = [
        lambda u: pool.set_label(store, pid, key, "seven", u),
        lambda u: pool.remove_label(store, pid, key, u),
        lambda u: runs.submit_run(store, pid, "cpt", dict(FAST_RUN), u, start_worker=False),
        lambda u: naming.name_group(store, pid, 0, "red corner", u),
        lambda u: uploads.upload_model_zip(store, zip_folder_bytes(demo_dir / "model"), "m.zip", u),
        lambda u: uploads.upload_single_images(store, pid, [("a.png", b"x")], "", u),
    ]
    for call in curator_only:
        with pytest.raises(Forbidden, match="needs the curator role"):
            call(ANN)
        with pytest.raises(Forbidden):
            call("alice")  # a typed name is nobody
    n = len(_forbidden_rows(store))
    assert n == 2 * len(curator_only)
    pool.set_label(store, pid, key, "seven", ALICE)
    rid = runs.submit_run(store, pid, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    assert execute_run(store, store.claim_next_run(os.getpid())) == "done"
    approver_only = [
        lambda u: decisions.approve_run(store, rid, "ok", u),
        lambda u: decisions.reject_run(store, rid, "no", u),
        lambda u: decisions.export_bytes(store, rid, u),
        lambda u: decisions.record_export(store, rid, b"zip", u),
        lambda u: decisions.rollback(store, pid, u, "no reason needed to be refused"),
    ]
    for call in approver_only:
        with pytest.raises(Forbidden, match="needs the approver role"):
            call(BOB)
    assert store.run(rid)["decision"] is None
    rows = _forbidden_rows(store)[n:]
    assert [(e["actor"], e["detail"]["needs"]) for e in rows] == [("bob", "approver")] * len(approver_only)
    for call in (
        lambda u: accounts.set_roles(store, u, "bob", ["approver"]),
        lambda u: accounts.reset_password(store, u, "bob", "long-enough-9"),
        lambda u: accounts.set_four_eyes_relaxed(store, u, True),
    ):
        with pytest.raises(Forbidden, match="needs the admin role"):
            call(MIA)
    # The admin holds every role.
    decisions.approve_run(store, rid, "admin approves", ROOT_ADMIN)
    assert store.run(rid)["decision"] == "approved"


# ---- the four-eyes rule -------------------------------------------------------------------------------
def test_four_eyes_starter_and_main_labeller_cannot_approve_another_approver_can(store):
    pid = open_demo_here(store, MIA)
    # Approvers too, to show the rule (not the role) stops them; the store's roles are what count.
    for name in ("alice", "bob"):
        accounts.set_roles(store, ROOT_ADMIN, name, ["curator", "approver"])
    alice, bob = User("alice", ["curator", "approver"]), User("bob", ["curator", "approver"])
    rid = _run(store, pid, starter=alice, labellers={bob: 5, alice: 3})
    assert decisions.responsible(store, store.run(rid)) == {"started": ["alice"], "labelled": ["bob"]}
    for who, what in ((alice, "started"), (bob, "labelled most")):
        with pytest.raises(UserError, match="four-eyes") as exc:
            decisions.approve_run(store, rid, "mine", who)
        assert exc.value.key == "four_eyes"
        row = _forbidden_rows(store)[-1]
        assert row["actor"] == who and row["detail"]["four_eyes"].startswith(what)
    assert store.run(rid)["decision"] is None
    decisions.approve_run(store, rid, "checked by a second person", ANN)
    approved = next(e for e in store.audit_events(pid) if e["action"] == "approved")
    assert approved["actor"] == "ann" and approved["detail"]["four_eyes"] == "kept"
    assert approved["detail"]["started_by"] == ["alice"] and approved["detail"]["labelled_by"] == ["bob"]
    data = decisions.export_bytes(store, rid, ANN)
    decisions.record_export(store, rid, data, ANN)
    exported = store.audit_events(pid)[-1]
    assert exported["action"] == "exported" and exported["actor"] == "ann"
    assert exported["detail"]["approved_by"] == "ann" and exported["detail"]["approved_at"] == approved["ts"]


def test_relaxed_four_eyes_is_audited_on_the_setting_and_the_approval(store):
    pid = open_demo_here(store, MIA)
    rid = _run(store, pid, starter=MIA, labellers={MIA: 4})
    with pytest.raises(UserError, match="four-eyes"):
        decisions.approve_run(store, rid, "pilot", MIA)
    accounts.set_four_eyes_relaxed(store, ROOT_ADMIN, True)
    assert accounts.four_eyes_relaxed(store)
    decisions.approve_run(store, rid, "single-person pilot", MIA)
    approved = decisions.approval(store, rid)
    assert approved["actor"] == "mia" and approved["detail"]["four_eyes"] == "relaxed"
    decisions.record_export(store, rid, decisions.export_bytes(store, rid, MIA), MIA)
    assert store.audit_events(pid)[-1]["detail"]["four_eyes"] == "relaxed"
    accounts.set_four_eyes_relaxed(store, ROOT_ADMIN, False)
    actions = [(e["actor"], e["action"]) for e in store.audit_events() if e["action"].startswith("four_eyes")]
    assert actions == [("root", "four_eyes_relaxed"), ("root", "four_eyes_restored")]
    # Relaxation never marks an approval that did not need it.
    rid2 = _run(store, pid, starter=ALICE, labellers={ALICE: 2})
    decisions.approve_run(store, rid2, "second person", ANN)
    assert decisions.approval(store, rid2)["detail"]["four_eyes"] == "kept"


# ---- demo mode ----------------------------------------------------------------------------------------
def test_demo_session_labels_and_repairs_the_demo_only_and_never_approves(store, demo_dir):
    demo_user = accounts.user_for(store, accounts.demo_session(store))
    assert demo_user == "demo" and demo_user.demo
    pid = projects.open_demo(store, demo_user)
    rid = _run(store, pid, starter=demo_user, labellers={demo_user: 4})
    assert store.run(rid)["created_by"] == "demo"
    for call in (
        lambda: decisions.approve_run(store, rid, "demo", demo_user),
        lambda: decisions.export_bytes(store, rid, demo_user),
        lambda: uploads.upload_model_zip(store, zip_folder_bytes(demo_dir / "model"), "m.zip", demo_user),
    ):
        with pytest.raises(Forbidden) as exc:
            call()
        assert exc.value.key in ("forbidden_demo", "forbidden")
    other = uploads.upload_model_zip(store, zip_folder_bytes(demo_dir / "model"), "own.zip", ALICE)
    with pytest.raises(Forbidden, match="demo session"):
        runs.submit_run(store, other, "cpt", dict(FAST_RUN), demo_user, start_worker=False)
    refused = [e for e in _forbidden_rows(store) if e["actor"] == "demo"]
    assert [e["detail"]["attempted"] for e in refused] == ["approve", "export", "upload", "start_run"]
    assert store.run(rid)["decision"] is None


# ---- pages ---------------------------------------------------------------------------------------------
def _texts(at) -> str:
    parts = []
    for kind in ("title", "markdown", "caption", "info", "warning", "error", "success", "subheader"):
        parts += [str(e.value) for e in at.get(kind)]
    return "\n".join(parts)


def _review(store, user: str | None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["lang"] = "en"
    if user:
        sign_in_app(at, store, user)
    at.run()
    at.switch_page("views/review.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _approve_button(at):
    return next(b for b in at.button if b.label == "Approve")


def _click_approve(at) -> None:
    _approve_button(at).click().run()


def test_first_run_form_makes_the_admin(home):
    store = projects.get_store(home)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert "No account exists yet" in _texts(at) and not at.get("plotly_chart")
    at.text_input(key="first_name").input("boss")
    at.text_input(key="first_password").input("boss-Secret-2024")
    at.text_input(key="first_password_again").input("boss-Secret-2024x")
    at.button[0].click().run()
    assert "the two passwords differ" in _texts(at) and not accounts.has_users(store)
    at.text_input(key="first_password_again").input("boss-Secret-2024")
    at.button[0].click().run()
    assert "Signed in as **boss**" in _texts(at) and "No account exists yet" not in _texts(at)
    assert accounts.users(store)[0]["roles"] == ["curator", "approver", "admin"]


def _submit_sign_in(at: AppTest, name: str, password: str) -> None:
    at.text_input(key="signin_name").input(name)
    at.text_input(key="signin_password").input(password)
    at.button[0].click().run()


def test_every_page_needs_sign_in_and_a_wrong_password_is_refused(store):
    open_demo_here(store, ALICE)
    review_title = translator("en")("review_title")
    at = _review(store, None)
    assert [t.value for t in at.title] == ["Sign in"]
    _submit_sign_in(at, "mia", "wrong-password")
    assert "wrong name or password" in _texts(at)
    _submit_sign_in(at, "mia", PASSWORDS["mia"])
    assert "Signed in as **mia**" in _texts(at)
    assert [t.value for t in at.title] == [review_title]  # the page that was asked for
    at.button(key="sign_out").click().run()
    assert [t.value for t in at.title] == ["Sign in"] and "Signed in as" not in _texts(at)
    # Five wrong passwords lock the name: the page then refuses even the right one, and says for how long.
    for _ in range(5):
        _submit_sign_in(at, "mia", "wrong-password")
        assert "wrong name or password" in _texts(at)
    _submit_sign_in(at, "mia", PASSWORDS["mia"])
    assert "too many failed sign-ins as mia" in _texts(at) and "try again in 15 minute" in _texts(at)
    assert "Signed in as" not in _texts(at)


def test_curator_cannot_approve_on_the_page(store):
    pid = open_demo_here(store, ALICE)
    rid = _run(store, pid, starter=BOB, labellers={BOB: 4})
    at = _review(store, "alice")
    # The page offers no click it would refuse: Approve is off, with the reason; the service refuses too.
    assert _approve_button(at).disabled and "Approving or rejecting needs the approver role." in _texts(at)
    with pytest.raises(Forbidden, match="needs the approver role"):
        decisions.approve_run(store, rid, "", ALICE)
    assert store.run(rid)["decision"] is None
    assert _forbidden_rows(store)[-1]["actor"] == "alice"


def test_starter_cannot_approve_own_run_on_the_page_another_approver_can(store):
    pid = open_demo_here(store, MIA)
    rid = _run(store, pid, starter=MIA, labellers={ALICE: 4})
    at = _review(store, "mia")
    assert "You started this repair or labelled most of its counterexamples" in _texts(at)  # said before she tries
    assert _approve_button(at).disabled  # and Approve is off for her; the service refuses her too
    with pytest.raises(UserError, match="mia started repair .*another approver must approve it"):
        decisions.approve_run(store, rid, "", MIA)
    assert store.run(rid)["decision"] is None
    at = _review(store, "ann")
    assert "You approve as ann." in _texts(at)
    _click_approve(at)
    assert store.run(rid)["decision"] == "approved" and "Repair #1 approved" in _texts(at)
    assert decisions.approval(store, rid)["actor"] == "ann"
    at.run()
    assert any(c.startswith("Approved by ann at ") for c in (str(c.value) for c in at.caption))


def test_demo_mode_is_marked_and_cannot_approve_or_export(store):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.button(key="open_demo").click().run()
    assert not at.exception
    assert "Demo mode" in _texts(at) and "On images marked" in _texts(at)
    pid = store.projects()[0]["id"]
    demo_user = accounts.user_for(store, at.session_state["auth_token"])
    rid = _run(store, pid, starter=demo_user, labellers={demo_user: 4})
    at.switch_page("views/review.py")
    at.run()
    assert _approve_button(at).disabled and "Demo mode cannot approve or reject a repair" in _texts(at)
    with pytest.raises(Forbidden, match="the demo session cannot approve"):
        decisions.approve_run(store, rid, "", demo_user)
    assert store.run(rid)["decision"] is None
    decisions.approve_run(store, rid, "approved by a real approver", ANN)
    at.run()
    assert at.get_by_key("export").proto.disabled  # Export stays off for the demo session
    assert "Demo mode cannot export a model" in _texts(at)
    assert [e["detail"]["attempted"] for e in _forbidden_rows(store) if e["actor"] == "demo"] == ["approve"]


def _admin_page(store) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    sign_in_app(at, store, "root")
    at.run()
    at.switch_page("views/admin.py")
    at.run()
    assert not at.exception
    return at


def test_admin_page_adds_an_account_and_relaxes_four_eyes(store):
    at = _admin_page(store)
    at.text_input(key="new_name").input("zoe")
    at.text_input(key="new_password").input("zoe-Secret-3141")
    at.multiselect(key="new_roles").set_value(["approver"])
    next(b for b in at.button if b.label == "Add").click().run()
    assert "Account zoe added." in _texts(at)
    assert accounts.user_for(store, accounts.sign_in(store, "zoe", "zoe-Secret-3141")).roles == {"approver"}
    at.button(key="four_eyes_toggle").click().run()
    assert accounts.four_eyes_relaxed(store) and "now relaxed" in _texts(at)
    events = [(e["actor"], e["action"]) for e in store.audit_events()]
    assert ("root", "user_created") in events and ("root", "four_eyes_relaxed") in events


def test_a_disabled_account_cannot_sign_in_and_its_sessions_end(store):
    """Disabling ends the account's sessions at once and refuses its sign-in (said only with the right password);
    what it did stays; an admin cannot disable themselves or the last admin; enabling restores it."""
    token = accounts.sign_in(store, "bob", PASSWORDS["bob"])
    with pytest.raises(Forbidden):
        accounts.set_disabled(store, ALICE, "bob", True)  # a curator may not
    accounts.set_disabled(store, ROOT_ADMIN, "bob", True)
    assert accounts.user_for(store, token) is None
    assert next(u for u in accounts.users(store) if u["name"] == "bob")["disabled"]
    with pytest.raises(UserError, match="wrong name or password"):
        accounts.sign_in(store, "bob", "not-his-password")  # a guesser learns nothing new
    with pytest.raises(UserError, match="the account bob is disabled") as refused:
        accounts.sign_in(store, "bob", PASSWORDS["bob"])
    assert "無効" in error_text(refused.value, "ja")
    with pytest.raises(UserError, match="your own account"):
        accounts.set_disabled(store, ROOT_ADMIN, "root", True)
    admins = [u["name"] for u in accounts.users(store) if "admin" in u["roles"] and u["name"] != "root"]
    for name in admins:
        accounts.set_disabled(store, ROOT_ADMIN, name, True)
    other = accounts.create_user(store, ROOT_ADMIN, "second-admin", "second-Secret-1", ["admin"])
    accounts.set_disabled(store, other, "root", True)  # two admins: one may go
    with pytest.raises(UserError, match="keep at least one admin"):
        accounts.set_roles(store, other, "second-admin", ["curator"])
    accounts.set_disabled(store, other, "root", False)
    accounts.set_disabled(store, ROOT_ADMIN, "bob", False)
    assert accounts.user_for(store, accounts.sign_in(store, "bob", PASSWORDS["bob"])) == "bob"
    actions = [(e["actor"], e["action"], e["detail"].get("user")) for e in store.audit_events()]
    assert ("root", "account_disabled", "bob") in actions and ("root", "account_enabled", "bob") in actions
    assert ("bob", "sign_in_refused_disabled", None) in actions


def test_admin_page_disables_and_enables_an_account(store):
    token = accounts.sign_in(store, "mia", PASSWORDS["mia"])
    at = _admin_page(store)
    at.selectbox(key="disable_user").set_value("mia").run()
    assert at.button(key="disable_toggle").label == "Disable"
    at.button(key="disable_toggle").click().run()
    assert "Account mia disabled; its open sessions ended." in _texts(at)
    assert accounts.user_for(store, token) is None
    table = at.dataframe[0].value
    assert table.loc[table["Name"] == "mia", "Status"].item() == "disabled"
    at.selectbox(key="disable_user").set_value("root").run()
    at.button(key="disable_toggle").click().run()
    assert "you cannot disable your own account" in _texts(at)
    at.selectbox(key="disable_user").set_value("mia").run()
    assert at.button(key="disable_toggle").label == "Enable"
    at.button(key="disable_toggle").click().run()
    assert "Account mia enabled again." in _texts(at)
    assert accounts.user_for(store, accounts.sign_in(store, "mia", PASSWORDS["mia"])) == "mia"


# ---- passwords never written ---------------------------------------------------------------------------
def test_passwords_never_reach_the_store_the_audit_or_the_logs(store, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UserError):
        accounts.sign_in(store, "alice", PASSWORDS["bob"])  # someone else's password, typed wrongly
    accounts.sign_in(store, "mia", PASSWORDS["mia"])
    accounts.reset_password(store, ROOT_ADMIN, "bob", "bob-Reset-77aa")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.text_input(key="signin_name").input("ann")
    at.text_input(key="signin_password").input(PASSWORDS["ann"])
    at.button[0].click().run()
    assert "Signed in as **ann**" in _texts(at)
    hashes = [store.user_row(r["name"])["password_hash"] for r in accounts.users(store)]
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    secrets = [*PASSWORDS.values(), "bob-Reset-77aa"]
    files = [f for f in Path(store.home).rglob("*") if f.is_file() and f.suffix in ("", ".db", ".db-wal", ".log")]
    files += [f for f in Path(store.home).glob("store.db*")]
    audit = repr(store.audit_events())
    logs = caplog.text
    for pw in secrets:
        for f in files:
            assert pw.encode() not in f.read_bytes(), (pw, f)
        assert pw not in audit and pw not in logs


# ---- concurrent labels -------------------------------------------------------------------------------
def test_label_versions_refuse_a_stale_save_and_say_who(store):
    from core.app.store import LabelConflict

    pid = open_demo_here(store, ALICE)
    key = pool.candidates(store, pid)[0]["key"]
    count = store.label_change_count(pid)
    pool.set_label(store, pid, key, "one", ALICE, expected_version=0)
    assert store.label_change_count(pid) > count
    seen = next(c for c in pool.candidates(store, pid) if c["key"] == key)["version"]
    assert seen == 1
    with pytest.raises(LabelConflict) as exc:  # bob's page still shows the image unlabelled
        pool.set_label(store, pid, key, "zero", BOB, expected_version=0)
    assert (exc.value.current, exc.value.changed_by, exc.value.version) == ("one", "alice", 1)
    assert pool.chosen_set(store, pid)[0]["label"] == "one"
    pool.set_label(store, pid, key, "zero", BOB, expected_version=exc.value.version)  # overwrite, knowingly
    assert pool.chosen_set(store, pid)[0]["label"] == "zero"
    with pytest.raises(LabelConflict, match="bob labelled it zero"):
        pool.remove_label(store, pid, key, ALICE, expected_version=1)
    pool.remove_label(store, pid, key, ALICE, expected_version=2)
    with pytest.raises(LabelConflict, match="alice removed its label"):  # removal is a change too
        pool.set_label(store, pid, key, "two", BOB, expected_version=2)
    changed = [(e["actor"], e["action"]) for e in store.audit_events(pid) if e["action"].startswith("label")]
    assert changed == [("alice", "label_added"), ("bob", "label_changed"), ("alice", "label_removed")]


def test_two_curators_on_the_page_get_the_conflict_prompt(store, monkeypatch):
    monkeypatch.setenv("BIASREPAIR_LABEL_REFRESH", "0")
    pid = open_demo_here(store, ALICE)
    pages = {}
    for name in ("alice", "bob"):
        at = AppTest.from_file(APP, default_timeout=120)
        sign_in_app(at, store, name)
        at.run()
        at.switch_page("views/counterexamples.py")
        at.run()
        pages[name] = at
    top = pool.candidates(store, pid)[0]
    pages["alice"].button(key="quick_1").click().run()
    assert pool.chosen_set(store, pid)[0]["label"] == "one"
    pages["bob"].button(key="quick_0").click().run()  # bob's page has not seen alice's label
    text = _texts(pages["bob"])
    assert "alice labelled this image “one”" in text and "You chose “zero”" in text
    assert [(c["key"], c["label"]) for c in pool.chosen_set(store, pid)] == [(top["key"], "one")]
    pages["bob"].button(key="conflict_overwrite").click().run()
    assert [(c["key"], c["label"], c["by"]) for c in pool.chosen_set(store, pid)] == [(top["key"], "zero", "bob")]
    assert "labelled this image" not in _texts(pages["bob"])  # the question is gone
    # Alice's page is stale now: her relabel asks too, and "keep theirs" writes nothing.
    pages["alice"].selectbox(key=f"relabel_{top['key']}_one").set_value("two").run()
    assert "bob labelled this image “zero”" in _texts(pages["alice"])
    pages["alice"].button(key="conflict_keep").click().run()
    assert pool.chosen_set(store, pid)[0]["label"] == "zero"
    assert "The project's counterexamples (1)" in _texts(pages["alice"])
