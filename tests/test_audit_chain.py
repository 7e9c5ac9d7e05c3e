"""The audit log's hash chain (core/app/store/audit_log.py, docs/WORKBENCH.md): changes made around
the append-only triggers with plain SQL are found, and the Admin page raises the alarm."""

from __future__ import annotations

import contextlib
import sqlite3

from streamlit.testing.v1 import AppTest

from core.app import history, projects
from core.app.i18n import translator
from core.app.store import Store
from core.app.store.audit_log import ChainBreak
from tests.wb_helpers import APP, make_accounts, sign_in_app


def _store_with_rows(tmp_path, n: int = 5) -> Store:
    store = Store(tmp_path / "home")
    for i in range(n):
        store.audit("alice", "label_added", None, image=f"{i}.png", label="seven")
    assert store.audit_chain_break() is None
    return store


def _sql(store: Store, *statements: str) -> None:
    """What anyone with the database file can do, bypassing the workbench."""
    with contextlib.closing(sqlite3.connect(store.db_path)) as con:
        for sql in statements:
            con.execute(sql)
        con.commit()


def test_an_untouched_log_holds_and_each_row_is_chained_to_the_one_before(tmp_path):
    store = _store_with_rows(tmp_path)
    store.audit("root", "approved", 1, run_id=3)
    assert store.audit_chain_break() is None
    assert history.chain_alarm(store, translator("en")) is None


def test_a_forged_back_dated_row_is_found(tmp_path):
    store = _store_with_rows(tmp_path)
    _sql(
        store,
        "INSERT INTO audit (ts, actor, project_id, action, detail_json)"
        " VALUES ('2020-01-01T00:00:00Z', 'mia', 1, 'approved', '{\"run_id\": 1}')",
    )
    assert store.audit_chain_break() == ChainBreak("row", 6)
    store.audit("alice", "label_added", None)  # what comes after does not mend it
    assert store.audit_chain_break() == ChainBreak("row", 6)


def test_a_row_changed_after_dropping_the_trigger_is_found(tmp_path):
    store = _store_with_rows(tmp_path)
    _sql(store, "DROP TRIGGER audit_no_update", "UPDATE audit SET actor = 'mallory' WHERE id = 3")
    assert store.audit_chain_break() == ChainBreak("row", 3)


def test_removed_rows_are_found_in_the_middle_and_at_the_end(tmp_path):
    store = _store_with_rows(tmp_path)
    _sql(store, "DROP TRIGGER audit_no_delete", "DELETE FROM audit WHERE id = 5")
    assert store.audit_chain_break() == ChainBreak("tail", 4)
    _sql(store, "DELETE FROM audit WHERE id = 2")
    assert store.audit_chain_break() == ChainBreak("row", 3)


def test_a_dropped_renamed_or_emptied_table_is_found(tmp_path):
    store = _store_with_rows(tmp_path)
    _sql(store, "ALTER TABLE audit RENAME TO old_audit")
    assert store.audit_chain_break() == ChainBreak("table")
    _sql(store, "DROP TABLE old_audit")
    assert store.audit_chain_break() == ChainBreak("table")
    _sql(store, "CREATE TABLE audit (id INTEGER PRIMARY KEY, ts TEXT, actor TEXT, project_id INTEGER,"
                " action TEXT, detail_json TEXT, chain TEXT)")  # fmt: skip
    assert store.audit_chain_break() == ChainBreak("tail", None)  # an empty log where there were rows
    alarm = history.chain_alarm(store, translator("ja"))
    assert alarm and "監査ログ" in alarm


def test_the_admin_page_raises_the_alarm(home):
    store = projects.get_store(home)
    make_accounts(store)
    at = AppTest.from_file(APP, default_timeout=120)
    sign_in_app(at, store, "root")
    at.run()
    at.switch_page("views/admin.py")
    at.run()
    assert not at.exception and not [e for e in at.error if "audit log" in str(e.value)]
    last = store.audit_events()[-1]["id"]
    _sql(store, "DROP TRIGGER audit_no_update", f"UPDATE audit SET action = 'nothing' WHERE id = {last - 1}")
    at.run()
    assert [str(e.value) for e in at.error if "audit log" in str(e.value)] == [
        history.chain_alarm(store, translator("en"))
    ]
    assert f"row {last - 1} does not match" in at.error[0].value
