"""The store: WAL mode, append-only audit (enforced by triggers), labels, run claiming, recovery."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from core.app.store import DEFAULT_HOME, HOME_ENV, Store, home_dir


@pytest.fixture()
def store(tmp_path) -> Store:
    return Store(tmp_path / "home")


def test_home_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "x"))
    assert home_dir() == (tmp_path / "x").resolve()
    monkeypatch.delenv(HOME_ENV)
    assert home_dir() == DEFAULT_HOME


def test_wal_mode_and_artifacts_folder(store):
    con = sqlite3.connect(store.db_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    assert store.artifacts.is_dir()


def test_audit_rows_cannot_be_updated_or_deleted(store):
    store.audit("alice", "approved", None, run_id=1)
    con = sqlite3.connect(store.db_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE audit SET actor = 'mallory'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM audit")
    con.close()
    events = store.audit_events()
    assert [(e["actor"], e["action"], e["detail"]) for e in events] == [("alice", "approved", {"run_id": 1})]


def test_labels_survive_a_new_store_instance(store):
    pid = store.create_project("p", "alice")
    did = store.add_dataset(pid, "pool", "pool", store.home, "x", 3)
    assert store.set_label(pid, did, "a.png", "cat", "red", "alice") is None
    assert store.set_label(pid, did, "a.png", "dog", "red", "bob") == "cat"
    store.set_label(pid, did, "b.png", "cat", None, "alice")
    again = Store(store.home)
    assert [(r["item_path"], r["label"]) for r in again.labels(pid)] == [("a.png", "dog"), ("b.png", "cat")]
    assert again.remove_label(pid, did, "a.png") == "dog"
    assert [r["item_path"] for r in again.labels(pid)] == ["b.png"]


def _run(store, pid, mid):
    return store.create_run(pid, mid, "cpt", {"strength": 10.0}, "10", 1, store.home, "alice")


def test_runs_are_claimed_oldest_first_and_only_once_queued(store):
    pid = store.create_project("p", "alice")
    mid = store.add_model(pid, "base", "m", store.home, {}, {})
    first, second = _run(store, pid, mid), _run(store, pid, mid)
    assert store.claim_next_run(1) is None  # 'preparing' runs are invisible to workers
    store.queue_run(second, store.home)
    store.queue_run(first, store.home)
    assert store.claim_next_run(1)["id"] == first
    assert store.claim_next_run(2)["id"] == second
    assert store.claim_next_run(3) is None
    store.finish_run(first, "done")
    store.finish_run(first, "failed")  # a finished run cannot end twice
    assert store.run(first)["status"] == "done"


def test_running_runs_of_dead_workers_are_found(store):
    pid = store.create_project("p", "alice")
    mid = store.add_model(pid, "base", "m", store.home, {}, {})
    dead_run, live_run = _run(store, pid, mid), _run(store, pid, mid)
    for r in (dead_run, live_run):
        store.queue_run(r, store.home)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that existed and is now gone
    store.claim_next_run(proc.pid)

    store.heartbeat(os.getpid())
    store.claim_next_run(os.getpid())
    orphans = store.orphaned()
    assert [r["id"] for r in orphans["runs"]] == [dead_run]
    assert orphans["runs"][0]["worker_pid"] == proc.pid and orphans["tasks"] == []
    # Found, not changed: jobs.reap_dead_workers ends them with their cause (tests/test_jobs.py).
    assert store.run(dead_run)["status"] == "running"
    assert store.run(live_run)["status"] == "running"
    assert store.finish_run(dead_run, "failed", error="x") is True
    assert store.finish_run(dead_run, "failed", error="again") is False  # first writer wins
    assert store.run(dead_run)["error"] == "x"


def test_progress_rows_round_trip(store):
    pid = store.create_project("p", "alice")
    mid = store.add_model(pid, "base", "m", store.home, {}, {})
    rid = _run(store, pid, mid)
    store.add_progress(rid, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    assert [p["loss"] for p in store.progress(rid)] == [2.0, 1.5]


def test_a_store_from_an_earlier_version_is_migrated_without_losing_rows(tmp_path):
    """Stores made before reference images had a CHECK on datasets.role without 'reference', and no
    reference/request/queue columns: opening one upgrades it in place and keeps every row."""
    home = tmp_path / "old"
    home.mkdir()
    con = sqlite3.connect(home / "store.db")
    con.executescript(
        """
        CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL, is_demo INTEGER NOT NULL DEFAULT 0,
            base_model_id INTEGER, active_model_id INTEGER, eval_dataset_id INTEGER, pool_dataset_id INTEGER,
            created_at TEXT NOT NULL, created_by TEXT NOT NULL);
        CREATE TABLE datasets (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects(id),
            role TEXT NOT NULL CHECK (role IN ('eval', 'pool', 'uploads')), name TEXT NOT NULL, path TEXT NOT NULL,
            sha256 TEXT NOT NULL, n_items INTEGER NOT NULL, created_at TEXT NOT NULL);
        CREATE TABLE workers (pid INTEGER PRIMARY KEY, started_at REAL NOT NULL, heartbeat REAL NOT NULL);
        INSERT INTO projects (id, name, created_at, created_by) VALUES (1, 'old', 'then', 'ann');
        INSERT INTO datasets VALUES (7, 1, 'pool', 'pool.zip', '/x', 'abc', 3, 'then');
        """
    )
    con.close()
    store = Store(home)
    assert store.dataset(7)["role"] == "pool" and store.dataset(7)["n_items"] == 3
    did = store.add_dataset(1, "reference", "typical.zip", tmp_path, "def", 5)
    store.set_project(1, reference_dataset_id=did)
    assert store.project(1)["reference_dataset_id"] == did and store.dataset(did)["role"] == "reference"
    assert Store(home).dataset(7)["name"] == "pool.zip"  # opening again changes nothing


def test_named_groups_round_trip(store):
    pid = store.create_project("p", "alice")
    mid = store.add_model(pid, "base", "m", store.home, {}, {})
    old = store.add_dataset(pid, "eval", "e", store.home, "", 3)
    new = store.add_dataset(pid, "eval", "e + red corner", store.home, "", 3)
    gid = store.add_named_group(pid, old, new, mid, 4, "seven", "red corner", ["a.png", "b.png"], 2, 1, "bob")
    (row,) = store.named_groups(pid)
    assert row["id"] == gid and row["paths"] == ["a.png", "b.png"]
    assert (row["dataset_id"], row["new_dataset_id"], row["group_id"], row["name"]) == (old, new, 4, "red corner")
    assert (row["n_named"], row["n_kept"], row["created_by"]) == (2, 1, "bob") and row["created_at"]
    assert store.named_groups(pid + 1) == []
    Store(store.home)  # opening an existing store again keeps the table and its rows
    assert len(Store(store.home).named_groups(pid)) == 1
