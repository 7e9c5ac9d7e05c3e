"""The worker process: ``python -m core.app.worker --home H --queue runs|tasks --parent PID``.

Started by :func:`core.app.jobs.ensure_worker`, never imported by a page. It claims work from the
store one item at a time (oldest first):

* **runs** (with ``BIASREPAIR_BACKEND=ray``, each run goes to a Ray task instead: :mod:`core.app.rayruns`):
  calls :func:`core.engine.repair.repair` with a ``progress`` callback that writes rows
  to the store and a ``should_stop`` callback that reads the run's cancel flag, then writes the
  results with :func:`core.engine.repair.write_run` into the run's folder.
* **tasks**: the short model computations of :mod:`core.app.compute`, each recorded as done with its
  result or failed with a message a page can show.

All model computation of the workbench happens here, so the Streamlit process never loads torch.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback

import torch

from core import settings
from core.app import compute
from core.app.integrity import stored_model_sha256
from core.app.jobs import HEARTBEAT_S, IDLE_EXIT_S, STALE_AFTER_S, reap_dead_workers
from core.app.pixels import eval_images
from core.app.pool import unlabeled_images
from core.app.rayruns import RayRuns
from core.app.store import QUEUES, Store
from core.app.stored_models import stored_bundle
from core.engine.backends import backend_name
from core.engine.events import ProgressEvent, StepEvent
from core.engine.loop import PreparedData
from core.engine.repair import prepare_data, repair, write_run
from core.engine.request import DataRefs, RunRequest
from core.engine.results import RunMetrics
from core.engine.runfolder import RunFolder
from core.errors import UserError
from core.formats.datasets import ImageDataset, load_dataset
from core.formats.scratch import sweep_stale

CANCEL_POLL_S = 0.1
AUTO_STEP_BASE = -1_000_000  # progress rows of auto's sweep (see core.app.runs.run_progress)
PROGRESS_FLUSH_S = 0.25


class _Worker:
    def __init__(self, store: Store, queue: str, parent: int | None):
        self.store = store
        self.queue = queue
        self.parent = parent
        self.pid = os.getpid()
        self.stop = threading.Event()  # parent gone or SIGTERM: interrupt and exit
        self.done = threading.Event()  # the serving loop has ended: no more heartbeats

    def _beat(self) -> None:
        # Beats until the serving loop has ended, also after ``stop``: a run being interrupted is
        # still finishing its step, and a silent worker would be taken for a dead one.
        while not self.done.is_set():
            try:
                self.store.heartbeat(self.pid, self.queue)
            except Exception:  # a locked database for a moment must not kill the heartbeat
                pass
            if self.parent and os.getppid() != self.parent and not self.stop.is_set():
                # The server that started it is gone: stop as on SIGTERM. A repair stops between steps;
                # a task's computation is cut short (the handler raises in the main thread), not
                # finished minutes later for nobody.
                self.stop.set()
                os.kill(self.pid, signal.SIGTERM)
            self.done.wait(HEARTBEAT_S)

    def serve(self, idle_exit: float) -> None:
        if not self.store.register_worker(self.pid, self.queue, STALE_AFTER_S):
            print(f"another worker serves the {self.queue} queue of this store: exiting", flush=True)
            return
        beat = threading.Thread(target=self._beat, daemon=True)
        beat.start()
        reap_dead_workers(self.store, restart=False)
        idle_since = time.monotonic()
        try:
            if self.queue == "runs" and backend_name() == "ray":  # each run a Ray task: core.app.rayruns
                RayRuns(self.store, self.pid, execute_run).serve(self.stop, idle_exit)
                return
            while not self.stop.is_set():
                if self.queue == "runs":
                    item = self.store.claim_next_run(self.pid)
                    if item:  # what the log shows when this worker dies (see jobs.reap_dead_workers)
                        print(f"run {item['id']}: started ({item['method']})", flush=True)
                    work = (lambda r: execute_run(self.store, r, self.stop)) if item else None
                else:
                    item = self.store.claim_next_task(self.pid)
                    work = (lambda t: execute_task(self.store, t)) if item else None
                if item is None:
                    if time.monotonic() - idle_since > idle_exit:
                        break
                    self.stop.wait(0.05 if self.queue == "tasks" else 0.3)
                    continue
                work(item)
                idle_since = time.monotonic()
        finally:
            self.done.set()
            beat.join(5 * HEARTBEAT_S)  # its last beat must not bring the row back after it is removed
            self.store.remove_worker(self.pid)


class Stopped(BaseException):
    """Raised in a task worker's main thread by SIGTERM: a task is only a computation a page waits
    for (nothing half-done is kept: its files are written whole or not at all), so a stopping server
    need not wait for it to end, as it does for a repair's step."""


