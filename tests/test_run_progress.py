"""What the Repair page says about a running repair (core/app/runs.py, docs/WORKBENCH.md): its phase, and a
time left only where it is measured from the repair's own step (or trial) times."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from core.app import runs
from core.engine.events import AUTO_PHASE, StepEvent, StepStats
from core.engine.guard import CheckGuard


def _step(step: int, elapsed: float, max_steps: int = 200) -> StepEvent:
    return StepEvent(step, max_steps, StepStats(1.0, 1.0, 0.0), 3, 8, None, None, elapsed, "cpu")


def test_the_phase_follows_the_run_and_cancelling_shows_at_once():
    running = {"status": "running", "cancel_requested": 0}
    assert runs._phase({"status": "queued", "cancel_requested": 0}, [], None) == "queued"
    assert runs._phase(running, [], None) == "preparing"  # the worker loads the model and images
    assert runs._phase(running, [], {"done": 0, "total": 9}) == "choosing"
    assert runs._phase(running, [_step(1, 0.5)], None) == "tuning"
    assert runs._phase({**running, "cancel_requested": 1}, [_step(1, 0.5)], None) == "cancelling"
    assert runs._phase({"status": "cancelled", "cancel_requested": 1}, [_step(1, 0.5)], None) == "cancelled"


def test_the_runs_table_says_cancelling_for_a_running_run_asked_to_stop():
    assert runs.shown_status({"status": "running", "cancel_requested": 0}) == "running"
    assert runs.shown_status({"status": "running", "cancel_requested": 1}) == "cancelling"
    # Once the worker has stopped it, or a queued one cancelled at once: the status it ended with.
    assert runs.shown_status({"status": "cancelled", "cancel_requested": 1}) == "cancelled"
    assert runs.shown_status({"status": "done", "cancel_requested": 1}) == "done"  # it ended before the request
    assert runs.shown_status({"status": "queued", "cancel_requested": 0}) == "queued"


def test_the_time_left_is_measured_from_the_latest_steps_and_is_an_upper_bound():
    # A slow first step (warm-up) and then 0.5 s per step: the time left is not inflated by the warm-up.
    steps = [_step(1, 60.0)] + [_step(s, 60.0 + 0.5 * (s - 1)) for s in range(2, 41)]
    assert runs._step_eta(steps[:4]) is None  # too few steps measured yet
    assert runs._step_eta(steps) == 0.5 * (200 - 40)
    # The rate over the whole run (elapsed / step) would say about four times as long.
    assert steps[-1].elapsed_s / 40 * 160 > 3.5 * runs._step_eta(steps)


def test_the_search_of_automatic_strength_has_a_measured_time_left():
    rows = [{"phase": AUTO_PHASE, "done": 0, "total": 10, "t_s": 4.0}, {"phase": AUTO_PHASE, "done": 2, "t_s": 24.0}]
    assert runs._auto_eta(rows, 2, 10) == 24.0 / 2 * 8
    assert runs._auto_eta(rows[:1], 0, 10) is None  # no trial has ended yet
    assert runs._auto_eta([{"phase": AUTO_PHASE, "done": 2}], 2, 10) is None  # rows of earlier versions


def test_under_the_check_rule_the_time_left_runs_to_where_the_patience_ends():
    """A guarded run stops once its check split has not improved for the guard's patience: the time left is
    measured to that step (``stop_by``), not to max_steps, which such a run rarely reaches."""
    steps = [_step(s, 0.5 * s) for s in range(1, 41)]
    guarded = [dataclasses.replace(e, stop_by=70) for e in steps]
    assert runs._step_eta(guarded) == 0.5 * (70 - 40)
    assert runs._step_eta(steps) == 0.5 * (200 - 40)  # other rules: up to max_steps
    # Evaluating and writing the result is taken to cost a share of what preparing did.
    assert runs._step_eta(guarded, prepare_s=9.0) == 0.5 * (70 - 40) + runs.FINISH_SHARE * 9.0
    # The last step done: what is left of that, from the time since the last step, then unknown (not "0 s").
    done = [dataclasses.replace(e, stop_by=40) for e in steps]
    assert runs._step_eta(done, prepare_s=9.0, since_last_s=2.0) == pytest.approx(runs.FINISH_SHARE * 9.0 - 2.0)
    assert runs._step_eta(done, prepare_s=9.0, since_last_s=12.0) is None
    assert runs._step_eta(done) is None
    again = StepEvent.from_json(guarded[-1].to_json())
    assert again.stop_by == 70  # through the progress table


def test_preparing_and_the_time_since_the_last_step_come_from_the_rows_and_the_start():
    start = datetime.now(UTC) - timedelta(seconds=30)
    run = {"started_at": start.strftime("%Y-%m-%dT%H:%M:%SZ")}
    steps = [_step(1, 0.4), _step(2, 0.8)]
    rows = [{"step": 1, "t_s": 12.4}, {"step": 2, "t_s": 12.8}]
    prepare, since = runs._step_times(run, rows, steps)
    assert prepare == pytest.approx(12.0) and 30 - 12.8 - 1.5 < since < 30 - 12.8 + 1.5  # started_at: whole seconds
    assert runs._step_times(run, [{"step": 1}, {"step": 2}], steps) == (None, None)  # rows of earlier versions


def test_the_guard_says_where_its_patience_ends():
    g = CheckGuard.__new__(CheckGuard)  # only the counters matter here: no check split is scored
    g.every, g.patience, g.since_best = 5, 12, 0
    assert g.stop_by(10, 0, 200) == 10 + 12 * 5  # a new best at step 10: twelve more checks
    assert g.stop_by(12, 0, 200) == 70  # between checks: the same checks ahead
    g.since_best = 11
    assert g.stop_by(65, 0, 200) == 70  # one check left
    assert g.stop_by(65, 100, 200) == 100  # not before min_steps
    g.since_best = 0
    assert g.stop_by(190, 0, 200) == 200  # at most max_steps
