"""What the Repair page says about a running repair (core/app/runs.py, docs/WORKBENCH.md): its phase, and a
time left only where it is measured from the repair's own step (or trial) times."""

from __future__ import annotations

from core.app import runs
from core.engine.events import AUTO_PHASE, StepEvent, StepStats


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
