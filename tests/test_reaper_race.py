"""The reaper's view of the workers and of the work they run is one snapshot (core/app/jobs.py).

A worker registers, then claims; the reaper must never see the claim without the registration, or
it takes a healthy worker for dead and fails (and may kill) its work.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from core.app.jobs import STALE_AFTER_S
from core.app.store import Queue, Store, base, run_queue


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
