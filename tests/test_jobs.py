"""The job runner: a real worker process claims queued runs, reports progress, honours cancel; a run
whose worker is killed is failed with the cause and the queue moves on. Waits poll the store; nothing
asserts on time."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.app import budget, jobs, projects, runs
from core.app.i18n import error_text
from core.app.store import Store, pid_alive
from core.errors import UserError
from tests.wb_helpers import ALICE, BOB, FAST_RUN, label_top, seed_demo_cache, wait_for

LONG_RUN = {"strength": 1000.0, "max_steps": 5000, "min_steps": 5000, "stop_rule": "none"}


@pytest.fixture()
def store(tmp_path, demo_dir):
    home = tmp_path / "home"
    seed_demo_cache(home, demo_dir)
    s = Store(home)
    yield s
    jobs.stop_spawned_workers()


@pytest.fixture()
def demo(store) -> int:
    pid = projects.open_demo(store, ALICE)
    label_top(store, pid, 8)
    return pid


def _status(store, rid):
    return store.run(rid)["status"]


def test_worker_runs_queued_jobs_in_order_with_progress(store, demo):
    first = runs.submit_run(store, demo, "cpt", dict(FAST_RUN), ALICE)
    second = runs.submit_run(store, demo, "cpt", {**FAST_RUN, "strength": 10000.0}, BOB)
    wait_for(lambda: _status(store, second) in ("done", "failed"), timeout=300)
    for rid in (first, second):
        run = store.run(rid)
        assert run["status"] == "done", run["error"]
        assert run["device"]  # "CPU" or the GPU's name
        assert store.progress(rid) and runs.run_metrics(store, rid)["after"]["groups"]
    assert store.run(first)["started_at"] <= store.run(second)["started_at"]
    done = [e for e in store.audit_events(demo) if e["action"] == "run_done"]
    assert [e["detail"]["run_id"] for e in done] == [first, second]
    assert done[1]["actor"] == BOB and "kept_decisions" in done[1]["detail"]
    assert len(store.live_workers(queue="runs")) == 1  # one repair worker served both runs
    # Both runs read the evaluation images decoded once, from the store.
    assert len(list(store.artifact_dir("pixels").glob("*.npy"))) == 1


def test_cancel_stops_a_running_job(store, demo):
    rid = runs.submit_run(store, demo, "cpt", dict(LONG_RUN), ALICE)
    wait_for(lambda: len(store.progress(rid)) >= 3, timeout=180)
    runs.cancel_run(store, rid, ALICE)
    wait_for(lambda: _status(store, rid) != "running", timeout=60)
    assert _status(store, rid) == "cancelled"
    steps = [p["step"] for p in store.progress(rid)]
    assert max(steps) < LONG_RUN["max_steps"]
    assert not (store.home / "artifacts" / "runs" / str(rid) / "metrics.json").exists()


def poll_until(predicate, polls: int = 3000, every: float = 0.2):
    """Call ``predicate`` up to ``polls`` times, as a page polls; return its first truthy value.
    The bound is a number of polls, generous for a slow machine; nothing asserts on time."""
    for _ in range(polls):
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met in {polls} polls")


def test_killed_worker_fails_its_run_with_the_cause_and_the_queue_moves_on(store, demo):
    rid = runs.submit_run(store, demo, "cpt", dict(LONG_RUN), ALICE)
    poll_until(lambda: len(store.progress(rid)) >= 1)
    after = runs.submit_run(store, demo, "cpt", dict(FAST_RUN), BOB)  # waits behind the long run
    worker_pid = store.run(rid)["worker_pid"]
    os.kill(worker_pid, signal.SIGKILL)
    # The page polls the run once a second; a handful of polls must notice the dead worker.
    ended = None
    for _ in range(20):
        state = runs.run_progress(store, rid)
        if state["run"]["status"] != "running":
            ended = state["run"]
            break
        time.sleep(0.25)
    assert ended is not None, "the dead worker's run still shows as running"
    assert ended["status"] == "failed"
    assert "SIGKILL" in ended["error"] and f"pid {worker_pid}" in ended["error"]
    assert f"run {rid}: started" in ended["error"]  # the last lines of the worker's log
    failed = [e for e in store.audit_events(demo) if e["action"] == "run_failed"]
    assert [e["detail"]["run_id"] for e in failed] == [rid]
    assert "SIGKILL" in failed[0]["detail"]["error"]
    # The next queued run is taken by a new worker and finishes.
    poll_until(lambda: runs.run_progress(store, after)["run"]["status"] in ("done", "failed"))
    second = store.run(after)
    assert second["status"] == "done", second["error"]
    assert second["worker_pid"] != worker_pid
    assert worker_pid not in store.workers()


def test_a_dead_workers_run_found_at_store_start_is_failed_with_a_reason(store, demo):
    rid = runs.submit_run(store, demo, "cpt", dict(LONG_RUN), ALICE)
    poll_until(lambda: len(store.progress(rid)) >= 1)
    os.kill(store.run(rid)["worker_pid"], signal.SIGKILL)
    jobs._spawned.clear()  # as after a server restart: this process did not start that worker
    assert poll_until(lambda: jobs.reap_dead_workers(Store(store.home), restart=False), polls=50) == [rid]
    run = store.run(rid)
    assert run["status"] == "failed" and "died while this was in progress" in run["error"]
    assert jobs.reap_dead_workers(store) == []  # ended once, audited once
    assert [e["action"] for e in store.audit_events(demo)].count("run_failed") == 1


def test_a_dead_workers_task_fails_with_the_cause_and_the_last_log_lines(store):
    proc = subprocess.Popen([sys.executable, "-c", "print('computing the pool predictions')"], stdout=subprocess.PIPE)
    jobs.worker_log(store, "tasks").write_bytes(proc.communicate()[0])  # the log a dead worker left
    task_id = store.submit_task("evaluate", {}, ALICE)
    store.heartbeat(proc.pid, "tasks")
    assert store.claim_next_task(proc.pid)["id"] == task_id  # claimed by a process that is now gone
    assert jobs.reap_dead_workers(store, restart=False) == []  # no run ended, but the task is
    task = store.task(task_id)
    assert task["status"] == "failed"
    assert f"pid {proc.pid}" in task["error"] and "its process is gone" in task["error"]
    assert "computing the pool predictions" in task["error"]
    assert proc.pid not in store.workers()


def test_terminated_worker_marks_its_run_interrupted_itself(store, demo):
    rid = runs.submit_run(store, demo, "cpt", dict(LONG_RUN), ALICE)
    wait_for(lambda: len(store.progress(rid)) >= 1, timeout=180)
    os.kill(store.run(rid)["worker_pid"], signal.SIGTERM)
    wait_for(lambda: _status(store, rid) != "running", timeout=60)
    assert _status(store, rid) == "interrupted"


def test_disk_budget_refuses_a_run_before_writing_anything(store, demo, monkeypatch):
    used = budget.store_usage(store)["used"]
    model_bytes = budget.folder_bytes(store.model(store.project(demo)["base_model_id"])["path"])
    # The database's write-ahead log comes and goes as connections close, so the store's size is held
    # at what it was; the repair needs twice the model plus its counterexamples: make it just not fit.
    limit = {"budget": used + 2 * model_bytes}
    monkeypatch.setattr(budget, "store_usage", lambda store: {"used": used, "budget": limit["budget"]})

    def files() -> list[Path]:  # SQLite's own -wal/-shm files appear and vanish as connections open and close
        found = (p.relative_to(store.home) for p in store.home.rglob("*") if p.is_file())
        return sorted(p for p in found if not p.name.endswith(("-wal", "-shm")))

    before = files()
    with pytest.raises(UserError, match="this repair needs about .*disk budget"):
        runs.submit_run(store, demo, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    assert store.runs(demo) == []
    assert not (store.artifacts / "runs").exists()
    assert files() == before  # nothing new on disk (the database files may grow in place)
    limit["budget"] = used + 2 * model_bytes + 2**20  # the counterexamples are a few KB
    rid = runs.submit_run(store, demo, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    assert store.run(rid)["status"] == "queued"


def test_queued_runs_resume_when_no_worker_is_alive(store, demo):
    rid = runs.submit_run(store, demo, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    assert store.live_workers(queue="runs") == []
    assert runs.resume_queued(store) is True
    wait_for(lambda: _status(store, rid) == "done", timeout=300)
    assert runs.resume_queued(store) is False


def test_a_task_error_keeps_its_message_key_across_the_worker(store):
    """A UserError raised in the task worker reaches the page with its English text, its message key
    and its parameters, so the page can show it in Japanese."""
    with pytest.raises(UserError) as caught:
        jobs.compute(store, "alpha_preview", {"run_id": 0, "alpha": 2.0}, ALICE)
    assert "between 0 and 1" in str(caught.value)
    assert caught.value.key == "alpha_range" and caught.value.params == {"alpha": "2.0"}
    assert error_text(caught.value, "ja") == "強さ α は 0 から 1 の間にしてください（2.0 は範囲外です）"


def test_a_task_stopped_by_sigterm_is_recorded_as_interrupted(store, monkeypatch):
    """A stopping server does not wait for a task worker's computation: SIGTERM raises ``Stopped`` in
    it; the task is recorded as failed ("interrupted") and the worker leaves."""
    from core.app import compute, worker

    def stopped_midway(store, payload, actor):
        raise worker.Stopped  # what the SIGTERM handler raises in the worker's main thread

    monkeypatch.setitem(compute.TASKS, "slow", stopped_midway)
    tid = store.submit_task("slow", {}, ALICE, None)
    task = store.claim_next_task(os.getpid())
    assert task["id"] == tid
    with pytest.raises(worker.Stopped):
        worker.execute_task(store, task)
    row = store.task(tid)
    assert row["status"] == "failed" and row["error"].startswith("interrupted")


def test_a_run_whose_preparation_fails_ends_failed_with_its_reason(store, demo):
    """A missing pool image (or a full disk, a read-only folder) while a run is prepared: the run is
    failed with the reason, never left 'preparing', and the page gets a message."""
    from core.app import pool

    image = Path(pool.chosen_set(store, demo)[0]["file"])
    aside = image.with_name(image.name + ".aside")
    image.rename(aside)  # gone while the run is prepared (put back after: the demo's files are shared)
    try:
        with pytest.raises(UserError, match="preparing the run failed"):
            runs.submit_run(store, demo, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    finally:
        aside.rename(image)
    (run,) = store.runs(demo)
    assert run["status"] == "failed" and "FileNotFoundError" in run["error"]
    assert [e["action"] for e in store.audit_events(demo)][-1] == "run_failed"


def test_a_run_left_preparing_by_a_stopped_page_process_is_failed(store, demo):
    """The page process stopped in the middle of preparing a run (killed, restarted): the run does
    not stay 'preparing' for ever; the next look at the runs fails it with the reason."""
    pid_ = store.project(demo)
    rid = store.create_run(demo, pid_["base_model_id"], "cpt", {}, "1000", 8, store.home, ALICE)
    assert jobs.reap_dead_workers(store, restart=False) == []  # a run being prepared right now is left alone
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - jobs.PREPARE_STALE_S - 60))
    with contextlib.closing(sqlite3.connect(store.db_path)) as con, con:
        con.execute("UPDATE runs SET created_at = ? WHERE id = ?", (old, rid))
    assert jobs.reap_dead_workers(store, restart=False) == [rid]
    run = store.run(rid)
    assert run["status"] == "failed" and "being prepared" in run["error"]
    assert store.audit_events(demo)[-1]["action"] == "run_failed"


def test_a_task_worker_whose_server_died_stops_its_computation(store, demo):
    """The server (here a stand-in process that started the task worker) is killed while the worker computes a
    task: the worker notices its parent is gone within its heartbeat, cuts the computation short, records the
    task as interrupted and leaves, instead of computing on for nobody."""
    jobs.stop_spawned_workers()  # the demo's task worker: the stand-in server starts its own
    project = store.project(demo)
    payload = {"model_id": project["base_model_id"], "dataset_id": project["eval_dataset_id"]}
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from core.app import jobs; from core.app.store import Store;"
         " jobs.ensure_worker(Store(sys.argv[1]), 'tasks'); time.sleep(3600)", str(store.home)],
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    try:
        wait_for(lambda: store.live_workers(queue="tasks"))
        tid = store.submit_task("discover", payload, ALICE, demo)  # features of 7,000 images: many seconds
        wait_for(lambda: store.task(tid)["status"] == "running", every=0.05)
        (worker,) = store.live_workers(queue="tasks")
        server.kill()
        server.wait()
        wait_for(lambda: store.task(tid)["status"] != "running", timeout=120)
        assert store.task(tid)["status"] == "failed" and "interrupted" in store.task(tid)["error"]
        wait_for(lambda: not pid_alive(worker), timeout=60)
    finally:
        server.kill()
        server.wait()


def test_a_runs_worker_whose_server_died_interrupts_its_repair_and_leaves(store, demo):
    """The same for a repair: its server (a stand-in process that started the runs worker) is killed while a
    long repair computes; the worker notices within its heartbeat, stops the repair between two steps, records
    it as interrupted (not failed, not finished for nobody) and leaves; the queue's next run is not started."""
    rid = runs.submit_run(store, demo, "cpt", dict(LONG_RUN), ALICE, start_worker=False)
    after = runs.submit_run(store, demo, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from core.app import jobs; from core.app.store import Store;"
         " jobs.ensure_worker(Store(sys.argv[1]), 'runs'); time.sleep(3600)", str(store.home)],
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    try:
        wait_for(lambda: len(store.progress(rid)) >= 1, timeout=180)
        worker = store.run(rid)["worker_pid"]
        server.kill()
        server.wait()
        wait_for(lambda: _status(store, rid) != "running", timeout=120)
        assert _status(store, rid) == "interrupted", store.run(rid)["error"]
        wait_for(lambda: not pid_alive(worker), timeout=60)
        assert _status(store, after) == "queued"
    finally:
        server.kill()
        server.wait()