def execute_task(store: Store, task: dict) -> str:
    """Run one claimed task and record its result or its error; returns the final status."""
    try:
        handler = compute.TASKS[task["kind"]]
        result = handler(store, task["payload"], task["created_by"])
        store.finish_task(task["id"], "done", result=result)
        return "done"
    except Stopped:
        store.finish_task(task["id"], "failed", error="interrupted: the workbench was stopped")
        raise
    except UserError as exc:
        # The message key and parameters travel with the English text, so the page can translate it.
        why = {"error_key": exc.key, "error_params": exc.params} if exc.key else None
        store.finish_task(task["id"], "failed", result=why, error=str(exc))
        return "failed"
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        traceback.print_exc()
        store.finish_task(task["id"], "failed", error=f"internal error: {detail}")
        return "failed"


class _RunReporter:
    """A running repair's link to the store: progress rows written in batches, the cancel flag polled."""

    def __init__(self, store: Store, run_id: int, interrupt: threading.Event):
        self.store, self.run_id, self.interrupt = store, run_id, interrupt
        self.buffer: list[dict] = []
        self.flushed, self.polled, self.stop, self.device, self.auto_seq = time.monotonic(), 0.0, False, None, 0
        self.started = time.monotonic()

    def flush(self) -> None:
        self.store.add_progress(self.run_id, self.buffer)
        self.buffer.clear()
        self.flushed = time.monotonic()

    def progress(self, event: ProgressEvent) -> None:
        row = event.to_json()
        if not isinstance(event, StepEvent):
            # Auto's events come before step 1: stored at negative steps, in order, so that the
            # training steps keep their own numbers.
            self.auto_seq += 1
            row["step"] = AUTO_STEP_BASE + self.auto_seq
        row["t_s"] = time.monotonic() - self.started  # seconds since the run was claimed: the measured pace
        self.buffer.append(row)
        if self.device is None and isinstance(event, StepEvent) and event.device:
            self.device = event.device
            self.store.set_run(self.run_id, device=event.device)
        # The step the run stops at is written at once, so the page knows the training is over while the
        # result is evaluated and written.
        ends = isinstance(event, StepEvent) and event.step >= (event.stop_by or event.max_steps or event.step + 1)
        if ends or time.monotonic() - self.flushed >= PROGRESS_FLUSH_S:
            self.flush()

    def should_stop(self) -> bool:
        if self.interrupt.is_set():
            return True
        now = time.monotonic()
        if now - self.polled >= CANCEL_POLL_S:
            self.polled = now
            self.stop = self.store.cancel_requested(self.run_id)
        return self.stop


def execute_run(store: Store, run: dict, interrupt: threading.Event | None = None) -> str:
    """Run one claimed repair to its end and record how it ended; returns the final status."""

    interrupt = interrupt or threading.Event()
    run_id = run["id"]
    reporter = _RunReporter(store, run_id, interrupt)
    try:
        if not run.get("request_json"):
            raise UserError("this run was queued by an earlier version of the workbench; start it again")
        request = RunRequest.from_json(run["request_json"])
        bundle = stored_bundle(store, run["model_id"])
        data, eval_set = _prepared(store, bundle, request.data)
        result = repair(bundle, request, data, progress=reporter.progress, should_stop=reporter.should_stop)
        reporter.flush()
        return _record_end(store, run, result, bundle.meta, eval_set, interrupt)
    except UserError as exc:
        reporter.flush()
        with store.transaction():
            store.finish_run(run_id, "failed", error=str(exc))
            store.audit(run["created_by"], "run_failed", run["project_id"], run_id=run_id, error=str(exc))
        return "failed"
    except Exception as exc:
        reporter.flush()
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        traceback.print_exc()
        with store.transaction():
            store.finish_run(run_id, "failed", error=f"internal error: {detail}")
            store.audit(run["created_by"], "run_failed", run["project_id"], run_id=run_id, error=detail)
        return "failed"


