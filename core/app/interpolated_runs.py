"""Strength after the fact on the Review page: preview a finished repair at θ + α·δ, save an α as a run.

α = 0 is the old model, α = 1 the repair (PAINT-style interpolation, :mod:`core.engine.weight_interpolation`).
The task worker evaluates the interpolated model once per (run, α) on the run's evaluation rows and
writes the result to ``<run folder>/alpha/a<α·1000>.json`` (:meth:`core.engine.runfolder.RunFolder.preview_file`): the run's metrics with ``after`` and the
comparison counts recomputed, the counterexamples fixed, and the new answers, so moving the slider
back to a value seen before is a file read. α = 1 is the run itself and needs no computation.

Saving an α makes a new finished run (its own bundle θ + α·δ, α·δ, metrics, predictions) whose
config and request say it interpolates run X at α; it is approved like any other run.

Page side: no torch. The computations are :func:`core.app.compute.alpha_preview` and
:func:`core.app.compute.save_alpha_run`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from core.app import jobs
from core.app.accounts import User, require
from core.app.runs import run_metrics
from core.app.store import Store
from core.engine.runfolder import RunFolder
from core.errors import UserError

ALPHA_STEP = 0.05  # the slider's step: 21 values, each computed once
# The values below 1, nearest the repair first: computed in the background once Review shows a run.
GRID = [round(i * ALPHA_STEP, 4) for i in range(round(1 / ALPHA_STEP) - 1, -1, -1)]


def snap(alpha: float) -> float:
    """α checked and rounded to the slider's grid, so that one α has one cache file."""
    a = float(alpha)
    if math.isnan(a) or not 0.0 <= a <= 1.0:
        raise UserError(f"the strength α must lie between 0 and 1, not {alpha}", "alpha_range", alpha=str(alpha))
    return round(round(a / ALPHA_STEP) * ALPHA_STEP, 4)


def preview_file(run: dict, alpha: float) -> Path:
    return RunFolder(run["out_dir"]).preview_file(alpha)


def can_interpolate(run: dict) -> bool:
    """A finished run with a mergeable model and its per-image answers (side tuning has no θ')."""
    folder = RunFolder(run["out_dir"])
    return run["status"] == "done" and folder.has_model() and folder.has_predictions()


def interpolation_of(run: dict) -> dict | None:
    """``{"from_run", "alpha"}`` when the run was saved from another at a lower strength, else None."""
    return run["config"].get("interpolation")


def preview(
    store: Store, run_id: int, alpha: float, actor: str, on_wait: Callable[[float], None] | None = None
) -> dict:
    """The run seen at strength α: ``{"alpha", "metrics", "after", "counterexamples_fixed"}``.

    ``after`` is None at α = 1 (the run's own answers); otherwise the interpolated model's answers for
    the rows of the run's ``predictions.csv``. Computed by the task worker once per (run, α)."""
    a = snap(alpha)
    run = store.run(run_id)
    if run is None or not can_interpolate(run):
        raise UserError("this run has no repaired model to weaken", "alpha_no_model")
    if a == 1.0:
        m = run_metrics(store, run_id)
        return {"alpha": 1.0, "metrics": m, "after": None, "counterexamples_fixed": m.get("counterexamples_fixed")}
    f = preview_file(run, a)
    if not f.is_file():
        jobs.compute(store, "alpha_preview", {"run_id": run_id, "alpha": a}, actor, run["project_id"], on_wait)
    return json.loads(f.read_text(encoding="utf-8"))


def missing(run: dict) -> list[float]:
    """The slider's values whose preview is not on disk yet."""
    return [a for a in GRID if not preview_file(run, a).is_file()]


def prefetch(store: Store, run_id: int, actor: str) -> bool:
    """Have the task worker compute every α of the slider for a run in the background (one
    ``alpha_grid`` task, which gives way to any other task and is submitted again by the next page
    run), so that moving the slider is a file read. Returns whether any value is still missing."""
    run = store.run(run_id)
    if not can_interpolate(run) or not missing(run):
        return False
    if not any(p.get("run_id") == run_id for p in store.pending_tasks("alpha_grid")):
        store.submit_task("alpha_grid", {"run_id": run_id}, actor, run["project_id"])
        jobs.ensure_worker(store, "tasks")
    return True


def save_as_run(store: Store, run_id: int, alpha: float, actor: User) -> int:
    """Save the run at strength α as a new finished run (a curator's action); returns its id."""
    require(store, actor, "curator", "save_alpha", store.run(run_id)["project_id"])
    a = snap(alpha)
    if a in (0.0, 1.0):
        raise UserError(
            "choose a strength between 0 and 1: α = 0 is the old model and α = 1 is this repair", "alpha_save_ends"
        )
    run = store.run(run_id)
    return int(
        jobs.compute(store, "save_alpha_run", {"run_id": run_id, "alpha": a}, actor, run["project_id"])["run_id"]
    )
