"""The job runner: a real worker process claims queued runs, reports progress, honours cancel, and a
run whose worker dies is marked interrupted. Waits poll the store; nothing asserts on time."""

from __future__ import annotations

import os
import signal

import pytest

from core.app import jobs, projects, runs
from core.app.i18n import error_text
from core.app.store import Store
from core.errors import UserError
from tests.wb_helpers import FAST_RUN, label_top, seed_demo_cache, wait_for

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
    pid = projects.open_demo(store, "alice")
    label_top(store, pid, 8)
    return pid


def _status(store, rid):
    return store.run(rid)["status"]


def test_worker_runs_queued_jobs_in_order_with_progress(store, demo):
    first = runs.submit_run(store, demo, "cpt", dict(FAST_RUN), "alice")
    second = runs.submit_run(store, demo, "cpt", {**FAST_RUN, "strength": 10000.0}, "bob")
    wait_for(lambda: _status(store, second) in ("done", "failed"), timeout=300)
    for rid in (first, second):
        run = store.run(rid)
        assert run["status"] == "done", run["error"]
        assert run["device"]  # "CPU" or the GPU's name
        assert store.progress(rid) and runs.run_metrics(store, rid)["after"]["groups"]
    assert store.run(first)["started_at"] <= store.run(second)["started_at"]
    done = [e for e in store.audit_events(demo) if e["action"] == "run_done"]
    assert [e["detail"]["run_id"] for e in done] == [first, second]
    assert done[1]["actor"] == "bob" and "kept_decisions" in done[1]["detail"]
    assert len(store.live_workers(queue="runs")) == 1  # one repair worker served both runs


def test_cancel_stops_a_running_job(store, demo):
    rid = runs.submit_run(store, demo, "cpt", dict(LONG_RUN), "alice")
    wait_for(lambda: len(store.progress(rid)) >= 3, timeout=180)
    runs.cancel_run(store, rid, "alice")
    wait_for(lambda: _status(store, rid) != "running", timeout=60)
    assert _status(store, rid) == "cancelled"
    steps = [p["step"] for p in store.progress(rid)]
    assert max(steps) < LONG_RUN["max_steps"]
    assert not (store.home / "artifacts" / "runs" / str(rid) / "metrics.json").exists()


def test_killed_worker_leaves_an_interrupted_run(store, demo):
    rid = runs.submit_run(store, demo, "cpt", dict(LONG_RUN), "alice")
    wait_for(lambda: len(store.progress(rid)) >= 1, timeout=180)
    worker_pid = store.run(rid)["worker_pid"]
    os.kill(worker_pid, signal.SIGKILL)
    jobs._spawned[(str(store.home), "runs")].wait(30)  # reap it, as the server's next poll would
    assert jobs.recover_interrupted(Store(store.home)) == [rid]
    assert _status(store, rid) == "interrupted"
    assert "run_interrupted" in [e["action"] for e in store.audit_events(demo)]


def test_terminated_worker_marks_its_run_interrupted_itself(store, demo):
    rid = runs.submit_run(store, demo, "cpt", dict(LONG_RUN), "alice")
    wait_for(lambda: len(store.progress(rid)) >= 1, timeout=180)
    os.kill(store.run(rid)["worker_pid"], signal.SIGTERM)
    wait_for(lambda: _status(store, rid) != "running", timeout=60)
    assert _status(store, rid) == "interrupted"


def test_queued_runs_resume_when_no_worker_is_alive(store, demo):
    rid = runs.submit_run(store, demo, "cpt", dict(FAST_RUN), "alice", start_worker=False)
    assert store.live_workers(queue="runs") == []
    assert runs.resume_queued(store) is True
    wait_for(lambda: _status(store, rid) == "done", timeout=300)
    assert runs.resume_queued(store) is False


def test_a_task_error_keeps_its_message_key_across_the_worker(store):
    """A UserError raised in the task worker reaches the page with its English text, its message key
    and its parameters, so the page can show it in Japanese."""
    with pytest.raises(UserError) as caught:
        jobs.compute(store, "alpha_preview", {"run_id": 0, "alpha": 2.0}, "alice")
    assert "between 0 and 1" in str(caught.value)
    assert caught.value.key == "alpha_range" and caught.value.params == {"alpha": "2.0"}
    assert error_text(caught.value, "ja") == "強さ α は 0 から 1 の間にしてください（2.0 は範囲外です）"
