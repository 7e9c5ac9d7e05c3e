"""The store under concurrent use (core/app/store/base.py, core/app/jobs.py).

The reaper's view of the workers and of the work they run is one snapshot: a worker registers, then
claims, and the reaper must never see the claim without the registration, or it takes a healthy
worker for dead and fails (and may kill) its work. Reads never wait behind a writer. A full disk is
a plain refusal.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from core.app.i18n import error_text
from core.app.jobs import HEARTBEAT_S, STALE_AFTER_S
from core.app.store import Queue, Store, base, run_queue
from core.errors import UserError


def test_a_worker_registering_and_claiming_meanwhile_is_never_taken_for_dead(tmp_path, monkeypatch):
    store = Store(tmp_path / "home")
    store.heartbeat(os.getppid(), Queue.RUNS)  # a live worker already there: the reaper checks its pid
    task = store.submit_task("evaluate", {}, "alice")
    monkeypatch.setattr(base, "BUSY_TIMEOUT_S", 0)  # a writer that cannot get in says so at once
    newcomer = os.getpid()  # a live process: what a new worker is
    outcome: list[str] = []

    def new_worker_starts() -> None:
        try:
            store.heartbeat(newcomer, Queue.TASKS)  # registers first, then claims
            store.claim_next_task(newcomer)
            outcome.append("claimed")
        except sqlite3.OperationalError:  # "database is locked": the reaper held the write lock
            outcome.append("had to wait")

    real_pid_alive = run_queue.pid_alive

    def reaper_between_its_reads(pid: int | None) -> bool:
        """The reaper has read the workers; a new worker registers and claims right now."""
        if not outcome:
            th = threading.Thread(target=new_worker_starts)
            th.start()
            th.join()
        return real_pid_alive(pid)

    monkeypatch.setattr(run_queue, "pid_alive", reaper_between_its_reads)
    assert store.orphaned(STALE_AFTER_S)[Queue.TASKS] == []  # the reaper's snapshot predates the newcomer
    assert outcome == ["claimed"]  # and did not hold it up
    monkeypatch.undo()
    assert store.task(task)["worker_pid"] == newcomer
    assert store.orphaned(STALE_AFTER_S)[Queue.TASKS] == []  # the next look sees it alive with its work


def test_reads_do_not_wait_behind_a_writer(tmp_path, monkeypatch):
    """A page's reads (labels, runs, the audit log) take no write lock: a long write elsewhere does not
    hold them up (docs/WORKBENCH.md)."""
    store = Store(tmp_path / "home")
    store.audit("alice", "label_added", None)
    monkeypatch.setattr(base, "BUSY_TIMEOUT_S", 0)  # a reader that had to wait would fail at once
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with store.transaction():
            store.audit("bob", "label_added", None)  # holds the write lock, not yet committed
            held.set()
            release.wait()

    th = threading.Thread(target=writer)
    th.start()
    held.wait()
    try:
        seen = [e["actor"] for e in store.audit_events()]  # the snapshot before the writer commits
        assert store.orphaned(STALE_AFTER_S) == {Queue.RUNS: [], Queue.TASKS: []}
    finally:
        release.set()
        th.join()
    assert seen == ["alice"]
    assert [e["actor"] for e in store.audit_events()] == ["alice", "bob"]


def test_a_full_disk_is_a_plain_refusal_and_nothing_is_half_written(tmp_path, monkeypatch):
    store = Store(tmp_path / "home")
    store.audit("alice", "label_added", None)
    real_open = base.open_connection

    def no_room(db_path):
        """SQLite's own "database or disk is full" (SQLITE_FULL): the file may not grow."""
        con = real_open(db_path)
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        con.execute(f"PRAGMA max_page_count = {pages}")
        return con

    monkeypatch.setattr(base, "open_connection", no_room)
    with pytest.raises(UserError) as refused:
        store.audit("bob", "label_added", None, note="x" * 200_000)
    assert refused.value.key == "disk_full" and "is full, so nothing was saved" in str(refused.value)
    assert "ディスクがいっぱい" in error_text(refused.value, "ja")
    assert [e["actor"] for e in store.audit_events()] == ["alice"]
    assert store.audit_chain_break() is None
    monkeypatch.undo()
    store.audit("bob", "label_added", None, note="x" * 200_000)
    assert store.audit_chain_break() is None


def test_of_workers_starting_at_once_one_takes_the_queue(tmp_path):
    store = Store(tmp_path / "home")
    idle = [
        subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        for _ in range(8)
    ]
    try:
        barrier = threading.Barrier(8)
        took: list[int] = []

        def start(pid: int) -> None:
            barrier.wait()
            if store.register_worker(pid, Queue.TASKS, STALE_AFTER_S):
                took.append(pid)

        threads = [threading.Thread(target=start, args=(p.pid,)) for p in idle]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(took) == 1 and store.live_workers(STALE_AFTER_S, queue=Queue.TASKS) == took
        assert store.register_worker(idle[0].pid, Queue.RUNS, STALE_AFTER_S)  # the other queue is free
        # A real worker process started now finds the lease taken (its holder beating as a worker does)
        # and leaves without claiming anything.
        task = store.submit_task("evaluate", {}, "alice")
        over = threading.Event()

        def beat() -> None:
            while not over.wait(HEARTBEAT_S):
                store.heartbeat(took[0], Queue.TASKS)

        beating = threading.Thread(target=beat)
        beating.start()
        try:
            worker = subprocess.run(
                [sys.executable, "-m", "core.app.worker", "--home", str(store.home), "--queue", "tasks"],
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            over.set()
            beating.join()
        assert "another worker serves the tasks queue" in worker.stdout
        assert store.task(task)["status"] == "queued"
        assert [pid for pid, w in store.workers().items() if w["queue"] == Queue.TASKS] == took
    finally:
        for p in idle:
            p.stdin.close()
            p.wait()
