"""The job queues, seen from the page process: start workers, submit work, wait for short tasks.

Two queues live in the store, each served by its own worker process (:mod:`core.app.worker`):

* **runs**: repairs. A page submits one (:mod:`core.app.runs`) and polls its progress rows.
* **tasks**: short model computations a page waits for: checking an uploaded model, opening the
  demo, evaluating a model, predicting the pool. :func:`compute` submits one and waits for its
  result, so that the Streamlit process never loads torch or runs a model itself.

Liveness: a worker writes a heartbeat every second. A worker that dies without ending its work
(``kill -9``, the out-of-memory killer, a crash) is found by :func:`reap_dead_workers`: its process
is gone, or its heartbeat is older than :data:`STALE_AFTER_S`. The page polling a run calls it (see
:func:`core.app.runs.run_progress`), as do a store's first use and every new worker, so a dead worker
is noticed at the next poll, about a second later. Its run (or task) is marked 'failed' with the
cause (the exit signal or status when this process started the worker, and the last lines of the
worker's log), and a new worker is started for the runs still queued. A worker that stops in order
(SIGTERM, or the server that started it is gone) ends its run as 'interrupted' itself. An idle
worker exits after a while; the next submission starts a new one.

The server process also runs a supervisor (:func:`start_supervisor`): a thread that does the same
every :data:`SUPERVISE_S` seconds whether or not any page is open, so a queue whose worker died, or a
run queued just as the idle worker left, moves on with nobody watching.

This module imports neither torch nor any module that does.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.app.store import REPO_ROOT, Queue, RunStatus, Store, TaskStatus, pid_alive
from core.errors import UserError

HEARTBEAT_S = 1.0
STALE_AFTER_S = 10.0
PREPARE_STALE_S = 600.0  # a run 'preparing' this long was left by a page process that stopped
IDLE_EXIT_S = 60.0
TASK_POLL_S = 0.05
TASK_TIMEOUT_S = 1800.0
SUPERVISE_S = 2.0

_spawned: dict[tuple[str, str], subprocess.Popen] = {}
_spawn_lock = threading.Lock()
_supervisors: dict[str, threading.Event] = {}  # store folder -> the event that stops its supervisor
_log = logging.getLogger(__name__)


LOG_TAIL_LINES = 5


def worker_log(store: Store, queue: str) -> Path:
    """The file a queue's workers write their output to."""
    return store.home / f"worker-{queue}.log"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 8192) -> list[str]:
    """The last non-empty lines of a log file (each cut to 200 characters); [] when there is none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - max_bytes))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line.strip()[:200] for line in text.splitlines() if line.strip()][-lines:]


def _own_worker(store: Store, pid: int | None) -> subprocess.Popen | None:
    """The process handle of worker ``pid`` when this process started it."""
    return next((p for (home, _), p in _spawned.items() if home == str(store.home) and p.pid == pid), None)


def _exit_cause(store: Store, pid: int | None, workers: dict[int, dict]) -> str:
    """Why worker ``pid`` is gone, as far as this process can tell."""
    proc = _own_worker(store, pid)
    code = proc.poll() if proc is not None else None
    if proc is not None and code is None and not pid_alive(pid):
        # it died between the two checks (a zombie now): collect its exit status
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        cause = f"killed by signal {-code} ({name})"
        if -code == signal.SIGKILL:
            cause += "; kill -9, or the system ran out of memory"
    elif code is not None:
        cause = f"exited with status {code}"
    elif pid is not None and pid_alive(pid):
        row = workers.get(pid)
        age = time.time() - row["heartbeat"] if row else None
        cause = f"no heartbeat for {age:.0f} s" if age is not None else "no heartbeat"
    else:
        cause = "its process is gone"
    return cause


def reap_dead_workers(store: Store, restart: bool = True) -> list[int]:
    """End the work of every worker that died without ending it, and keep the queue moving.

    Each run (task) left 'running' by a dead worker becomes 'failed' with the cause and the last
    lines of the worker's log, and is audited as ``run_failed``; a worker this process started that
    is alive but silent is stopped first, so it cannot come back to a run that has been ended.
    With ``restart``, a worker is started for the runs still queued (a worker calling this itself
    passes False). A run still 'preparing' after ``PREPARE_STALE_S`` was left by a page process that
    stopped while preparing it (across a restart, say): it is failed too. Returns the ids of the runs
    ended here. Cheap when every worker is alive: four small queries."""
    ended = []
    for run in store.stale_preparing(PREPARE_STALE_S):  # its page process stopped mid-preparation
        reason = "the workbench stopped while this run was being prepared; start it again"
        if store.finish_run(run["id"], RunStatus.FAILED, error=reason):
            store.audit(run["created_by"], "run_failed", run["project_id"], run_id=run["id"], error=reason)
            ended.append(run["id"])
    # Work this very process claimed is not a dead worker's (a process that runs a repair in-process, as the
    # tests do beside an in-process server whose supervisor reaps, is alive by definition).
    here = os.getpid()
    orphans = {q: [r for r in rows if r["worker_pid"] != here] for q, rows in store.orphaned(STALE_AFTER_S).items()}
    if not orphans[Queue.RUNS] and not orphans[Queue.TASKS]:
        return ended
    workers = store.workers()
    pids = {r["worker_pid"] for rows in orphans.values() for r in rows}
    causes = {pid: _exit_cause(store, pid, workers) for pid in pids}
    for pid in pids:
        proc = _own_worker(store, pid)
        if proc is not None and proc.poll() is None:  # alive but its heartbeat stopped: hung
            proc.kill()
            proc.wait()
    for queue in Queue:  # the runs queue is the runs table, the tasks queue the tasks table
        tail = log_tail(worker_log(store, queue))
        for row in orphans[queue]:
            pid = row["worker_pid"]
            cause = causes[pid]
            where = (
                f"last lines of {worker_log(store, queue).name}: " + " | ".join(tail) if tail else "its log is empty"
            )
            reason = f"the worker process (pid {pid}) died while this was in progress: {cause}; {where}"
            if queue is Queue.TASKS:
                store.finish_task(row["id"], TaskStatus.FAILED, error=reason)
                continue
            if store.finish_run(row["id"], RunStatus.FAILED, error=reason):
                run = store.run(row["id"])
                store.audit(
                    run["created_by"], "run_failed", run["project_id"], run_id=row["id"], error=reason, log_tail=tail
                )
                ended.append(row["id"])
    for pid in pids:
        if pid is not None and not pid_alive(pid):
            store.remove_worker(pid)
    if restart and store.has_queued_runs():
        ensure_worker(store, Queue.RUNS)
    return ended


def ensure_worker(store: Store, queue: str = Queue.RUNS, stopped: threading.Event | None = None) -> None:
    """Start a worker process for this store's ``queue`` unless one is alive (or was just started by us).
    A supervisor passes its ``stopped`` event: once it is set (under the same lock), nothing is started."""
    if queue not in tuple(Queue):
        raise ValueError(f"unknown queue {queue!r}")
    key = (str(store.home), str(queue))
    with _spawn_lock:
        if stopped is not None and stopped.is_set():
            return
        proc = _spawned.get(key)
        if proc is not None and proc.poll() is None:
            return
        if store.live_workers(STALE_AFTER_S, queue=queue):
            return
        log = open(worker_log(store, queue), "ab")  # noqa: SIM115 - handed to the child
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


def supervise_once(store: Store, stopped: threading.Event | None = None) -> None:
    """One look at the store's queues: end the work of dead workers, and start a worker for each queue
    that has work waiting and no live worker (none once ``stopped`` is set)."""
    reap_dead_workers(store, restart=False)
    if store.has_queued_runs():
        ensure_worker(store, Queue.RUNS, stopped)
    if store.has_queued_tasks():
        ensure_worker(store, Queue.TASKS, stopped)


def _supervise(store: Store, stop: threading.Event) -> None:
    while not stop.wait(SUPERVISE_S):
        if not store.db_path.exists():  # the store folder was removed (a test's): nothing left to serve
            break
        try:
            supervise_once(store, stop)
        except Exception:  # a locked database for a moment must not end the supervision
            _log.exception("the workers' supervisor of %s", store.home)
    with _spawn_lock:
        if _supervisors.get(str(store.home)) is stop:
            del _supervisors[str(store.home)]


def start_supervisor(store: Store) -> bool:
    """Supervise ``store``'s workers from this process (the server) in a daemon thread: every
    :data:`SUPERVISE_S` seconds :func:`supervise_once`, with or without a page open. Once per process
    and store; returns whether this call started it."""
    key = str(store.home)
    with _spawn_lock:
        if key in _supervisors:
            return False
        stop = _supervisors[key] = threading.Event()
    threading.Thread(target=_supervise, args=(store, stop), name="workbench-supervisor", daemon=True).start()
    return True


def stop_spawned_workers(timeout: float = 10.0) -> None:
    """Stop the supervisors and the workers this process started (tests use this to clean up)."""
    with _spawn_lock:
        for stop in _supervisors.values():
            stop.set()
        _supervisors.clear()
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
    ensure_worker(store, Queue.TASKS)
    start = time.monotonic()
    last_check = start
    while True:
        task = store.task(task_id)
        if task["status"] == TaskStatus.DONE:
            return task["result"] or {}
        if task["status"] == TaskStatus.FAILED:
            why = task["result"] or {}
            raise UserError(task["error"] or f"{kind} failed", key=why.get("error_key"), **why.get("error_params", {}))
        now = time.monotonic()
        if on_wait is not None:
            on_wait(now - start)
        if now - last_check > HEARTBEAT_S:
            # A worker that died is noticed here (its task fails with the cause); a new one is
            # started for a task still queued.
            reap_dead_workers(store)
            ensure_worker(store, Queue.TASKS)
            last_check = now
        if now - start > TASK_TIMEOUT_S:
            store.finish_task(task_id, TaskStatus.FAILED, error="timed out")
            raise UserError(f"{kind} took longer than {TASK_TIMEOUT_S:.0f} s and was given up")
        time.sleep(TASK_POLL_S)
