"""The runs worker on a Ray cluster (``BIASREPAIR_BACKEND=ray``): each repair is a Ray task, several at once.

The runs worker process (:mod:`core.app.worker`) still claims runs from the store, but instead of
running one itself it submits each as a Ray task, up to :meth:`RayRuns.slots` at once (one per GPU
when the cluster has GPUs, each task asking for one; else one per CPU). The task runs the very same
``execute_run`` the local worker runs, against the same store: it writes the same progress rows
(the same live curves), honours the same cancel flag and records done / cancelled / failed itself.
The store's folder must therefore be reachable from every Ray node at the same path (on a cluster:
a shared file system; SQLite over NFS needs working locks).

What this module adds around the tasks:

* **cancel**: a run whose cancel flag has been set for :data:`CANCEL_GRACE_S` and whose task has not
  ended by itself is ``ray.cancel``-ed (a task still queued on the cluster is dropped at once), and its
  worker process killed when that has not ended it :data:`FORCE_AFTER_S` later (a task stuck in one
  long call); it is then marked cancelled here;
* **crash**: a task whose Ray worker died (out of memory, a node lost) or that raised past
  ``execute_run`` ends its run as failed with the cause, like the local worker's dead-worker reaping;
* **interrupted**: when this worker is stopped (SIGTERM, the server gone), its tasks are cancelled and
  their runs marked interrupted.

The runs stay owned by this worker's pid, so a dead worker process is reaped as before
(:func:`core.app.jobs.reap_dead_workers`); Ray ends the tasks of a driver that is gone.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from core.app.store import Store
from core.engine.backends import RayBackend
from core.engine.results import StopReason

CANCEL_GRACE_S = 2.0  # the task's own cancel check runs every 0.1 s; after this it is interrupted
FORCE_AFTER_S = 10.0  # an interrupted task still running after this (stuck in one long call) is killed
POLL_S = 0.3


@dataclass
class _InFlight:
    run: dict
    ref: object
    cancel_seen: float | None = None
    cancelled: bool = field(default=False)
    forced: bool = field(default=False)


def _remote_run(_, task) -> str:
    """In a Ray worker: run one repair against the shared store with the local worker's own function."""
    execute, home, run = task
    return execute(Store(home), run)


class RayRuns:
    """Submit claimed runs as Ray tasks and see each one to its end in the store."""

    def __init__(self, store: Store, pid: int, execute: Callable[[Store, dict], str]):
        self.store, self.pid, self.execute = store, pid, execute
        self.backend = RayBackend()
        gpus = self.backend.cluster_gpus()
        self.gpus_per_run = 1 if gpus >= 1 else 0
        self.slots = int(gpus) if gpus >= 1 else max(1, int(self.backend.cluster_cpus()))
        self.inflight: dict[int, _InFlight] = {}

    def serve(self, stop: threading.Event, idle_exit: float) -> None:
        """Claim, submit and watch runs until ``stop`` is set or nothing has happened for ``idle_exit`` s."""
        idle_since = time.monotonic()
        while not stop.is_set():
            while len(self.inflight) < self.slots:
                run = self.store.claim_next_run(self.pid)
                if run is None:
                    break
                print(f"run {run['id']}: submitted to Ray ({run['method']})", flush=True)
                task = (self.execute, str(self.store.home), run)
                ref = self.backend.submit(_remote_run, task, num_gpus=self.gpus_per_run)
                self.inflight[run["id"]] = _InFlight(run, ref)
            if self.inflight:
                idle_since = time.monotonic()
                self._watch()
            elif time.monotonic() - idle_since > idle_exit:
                break
            else:
                stop.wait(POLL_S)
        for item in self.inflight.values():
            self.backend.cancel(item.ref)
        for run_id, item in list(self.inflight.items()):
            self._wait_out(item)
            if self.store.finish_run(run_id, "interrupted", error="the server stopped while this run was in progress"):
                print(f"run {run_id}: interrupted", flush=True)
        self.inflight.clear()

    def _watch(self) -> None:
        refs = [item.ref for item in self.inflight.values()]
        ended = set(self.backend.finished(refs, timeout=POLL_S))
        now = time.monotonic()
        for run_id, item in list(self.inflight.items()):
            if item.ref in ended:
                del self.inflight[run_id]
                self._settle(run_id, item)
            elif item.cancel_seen is None and self.store.cancel_requested(run_id):
                item.cancel_seen = now
            elif item.cancel_seen is not None and not item.cancelled and now - item.cancel_seen >= CANCEL_GRACE_S:
                self.backend.cancel(item.ref)
                item.cancelled = True
            elif item.cancelled and not item.forced and now - item.cancel_seen >= CANCEL_GRACE_S + FORCE_AFTER_S:
                self.backend.cancel(item.ref, force=True)
                item.forced = True

    def _settle(self, run_id: int, item: _InFlight) -> None:
        """A task has ended: it recorded its own outcome, or it was cancelled, or it died."""
        try:
            status = self.backend.result(item.ref)
            print(f"run {run_id}: {status} on Ray", flush=True)
            return
        except Exception as exc:
            cause = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
            cause = cause[-1][:300] if cause else type(exc).__name__
        run = item.run
        if item.cancelled or self.store.cancel_requested(run_id):
            with self.store.transaction():  # the status and its audit row together
                if self.store.finish_run(run_id, "cancelled", stop_reason=StopReason.CANCELLED.value):
                    self.store.audit(run["created_by"], "run_cancelled", run["project_id"], run_id=run_id,
                                     method=run["method"], config=run["config"], stop_reason="cancelled")  # fmt: skip
            print(f"run {run_id}: cancelled on Ray", flush=True)
            return
        reason = f"the Ray task running it ended without a result: {cause}"
        with self.store.transaction():
            if self.store.finish_run(run_id, "failed", error=reason):
                self.store.audit(run["created_by"], "run_failed", run["project_id"], run_id=run_id, error=reason)
        print(f"run {run_id}: failed on Ray: {cause}", flush=True)

    def _wait_out(self, item: _InFlight, polls: int = 20) -> None:
        for _ in range(polls):
            if self.backend.finished([item.ref], timeout=POLL_S):
                return
