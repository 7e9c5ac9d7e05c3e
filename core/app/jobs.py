"""The job runner: repairs run in a separate worker process, never in the Streamlit script thread.

``ensure_worker(store)`` starts ``python -m core.app.jobs --home H --parent PID`` when no live worker
is there. The worker claims queued runs from SQLite one at a time (oldest first), calls
:func:`core.engine.repair.run_repair` with a ``progress`` callback that writes rows to the store and a
``should_stop`` callback that reads the run's cancel flag, then writes the results with
:func:`core.engine.repair.write_run` into the run's artifacts folder. Pages only read the store.

Liveness: the worker writes a heartbeat every second. A run left 'running' by a worker whose
process is gone or whose heartbeat is stale is marked 'interrupted' (at the next store start and
when a new worker starts). If the process that started the worker (the Streamlit server) dies, the
worker marks its current run 'interrupted' and exits too, so a server restart never leaves a
ghost run behind. An idle worker exits after a while; the next submitted run starts a new one.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from core.app.store import REPO_ROOT, Store

HEARTBEAT_S = 1.0
STALE_AFTER_S = 10.0
IDLE_EXIT_S = 60.0
CANCEL_POLL_S = 0.1
PROGRESS_FLUSH_S = 0.25

_spawned: dict[str, subprocess.Popen] = {}
_spawn_lock = threading.Lock()


def recover_interrupted(store: Store) -> list[int]:
    """Mark runs that a dead worker left 'running' as 'interrupted'; returns their ids."""
    ids = store.mark_interrupted(STALE_AFTER_S)
    for run_id in ids:
        run = store.run(run_id)
        store.audit(run["created_by"], "run_interrupted", run["project_id"], run_id=run_id)
    return ids


def ensure_worker(store: Store) -> None:
    """Start a worker process for this store unless one is alive (or was just started by us)."""
    key = str(store.home)
    with _spawn_lock:
        proc = _spawned.get(key)
        if proc is not None and proc.poll() is None:
            return
        if store.live_workers(STALE_AFTER_S):
            return
        log = open(store.home / "worker.log", "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        _spawned[key] = subprocess.Popen(
            [sys.executable, "-m", "core.app.jobs", "--home", key, "--parent", str(os.getpid())],
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


class _Worker:
    def __init__(self, store: Store, parent: int | None):
        self.store = store
        self.parent = parent
        self.pid = os.getpid()
        self.stop = threading.Event()  # parent gone or SIGTERM: interrupt and exit

    def _beat(self) -> None:
        while not self.stop.is_set():
            try:
                self.store.heartbeat(self.pid)
            except Exception:  # a locked database for a moment must not kill the heartbeat
                pass
            if self.parent and os.getppid() != self.parent:
                self.stop.set()
            self.stop.wait(HEARTBEAT_S)

    def serve(self, idle_exit: float) -> None:
        self.store.heartbeat(self.pid)
        threading.Thread(target=self._beat, daemon=True).start()
        recover_interrupted(self.store)
        idle_since = time.monotonic()
        try:
            while not self.stop.is_set():
                run = self.store.claim_next_run(self.pid)
                if run is None:
                    if time.monotonic() - idle_since > idle_exit:
                        break
                    self.stop.wait(0.3)
                    continue
                execute_run(self.store, run, self.stop)
                idle_since = time.monotonic()
        finally:
            self.store.remove_worker(self.pid)


def execute_run(store: Store, run: dict, interrupt: threading.Event | None = None) -> str:
    """Run one claimed repair to its end and record how it ended; returns the final status."""
    from core.engine.repair import run_repair, write_run
    from core.errors import UserError
    from core.formats.bundle import load_bundle
    from core.formats.datasets import load_dataset

    interrupt = interrupt or threading.Event()
    run_id = run["id"]
    out_dir = Path(run["out_dir"])
    buffer: list[dict] = []
    state = {"flushed": time.monotonic(), "polled": 0.0, "stop": False, "device": None}

    def flush() -> None:
        store.add_progress(run_id, buffer)
        buffer.clear()
        state["flushed"] = time.monotonic()

    def progress(event: dict) -> None:
        buffer.append(dict(event))
        if state["device"] is None and event.get("device"):
            state["device"] = event["device"]
            store.set_run(run_id, device=event["device"])
        if time.monotonic() - state["flushed"] >= PROGRESS_FLUSH_S:
            flush()

    def should_stop() -> bool:
        if interrupt.is_set():
            return True
        now = time.monotonic()
        if now - state["polled"] >= CANCEL_POLL_S:
            state["polled"] = now
            state["stop"] = store.cancel_requested(run_id)
        return state["stop"]

    try:
        model = store.model(run["model_id"])
        bundle = load_bundle(model["path"])
        names = bundle.meta.class_names
        counterexamples = load_dataset(out_dir / "counterexamples", names)
        project = store.project(run["project_id"])
        eval_set = None
        if project["eval_dataset_id"]:
            eval_set = load_dataset(store.dataset(project["eval_dataset_id"])["path"], names)
        from core.app.workbench import unlabeled_pool

        result = run_repair(
            bundle,
            counterexamples,
            eval_set,
            method=run["method"],
            config=run["config"],
            device="auto",
            seed=0,
            progress=progress,
            should_stop=should_stop,
            unlabeled=unlabeled_pool(store, run["project_id"]),
        )
        flush()
        if interrupt.is_set():
            status = "interrupted"
            store.finish_run(run_id, status, error="the server stopped while this run was in progress")
        elif result.cancelled:
            status = "cancelled"
            store.finish_run(run_id, status, stop_reason=result.stop_reason)
        else:
            write_run(result, bundle.meta, out_dir, eval_set=eval_set)
            status = "done"
            store.finish_run(run_id, status, stop_reason=result.stop_reason, device=result.metrics.get("device"))
        summary = {}
        if status == "done":
            m = result.metrics
            summary = {
                "accuracy_before": m["before"]["accuracy"],
                "accuracy_after": m["after"]["accuracy"],
                "worst_group_before": m["before"]["worst_group_accuracy"],
                "worst_group_after": m["after"]["worst_group_accuracy"],
                "kept_decisions": m["kept_decisions"],
                "strength": m.get("strength"),
                "steps": m.get("steps"),
                "device": m.get("device"),
            }
        store.audit(
            run["created_by"],
            f"run_{status}",
            run["project_id"],
            run_id=run_id,
            method=run["method"],
            config=run["config"],
            stop_reason=result.stop_reason,
            **summary,
        )
        return status
    except UserError as exc:
        flush()
        store.finish_run(run_id, "failed", error=str(exc))
        store.audit(run["created_by"], "run_failed", run["project_id"], run_id=run_id, error=str(exc))
        return "failed"
    except Exception as exc:
        flush()
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        traceback.print_exc()
        store.finish_run(run_id, "failed", error=f"internal error: {detail}")
        store.audit(run["created_by"], "run_failed", run["project_id"], run_id=run_id, error=detail)
        return "failed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.app.jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="store folder (BIASREPAIR_HOME)")
    parser.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--idle-exit", type=float, default=IDLE_EXIT_S, help="seconds idle before exiting")
    args = parser.parse_args(argv)
    worker = _Worker(Store(args.home), args.parent)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    worker.serve(args.idle_exit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
