"""Runs and the task queue in the store: repair runs with their live progress, the short tasks pages
wait for, the workers serving both queues with their heartbeats, and the first-writer-wins claims."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.app.store.base import StoreBase, now_iso, pid_alive
from core.app.store.states import (
    ACTIVE_RUN_STATES,
    ACTIVE_TASK_STATES,
    FINISHED_RUN_STATES,
    FINISHED_TASK_STATES,
    Queue,
    RunStatus,
    TaskStatus,
    sql_list,
)

RUN_FIELDS = frozenset({"device", "decision", "repaired_model_id", "cancel_requested"})
# stop_reason: a core.engine.results.StopReason value; restored_step: the step the run went back to;
# out_dir: a run made whole (an interpolation).
FINISH_FIELDS = frozenset({"error", "stop_reason", "restored_step", "device", "out_dir"})


class RunQueue(StoreBase):
    # ---- runs ------------------------------------------------------------------------------
    def create_run(
        self,
        project_id: int,
        model_id: int,
        method: str,
        config: dict,
        strength_label: str,
        n_counterexamples: int,
        out_dir: Path,
        actor: str,
    ) -> int:
        return self._execute(
            "INSERT INTO runs (project_id, model_id, status, method, config_json, strength_label,"
            " n_counterexamples, out_dir, created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                project_id,
                model_id,
                RunStatus.PREPARING,
                method,
                json.dumps(config),
                strength_label,
                n_counterexamples,
                str(out_dir),
                now_iso(),
                actor,
            ),
        )

    def set_run_request(self, run_id: int, request_json: str) -> None:
        """The run's typed request (core.engine.request.RunRequest.to_json), fixed before it is queued."""
        self._execute(
            "UPDATE runs SET request_json = ? WHERE id = ? AND status = ?", (request_json, run_id, RunStatus.PREPARING)
        )

    def queue_run(self, run_id: int, out_dir: Path) -> None:
        """A prepared run (its inputs written to ``out_dir``) becomes visible to the worker."""
        self._execute(
            "UPDATE runs SET status = ?, out_dir = ? WHERE id = ? AND status = ?",
            (RunStatus.QUEUED, str(out_dir), run_id, RunStatus.PREPARING),
        )

    def run(self, run_id: int) -> dict | None:
        row = self._one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if row:
            row["config"] = json.loads(row["config_json"])
        return row

    def runs(self, project_id: int) -> list[dict]:
        rows = self._query("SELECT * FROM runs WHERE project_id = ? ORDER BY id DESC", (project_id,))
        for r in rows:
            r["config"] = json.loads(r["config_json"])
        return rows

    def _claim(self, queue: Queue, pid: int, extra_set: str = "", extra: tuple = ()) -> int | None:
        """The id of the oldest queued row of ``queue``'s table, now 'running' for ``pid``. Runs and
        tasks share the words 'queued' and 'running'."""
        table = Queue(queue).value
        with self._connect() as con:
            row = con.execute(
                f"SELECT id FROM {table} WHERE status = ? ORDER BY id LIMIT 1", (RunStatus.QUEUED,)
            ).fetchone()
            if row is None:
                return None
            con.execute(
                f"UPDATE {table} SET status = ?, worker_pid = ?{extra_set} WHERE id = ? AND status = ?",
                (RunStatus.RUNNING, pid, *extra, row["id"], RunStatus.QUEUED),
            )
        return row["id"]

    def has_queued_runs(self) -> bool:
        return self._one("SELECT id FROM runs WHERE status = ? LIMIT 1", (RunStatus.QUEUED,)) is not None

    def claim_next_run(self, pid: int) -> dict | None:
        """Atomically move the oldest queued run to 'running' for worker ``pid``."""
        run_id = self._claim(Queue.RUNS, pid, ", started_at = ?", (now_iso(),))
        if run_id is None:
            return None
        return self.run(run_id)

    def finish_run(self, run_id: int, status: str, **fields) -> bool:
        """Record how a run ended; only a running or queued run can end (first writer wins). Returns
        whether this call ended it."""
        if status not in FINISHED_RUN_STATES:
            raise ValueError(f"not a final state: {status}")
        cols = "".join(f", {k} = ?" for k in fields if k in FINISH_FIELDS)
        vals = tuple(v for k, v in fields.items() if k in FINISH_FIELDS)
        changed = self._execute(
            f"UPDATE runs SET status = ?, finished_at = ?{cols} WHERE id = ? AND status IN {sql_list(ACTIVE_RUN_STATES)}",
            (status, now_iso(), *vals, run_id),
        )
        return changed > 0

    def set_run(self, run_id: int, **fields) -> None:
        bad = set(fields) - RUN_FIELDS
        if bad:
            raise ValueError(f"cannot set run field(s) {bad}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def cancel_requested(self, run_id: int) -> bool:
        row = self._one("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,))
        return bool(row and row["cancel_requested"])

    def add_progress(self, run_id: int, events: list[dict]) -> None:
        if not events:
            return
        with self._connect() as con:
            con.executemany(
                "INSERT OR REPLACE INTO progress (run_id, step, data_json) VALUES (?,?,?)",
                [(run_id, int(e.get("step", 0)), json.dumps(e, default=float)) for e in events],
            )

    def progress(self, run_id: int) -> list[dict]:
        rows = self._query("SELECT data_json FROM progress WHERE run_id = ? ORDER BY step", (run_id,))
        return [json.loads(r["data_json"]) for r in rows]

    # ---- workers ---------------------------------------------------------------------------
    def heartbeat(self, pid: int, queue: str = Queue.RUNS) -> None:
        t = time.time()
        self._execute(
            "INSERT INTO workers (pid, started_at, heartbeat, queue) VALUES (?,?,?,?)"
            " ON CONFLICT (pid) DO UPDATE SET heartbeat = excluded.heartbeat",
            (pid, t, t, queue),
        )

    def register_worker(self, pid: int, queue: str, stale_after: float) -> bool:
        """Take the lease on ``queue`` for worker ``pid``: register it, unless another worker of that
        queue is alive (a fresh heartbeat and a live process), decided in one write transaction, so
        that of workers starting at once only one serves a queue. Returns whether ``pid`` holds it."""
        with self.transaction():
            if any(p != pid for p in self.live_workers(stale_after, queue=queue)):
                return False
            self.heartbeat(pid, queue)
            return True

    def remove_worker(self, pid: int) -> None:
        self._execute("DELETE FROM workers WHERE pid = ?", (pid,))

    def live_workers(self, stale_after: float = 10.0, queue: str | None = None) -> list[int]:
        """Worker pids (of ``queue``, or of any) whose heartbeat is recent and whose process still exists."""
        cutoff = time.time() - stale_after
        alive = []
        rows = self._query("SELECT pid, heartbeat, queue FROM workers")
        for row in (r for r in rows if queue is None or r["queue"] == queue):
            if row["heartbeat"] >= cutoff and pid_alive(row["pid"]):
                alive.append(row["pid"])
        return alive

    def workers(self) -> dict[int, dict]:
        """The registered workers by pid: ``started_at``, ``heartbeat`` (Unix times) and ``queue``."""
        return {r["pid"]: r for r in self._query("SELECT * FROM workers")}

    def orphaned(self, stale_after: float = 10.0) -> dict[Queue, list[dict]]:
        """Work left 'running' by a worker that is not alive (its process is gone, or its heartbeat
        is older than ``stale_after`` seconds): ``{"runs": [...], "tasks": [...]}``, rows with ``id``
        and ``worker_pid``. Nothing is changed here; :func:`core.app.jobs.reap_dead_workers` ends them.
        The workers and the running rows are read in one snapshot (a read transaction): a worker
        registers before it claims, so a claim is never seen without its worker (one that registered
        and claimed between two separate reads would be taken for dead)."""
        with self.transaction(write=False):
            live = set(self.live_workers(stale_after))
            sql = "SELECT id, worker_pid FROM {} WHERE status = ? ORDER BY id"
            running = {table: self._query(sql.format(table.value), (RunStatus.RUNNING,)) for table in Queue}
        return {table: [r for r in rows if r["worker_pid"] not in live] for table, rows in running.items()}

    def stale_preparing(self, older_than: float) -> list[dict]:
        """Runs still 'preparing' that were created more than ``older_than`` seconds ago: the page
        process that was preparing them stopped (preparing copies a few counterexample files and
        ends in seconds, or fails the run itself)."""
        cutoff = (datetime.now(UTC) - timedelta(seconds=older_than)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self._query(
            "SELECT id, project_id, created_by FROM runs WHERE status = ? AND created_at < ? ORDER BY id",
            (RunStatus.PREPARING, cutoff),
        )

    # ---- tasks: short model computations a page waits for (evaluate, predict, register) ------
    def submit_task(self, kind: str, payload: dict, actor: str, project_id: int | None = None) -> int:
        return self._execute(
            "INSERT INTO tasks (project_id, kind, payload_json, status, created_at, created_by) VALUES (?,?,?,?,?,?)",
            (project_id, kind, json.dumps(payload), TaskStatus.QUEUED, now_iso(), actor),
        )

    def task(self, task_id: int) -> dict | None:
        row = self._one("SELECT * FROM tasks WHERE id = ?", (task_id,))
        if row:
            row["payload"] = json.loads(row.pop("payload_json"))
            raw = row.pop("result_json")
            row["result"] = json.loads(raw) if raw else None
        return row

    def has_queued_tasks(self) -> bool:
        return self._one("SELECT id FROM tasks WHERE status = ? LIMIT 1", (TaskStatus.QUEUED,)) is not None

    def pending_tasks(self, kind: str) -> list[dict]:
        """The payloads of the queued or running tasks of one kind."""
        rows = self._query(
            f"SELECT payload_json FROM tasks WHERE kind = ? AND status IN {sql_list(ACTIVE_TASK_STATES)} ORDER BY id",
            (kind,),
        )
        return [json.loads(r["payload_json"]) for r in rows]

    def claim_next_task(self, pid: int) -> dict | None:
        """Atomically move the oldest queued task to 'running' for worker ``pid``."""
        task_id = self._claim(Queue.TASKS, pid)
        if task_id is None:
            return None
        return self.task(task_id)

    def finish_task(self, task_id: int, status: str, result: dict | None = None, error: str | None = None) -> bool:
        """Record how a task ended (first writer wins); returns whether this call ended it."""
        if status not in FINISHED_TASK_STATES:
            raise ValueError(f"not a final task state: {status}")
        return 0 < self._execute(
            "UPDATE tasks SET status = ?, result_json = ?, error = ?, finished_at = ?"
            f" WHERE id = ? AND status IN {sql_list(ACTIVE_TASK_STATES)}",
            (status, json.dumps(result) if result is not None else None, error, now_iso(), task_id),
        )