def _prepared(store: Store, bundle, refs: DataRefs) -> tuple[PreparedData, ImageDataset | None]:
    """A queued run's images, decoded once (and its evaluation set, for the predictions file); the
    evaluation images from the store's decoded cache (:func:`core.app.pixels.eval_images`)."""
    names = bundle.meta.class_names
    counterexamples = load_dataset(refs.counterexamples, names)
    eval_set = load_dataset(refs.evaluation, names) if refs.evaluation else None
    unlabeled = reference = None
    if refs.unlabeled_root and refs.unlabeled_items:
        unlabeled = unlabeled_images(refs.unlabeled_root, refs.unlabeled_items, names)
    if refs.reference_root and refs.reference_items:
        reference = unlabeled_images(refs.reference_root, refs.reference_items, names)
    pixels = eval_images(store, eval_set, bundle.meta) if eval_set is not None else None
    data = prepare_data(bundle, counterexamples, eval_set, unlabeled=unlabeled, eval_pixels=pixels, reference=reference)
    if reference is None:
        # prepare_data falls back to the unlabelled images, which suits the CLI's typical images;
        # here they are the candidate pool, full of images whose answer should change: no anchor.
        data.reference = None
    return data, eval_set


def _record_end(store: Store, run: dict, result, meta, eval_set, interrupt: threading.Event) -> str:
    """How the run ended, in the store, with its audit row in the same transaction (a reader never sees the
    status without the row), and its folder written before when it is done; returns the status."""
    run_id = run["id"]
    stop = {"stop_reason": result.stop.reason.value, "restored_step": result.stop.restored_step}
    if interrupt.is_set():
        status, fields = "interrupted", {"error": "the server stopped while this run was in progress"}
    elif result.cancelled:
        status, fields = "cancelled", stop
    else:
        write_run(result, meta, run["out_dir"], eval_set=eval_set)
        status, fields = "done", {"device": result.metrics.device, **stop}
    summary = _summary(result.metrics, run["out_dir"]) if status == "done" else {}
    with store.transaction():
        store.finish_run(run_id, status, **fields)
        store.audit(run["created_by"], f"run_{status}", run["project_id"], run_id=run_id, method=run["method"],
                    config=run["config"], stop_reason=result.stop.describe(), **summary)  # fmt: skip
    return status


def _summary(m: RunMetrics, out_dir: str) -> dict:
    """A finished run's numbers for its audit row, and the SHA-256 of its repaired model's files as
    written (checked again before it is approved, see core/app/integrity.py)."""
    folder = RunFolder(out_dir)
    return {
        "sha256": stored_model_sha256(folder.model_dir) if folder.has_model() else None,
        "accuracy_before": m.before.accuracy,
        "accuracy_after": m.after.accuracy,
        "worst_group_before": m.before.worst_group_accuracy,
        "worst_group_after": m.after.worst_group_accuracy,
        "kept_decisions": m.comparison.kept_decisions,
        "strength": m.strength,
        "steps": m.steps,
        "device": m.device,
    }


def torch_threads() -> int:
    """The threads torch's work in one worker uses: ``BIASREPAIR_WORKER_THREADS``, or else this process's cores
    shared between the two queues' workers, which run at once (a repair beside the Review page's α preview). torch's
    own default, every core in each worker, made the two wait on each other: a demo repair took 51 and 74 s with two
    threads against 17.6 s with one, on 2 cores other work was loading (load average 6)."""
    return settings.WORKER_THREADS.get() or max(1, len(os.sched_getaffinity(0)) // len(QUEUES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.app.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="store folder (BIASREPAIR_HOME)")
    parser.add_argument("--queue", default="runs", choices=QUEUES, help="which queue to serve")
    parser.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--idle-exit", type=float, default=IDLE_EXIT_S, help="seconds idle before exiting")
    args = parser.parse_args(argv)
    sweep_stale()  # what a killed earlier worker or command left in the temporary folder
    torch.set_num_threads(torch_threads())
    worker = _Worker(Store(args.home), args.queue, args.parent)
    if args.queue == "tasks":

        def _stopped(*_) -> None:
            worker.stop.set()
            raise Stopped

        signal.signal(signal.SIGTERM, _stopped)
    else:  # a repair is interrupted between steps, and records how far it got
        signal.signal(signal.SIGTERM, lambda *_: worker.stop.set())
    try:
        worker.serve(args.idle_exit)
    except Stopped:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
