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
        except sqlite3.OperationalError:
            outcome.append("waited for the reaper")

    real_pid_alive = run_queue.pid_alive

    def reaper_between_its_reads(pid: int | None) -> bool:
        """The reaper has read the workers; a new worker registers and claims right now."""
        if not outcome:
            th = threading.Thread(target=new_worker_starts)
            th.start()
            th.join()
        return real_pid_alive(pid)

    monkeypatch.setattr(run_queue, "pid_alive", reaper_between_its_reads)
    assert store.orphaned(STALE_AFTER_S)[Queue.TASKS] == []
    assert outcome == ["waited for the reaper"]
    # Once the reaper is done, the newcomer gets in, and the next look sees it alive with its work.
    monkeypatch.undo()
    new_worker_starts()
    assert outcome[-1] == "claimed" and store.task(task)["worker_pid"] == newcomer
    assert store.orphaned(STALE_AFTER_S)[Queue.TASKS] == []
