"""Authority read at the moment of action (docs/WORKBENCH.md, "Accounts and roles").

A tab keeps the :class:`User` it was given when its page ran; an admin may disable or demote that
account, or its session may end, before the tab's button is pressed. Every state-changing core
function and every download reads the session and account again and refuses a stale one, leaving
nothing changed and an audit row saying so. The first-run form decides "first account" inside one
write transaction, so forms sent at once make one admin.
"""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

from core.app import accounts, decisions, pool, projects, report, runs
from core.app.accounts import Forbidden
from core.app.i18n import translator
from core.app.store import Store
from core.app.worker import execute_run
from tests.wb_helpers import ALICE, FAST_RUN, PASSWORDS, ROOT_ADMIN, make_accounts, open_demo_here, pool_truth


@pytest.fixture()
def store(home):
    s = projects.get_store(home)
    make_accounts(s)
    return s


def _tab(store, name: str) -> accounts.User:
    """The person an open tab acts as: built once from a real sign-in, then kept."""
    return accounts.user_for(store, accounts.sign_in(store, name, PASSWORDS[name]))


def _finished_run(store, pid: int) -> int:
    truth = pool_truth(store, pid)
    for c in [c for c in pool.candidates(store, pid) if c["label"] is None][:4]:
        pool.set_label(store, pid, c["key"], truth[c["path"]], ALICE)
    rid = runs.submit_run(store, pid, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    assert execute_run(store, store.claim_next_run(os.getpid())) == "done"
    return rid


def _actions_after(store, action: str) -> list[str]:
    events = store.audit_events()
    last = max(i for i, e in enumerate(events) if e["action"] == action)
    return [e["action"] for e in events[last + 1 :]]


def test_a_tab_open_before_its_account_changed_is_refused_at_the_moment_of_action(store, monkeypatch):
    pid = open_demo_here(store, ALICE)
    rid = _finished_run(store, pid)
    mia, alice, bob, root = (_tab(store, n) for n in ("mia", "alice", "bob", "root"))

    # Demoted: the tab still carries the approver role, the store does not.
    accounts.set_roles(store, ROOT_ADMIN, "mia", ["curator"])
    assert mia.can("approver")
    for call in (
        lambda: decisions.approve_run(store, rid, "ok", mia),
        lambda: decisions.export_bytes(store, rid, mia),
        lambda: decisions.record_export(store, rid, b"zip", mia),
    ):
        with pytest.raises(Forbidden, match="needs the approver role"):
            call()
    assert store.run(rid)["decision"] is None
    # Given the role back, the same tab approves: the store's roles are what count, both ways.
    accounts.set_roles(store, ROOT_ADMIN, "mia", ["curator", "approver"])
    decisions.approve_run(store, rid, "ok", mia)
    assert store.run(rid)["decision"] == "approved"

    # Disabled: nothing more from that tab, downloads included.
    accounts.set_disabled(store, ROOT_ADMIN, "mia", True)
    t = translator("en")
    for call in (
        lambda: decisions.export_bytes(store, rid, mia),
        lambda: decisions.record_export(store, rid, b"zip", mia),
        lambda: report.report_html(store, rid, mia, t, "en", None),
        lambda: decisions.record_report(store, rid, b"html", mia),
        lambda: decisions.reject_run(store, rid, "no", mia),
        lambda: decisions.rollback(store, pid, mia, "tab test"),
    ):
        with pytest.raises(Forbidden, match="no longer signed in") as refused:
            call()
        assert refused.value.key == "session_ended"
    assert store.run(rid)["decision"] == "approved"
    assert set(_actions_after(store, "account_disabled")) == {"forbidden"}
    assert all(e["detail"].get("session_ended") for e in store.audit_events()[-6:])

    # A disabled curator saves no label and neither starts nor cancels a repair.
    queued = runs.submit_run(store, pid, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    key = next(c["key"] for c in pool.candidates(store, pid) if c["label"] is None)
    accounts.set_disabled(store, ROOT_ADMIN, "alice", True)
    for call in (
        lambda: pool.set_label(store, pid, key, "seven", alice),
        lambda: runs.submit_run(store, pid, "cpt", dict(FAST_RUN), alice, start_worker=False),
        lambda: runs.cancel_run(store, queued, alice),
    ):
        with pytest.raises(Forbidden, match="no longer signed in"):
            call()
    assert next(c for c in pool.candidates(store, pid) if c["key"] == key)["label"] is None
    assert store.run(queued)["status"] == "queued"
    assert sorted(r["id"] for r in store.runs(pid)) == [rid, queued]

    # An expired session: the account is fine, the tab is not.
    now = accounts.time.time()
    monkeypatch.setattr(accounts.time, "time", lambda: now + 3600 * accounts.session_hours() + 1)
    with pytest.raises(Forbidden, match="no longer signed in"):
        runs.cancel_run(store, queued, bob)
    monkeypatch.undo()
    assert store.run(queued)["status"] == "queued"
    runs.cancel_run(store, queued, _tab(store, "bob"))  # a fresh sign-in may
    assert store.run(queued)["status"] == "cancelled"

    # An admin demoted by another admin changes no one's roles any more.
    accounts.create_user(store, ROOT_ADMIN, "boss", "boss-Secret-2024", ["admin"])
    accounts.set_roles(store, accounts.User("boss", ["admin"]), "root", ["approver"])
    with pytest.raises(Forbidden, match="needs the admin role"):
        accounts.set_roles(store, root, "bob", ["approver"])
    assert store.user_row("bob")["roles"] == "curator"


def test_first_run_forms_sent_at_once_make_one_admin(home):
    store = projects.get_store(home)
    n = 4
    barrier = threading.Barrier(n)
    outcomes: list[object] = [None] * n

    def first_run(i: int) -> None:
        barrier.wait()  # all four forms leave together
        try:
            outcomes[i] = accounts.create_user(store, None, f"admin{i}", "long-enough-1", ["admin"])
        except Exception as exc:  # the outcome is what the test looks at
            outcomes[i] = exc

    threads = [threading.Thread(target=first_run, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    made = [o for o in outcomes if isinstance(o, accounts.User)]
    assert len(made) == 1, outcomes
    assert all(isinstance(o, Forbidden) for o in outcomes if o not in made)
    users = [n for n in (f"admin{i}" for i in range(4)) if store.user_row(n)]
    assert users == [str(made[0])]
    assert [e["detail"]["first"] for e in store.audit_events() if e["action"] == "user_created"] == [True]


# ---- sign-in under a burst ------------------------------------------------------------------------
class _CountingHasher:
    """The real argon2 hasher, counting the password checks it makes and how many ran at once."""

    def __init__(self, inner):
        self.inner, self.lock = inner, threading.Lock()
        self.checks = self.running = self.most = 0

    def verify(self, password_hash: str, password: str) -> bool:
        with self.lock:
            self.checks += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return self.inner.verify(password_hash, password)
        finally:
            with self.lock:
                self.running -= 1

    def hash(self, password: str) -> str:
        return self.inner.hash(password)

    def check_needs_rehash(self, password_hash: str) -> bool:
        return self.inner.check_needs_rehash(password_hash)


def _at_once(n: int, call) -> list[object]:
    """``call(i)`` on ``n`` threads released together; what each returned or raised."""
    barrier = threading.Barrier(n)
    outcomes: list[object] = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = call(i)
        except Exception as exc:  # the outcome is what the test looks at
            outcomes[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return outcomes


def test_a_burst_of_wrong_passwords_gets_no_more_checks_than_the_lock_allows(store, monkeypatch):
    hasher = _CountingHasher(accounts._hasher)
    monkeypatch.setattr(accounts, "_hasher", hasher)
    outcomes = _at_once(24, lambda i: accounts.sign_in(store, "bob", f"not-his-password-{i}"))
    keys = sorted(getattr(o, "key", None) for o in outcomes)
    assert hasher.checks == 5 and keys == ["sign_in_failed"] * 5 + ["sign_in_locked"] * 19
    actions = [e["action"] for e in store.audit_events()]
    assert actions.count("sign_in_failed") == 5 and actions.count("sign_in_locked") == 19
    with pytest.raises(accounts.UserError, match="too many failed sign-ins"):
        accounts.sign_in(store, "bob", PASSWORDS["bob"])  # locked, even with the right password
    assert hasher.checks == 5


def test_password_checks_run_a_few_at_a_time(store, monkeypatch):
    """Unknown names are each checked against a real hash (so they take as long as known ones), but no
    more than PASSWORD_CHECKS_AT_ONCE at once: a burst cannot take 64 MiB of argon2 memory per request."""
    hasher = _CountingHasher(accounts._hasher)
    monkeypatch.setattr(accounts, "_hasher", hasher)
    accounts._nobody_hash()
    outcomes = _at_once(16, lambda i: accounts.sign_in(store, f"stranger{i}", "whatever-it-is"))
    assert [getattr(o, "key", None) for o in outcomes] == ["sign_in_failed"] * 16
    assert hasher.checks == 16 and 1 <= hasher.most <= accounts.PASSWORD_CHECKS_AT_ONCE
    # A right password among a burst still gets in.
    outcomes = _at_once(4, lambda i: accounts.sign_in(store, "mia", PASSWORDS["mia"] if i == 0 else "nope-nope"))
    assert accounts.user_for(store, outcomes[0]) == "mia"


def _sign_in_attempts(home: str, barrier, n: int) -> list[str]:
    """In a process of its own: ``n`` wrong passwords for bob; the outcome keys."""
    store, keys = Store(home), []
    barrier.wait()
    for i in range(n):
        try:
            accounts.sign_in(store, "bob", f"not-his-password-{i}")
        except accounts.UserError as exc:
            keys.append(exc.key)
    return keys


def test_processes_guessing_at_once_get_no_more_checks_than_the_lock_allows(store):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Manager().Barrier(8)
    with ctx.Pool(8) as processes:
        results = [processes.apply_async(_sign_in_attempts, (str(store.home), barrier, 4)) for _ in range(8)]
        keys = [k for r in results for k in r.get()]
    assert sorted(keys) == ["sign_in_failed"] * 5 + ["sign_in_locked"] * 27
    assert [e["action"] for e in store.audit_events()].count("sign_in_failed") == 5
