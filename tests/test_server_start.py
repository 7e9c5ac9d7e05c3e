"""What a server does when it starts serving a store (core/app/server_start.py): the audit log's hash chain is
verified, a break is logged and shown to admins on every page; the workers' supervisor starts."""

from __future__ import annotations

import contextlib
import logging
import sqlite3

import pytest
from streamlit.testing.v1 import AppTest

from core.app import history, jobs, projects, server_start
from core.app.i18n import translator
from core.app.store import Store
from core.app.store.audit_log import ChainBreak
from tests.wb_helpers import APP, make_accounts, sign_in_app


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "home")
    for i in range(4):
        s.audit("alice", "label_added", None, image=f"{i}.png", label="seven")
    yield s
    jobs.stop_spawned_workers()  # started() starts the supervisor


def _sql(store: Store, *statements: str) -> None:
    """What anyone with the database file can do, bypassing the workbench."""
    with contextlib.closing(sqlite3.connect(store.db_path)) as con:
        for sql in statements:
            con.execute(sql)
        con.commit()


def test_an_intact_chain_raises_no_alarm_at_start(store, caplog):
    with caplog.at_level(logging.ERROR):
        server_start.started(store)
    assert server_start.chain_break_at_start(store) is None
    assert server_start.start_alarm(store, translator("en")) is None
    assert not [r for r in caplog.records if "AUDIT LOG" in r.getMessage()]


def test_a_changed_row_is_found_and_logged_at_start(store, caplog):
    _sql(store, "DROP TRIGGER audit_no_update", "UPDATE audit SET actor = 'mallory' WHERE id = 2")
    with caplog.at_level(logging.ERROR):
        server_start.started(store)
    assert server_start.chain_break_at_start(store) == ChainBreak("row", 2)
    (logged,) = [r for r in caplog.records if "AUDIT LOG BROKEN" in r.getMessage()]
    assert logged.levelno == logging.ERROR and "row 2 does not match" in logged.getMessage()
    alarm = server_start.start_alarm(store, translator("ja"))
    assert alarm.startswith("ワークベンチの起動時に見つかりました") and "行 2" in alarm
    server_start.started(store)  # a later page: checked once per server, logged once
    assert len([r for r in caplog.records if "AUDIT LOG BROKEN" in r.getMessage()]) == 1


def test_a_missing_table_is_found_at_start(store, caplog):
    _sql(store, "ALTER TABLE audit RENAME TO old_audit")
    with caplog.at_level(logging.ERROR):
        server_start.started(store)
    assert server_start.chain_break_at_start(store) == ChainBreak("table")
    assert any("table is missing" in r.getMessage() for r in caplog.records)


def test_admins_see_the_alarm_on_every_page_and_others_do_not(home):
    store = projects.get_store(home)
    make_accounts(store)
    for i in range(3):
        store.audit("alice", "label_added", None, image=f"{i}.png", label="seven")
    last = store.audit_events()[-1]["id"]
    _sql(store, "DROP TRIGGER audit_no_delete", f"DELETE FROM audit WHERE id = {last}")
    expected = server_start.start_alarm  # known once the app has run its start
    admin = sign_in_app(AppTest.from_file(APP, default_timeout=120), store, "root")
    admin.run()
    alarm = expected(store, translator("en"))
    assert alarm and alarm.startswith("Found when the workbench started: The audit log was changed")
    assert alarm in [str(e.value) for e in admin.error]
    admin.switch_page("views/tune.py")
    admin.run()
    assert not admin.exception and alarm in [str(e.value) for e in admin.error]
    curator = sign_in_app(AppTest.from_file(APP, default_timeout=120), store, "alice")
    curator.run()
    assert not curator.exception and alarm not in [str(e.value) for e in curator.error]
    assert history.break_text(server_start.chain_break_at_start(store), translator("en")) in alarm
