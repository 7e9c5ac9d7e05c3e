"""The job queues, seen from the page process: start workers, submit work, wait for short tasks.

Two queues live in the store, each served by its own worker process (:mod:`core.app.worker`):

* **runs**: repairs. A page submits one (:mod:`core.app.runs`) and polls its progress rows.
* **tasks**: short model computations a page waits for: checking an uploaded model, opening the
  demo, evaluating a model, predicting the pool. :func:`compute` submits one and waits for its
  result, so that the Streamlit process never loads torch or runs a model itself.

Liveness: a worker writes a heartbeat every second. Work left 'running' by a worker whose process is
gone or whose heartbeat is stale is marked 'interrupted' (runs) or 'failed' (tasks), at the next
store start and whenever a new worker starts. If the process that started a worker (the Streamlit
server) dies, the worker stops too, so a server restart never leaves a ghost run behind. An idle
worker exits after a while; the next submission starts a new one.

This module imports neither torch nor any module that does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from core.app.store import QUEUES, REPO_ROOT, Store
from core.errors import UserError

HEARTBEAT_S = 1.0
STALE_AFTER_S = 10.0
IDLE_EXIT_S = 60.0
TASK_POLL_S = 0.05
TASK_TIMEOUT_S = 1800.0

_spawned: dict[tuple[str, str], subprocess.Popen] = {}
_spawn_lock = threading.Lock()


def recover_interrupted(store: Store) -> list[int]:
    """Mark work that a dead worker left running as ended; returns the interrupted run ids."""
    ids = store.mark_interrupted(STALE_AFTER_S)
    for run_id in ids:
        run = store.run(run_id)
        store.audit(run["created_by"], "run_interrupted", run["project_id"], run_id=run_id)
    return ids


def ensure_worker(store: Store, queue: str = "runs") -> None:
    """Start a worker process for this store's ``queue`` unless one is alive (or was just started by us)."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}")
    key = (str(store.home), queue)
    with _spawn_lock:
        proc = _spawned.get(key)
        if proc is not None and proc.poll() is None:
            return
        if store.live_workers(STALE_AFTER_S, queue=queue):
            return
        log = open(store.home / f"worker-{queue}.log", "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        _spawned[key] = subprocess.Popen(
            [sys.executable, "-m", "core.app.worker", "--home", key[0], "--queue", queue, "--parent", str(os.getpid())],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()


def stop_spawned_workers(timeout: float = 10.0) -> None:
    """Stop the workers this process started (tests use this to clean up)."""
    with _spawn_lock:
        for proc in _spawned.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in _spawned.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        _spawned.clear()


def compute(
    store: Store,
    kind: str,
    payload: dict,
    actor: str,
    project_id: int | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> dict:
    """Run one task in the task worker and wait for its result.

    A :class:`UserError` raised by the task (a bad upload, say) is raised here again with the same
    message. ``on_wait(seconds)`` is called while waiting, for a spinner or a progress line.
    """
    task_id = store.submit_task(kind, payload, actor, project_id)
    ensure_worker(store, "tasks")
    start = time.monotonic()
    last_check = start
    while True:
        task = store.task(task_id)
        if task["status"] == "done":
            return task["result"] or {}
        if task["status"] == "failed":
            why = task["result"] or {}
            raise UserError(task["error"] or f"{kind} failed", key=why.get("error_key"), **why.get("error_params", {}))
        now = time.monotonic()
        if on_wait is not None:
            on_wait(now - start)
        if now - last_check > 2 * STALE_AFTER_S:
            # A worker that died is noticed here; a new one is started for the queued task.
            recover_interrupted(store)
            ensure_worker(store, "tasks")
            last_check = now
        if now - start > TASK_TIMEOUT_S:
            store.finish_task(task_id, "failed", error="timed out")
            raise UserError(f"{kind} took longer than {TASK_TIMEOUT_S:.0f} s and was given up")
        time.sleep(TASK_POLL_S)
