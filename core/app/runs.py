"""Repair runs: the method catalogue, submitting, progress and results (the verdict: :mod:`core.app.verdict`).

A run is submitted as a typed :class:`core.engine.request.RunRequest`, checked here and stored with
the run; the worker (:mod:`core.app.worker`) rebuilds it and runs it. Pages read the run's progress
rows and, once it is done, its ``metrics.json`` and ``predictions.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from core.app import jobs
from core.app.accounts import User, acting, require
from core.app.budget import REPAIR, check_budget, folder_bytes
from core.app.pool import chosen_set, items_file
from core.app.projects import project_summary
from core.app.store import ACTIVE_RUN_STATES, IN_QUEUE_RUN_STATES, RunStatus, Store
from core.engine.configs import SPECS, config_schema, setting_help_key, setting_key
from core.engine.events import AUTO_PHASE, AutoTrialStarted, StepEvent, event_from_json
from core.engine.request import DataRefs, RunRequest
from core.engine.results import Restored, RestoreRule, RunMetrics, Stop, StopReason
from core.engine.runfolder import RunFolder
from core.errors import UserError
from core.formats.datasets import dataset_root

DEFAULT_METHOD = "cpt"


def method_choices() -> list[tuple[str, str]]:
    """Every method as (name, the translation key of its title)."""
    return [(name, spec.title_key) for name, spec in SPECS.items()]


def method_schema(method: str) -> list[dict]:
    """A method's settings (:func:`core.engine.configs.config_schema`), each with the translation keys of
    its label (``label_key``) and help (``help_key``)."""
    return [{**f, "label_key": setting_key(f["name"]), "help_key": setting_help_key(f["name"])}
            for f in config_schema(method)]  # fmt: skip


def submit_run(store: Store, project_id: int, method: str, config: dict, actor: User, start_worker: bool = True) -> int:
    """Queue a repair of the project's base model on the chosen counterexamples. ``config`` is the
    method's settings (``strength`` may be ``"auto"``); they are checked into a typed run request here,
    before anything is saved. The counterexamples are copied into the run's folder, so later label
    edits do not change a queued run. The audit row records who labelled how many of them, for the
    four-eyes rule (:func:`core.app.decisions.responsible`)."""
    require(store, actor, "curator", "start_run", project_id)
    s = project_summary(store, project_id)
    if not s["active_model"]:
        raise UserError("open the demo or upload a model first", "need_model")
    chosen = chosen_set(store, project_id)
    if not chosen:
        raise UserError("choose at least one counterexample on the Counterexamples page first", "need_counterexamples")
    request = RunRequest.build(method, config, DataRefs(counterexamples=""))
    strength_label = (
        "auto" if request.is_auto else (f"{request.strength:g}" if request.strength is not None else "default")
    )
    model_id = s["base_model_id"]
    # A run stores a copy of its counterexamples, the repaired model and the change δ (each about the
    # size of the model): refused now, before anything is written, if that would not fit the budget.
    model_bytes = folder_bytes(store.model(model_id)["path"])
    check_budget(store, 2 * model_bytes + sum(_file_bytes(c["file"]) for c in chosen), REPAIR)
    run_dir = store.artifact_dir("runs", "incoming")
    run_id = store.create_run(
        project_id, model_id, method, request.settings(), strength_label, len(chosen), run_dir, actor
    )
    try:
        # Materialise the counterexample set before the worker can see the run.
        folder = RunFolder(store.artifact_dir("runs", str(run_id)))
        data = _run_data(store, s, _copy_counterexamples(chosen, folder))
        with acting(store, actor, "curator", "start_run", project_id):  # still allowed, as it is queued
            store.set_run_request(run_id, dataclasses.replace(request, data=data).to_json())
            store.queue_run(run_id, folder.root)
    except BaseException as exc:
        # Whatever went wrong while preparing, the run ends as failed with its reason; none stays 'preparing'.
        reason = str(exc) if isinstance(exc, UserError) else f"preparing the run failed: {type(exc).__name__}: {exc}"
        store.finish_run(run_id, "failed", error=reason)
        store.audit(actor, "run_failed", project_id, run_id=run_id, error=reason)
        if isinstance(exc, OSError):  # a counterexample file gone or a full disk: say so on the page
            raise store.os_failure(exc, UserError(reason)) from None
        raise
    store.audit(actor, "run_queued", project_id, run_id=run_id, method=method, config=request.settings(),
                counterexamples=len(chosen), labelled_by=_labelled_by(chosen))  # fmt: skip
    if start_worker:
        jobs.ensure_worker(store)
    return run_id


def _copy_counterexamples(chosen: list[dict], folder: RunFolder) -> Path:
    """The chosen counterexamples copied into the run's folder as a manifest dataset; returns its folder."""
    ce = folder.counterexamples_dir
    (ce / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, c in enumerate(chosen):
        rel = f"images/ce_{i:04d}{Path(c['path']).suffix.lower()}"
        shutil.copyfile(c["file"], ce / rel)
        rows.append(
            {"path": rel, "label": c["label"], "attribute": c["attribute"], "source": c["path"], "labelled_by": c["by"]}
        )
    with open(ce / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "attribute", "source", "labelled_by"])
        w.writeheader()
        w.writerows(rows)
    return ce


def _run_data(store: Store, summary: dict, counterexamples: Path) -> DataRefs:
    """Where a run's images are: its own counterexamples, the project's evaluation set, pool and reference images."""
    pool, reference = summary["pool"], summary["reference"]
    return DataRefs(
        counterexamples=str(counterexamples),
        evaluation=summary["eval"]["path"] if summary["eval"] else None,
        unlabeled_root=pool["path"] if pool else None,
        unlabeled_items=str(items_file(store, pool["id"])) if pool else None,
        reference_root=reference["path"] if reference else None,
        reference_items=str(items_file(store, reference["id"])) if reference else None,
    )


def _labelled_by(chosen: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in chosen:
        counts[c["by"]] = counts.get(c["by"], 0) + 1
    return counts


def _file_bytes(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0  # a missing file is reported when the run is prepared


def resume_queued(store: Store) -> bool:
    """End the work of dead workers (:func:`core.app.jobs.reap_dead_workers`) and start a worker if
    runs are waiting and none is alive (after a server restart, or if a worker died). Cheap when
    nothing waits and every worker is alive: a few small queries. Returns whether runs are waiting."""
    jobs.reap_dead_workers(store, restart=False)
    if not store.has_queued_runs():
        return False
    jobs.ensure_worker(store)
    return True


def cancel_run(store: Store, run_id: int, actor: User) -> None:
    """Ask a run to stop. A queued run is cancelled at once; a running one within about a second."""
    run = store.run(run_id)
    with acting(store, actor, "curator", "cancel_run", run["project_id"] if run else None) as actor:
        run = store.run(run_id)
        if run is None or run["status"] not in IN_QUEUE_RUN_STATES:
            return
        store.set_run(run_id, cancel_requested=1)
        if run["status"] == "queued":
            store.finish_run(run_id, "cancelled", stop_reason=StopReason.CANCELLED.value)
        store.audit(actor, "run_cancel_requested", run["project_id"], run_id=run_id)


CANCELLING = "cancelling"  # a running repair asked to stop, until its worker has stopped it


def shown_status(run: dict) -> str:
    """A run's status as the runs table says it (``status_<it>``): ``cancelling`` for a running run that was
    asked to stop (its worker stops it after the current step), else its stored status."""
    if run["status"] == RunStatus.RUNNING and run.get("cancel_requested"):
        return CANCELLING
    return run["status"]


ETA_MIN_STEPS = 5  # steps measured before a time left is shown
ETA_WINDOW = 20  # the latest steps whose measured times give the time per step
# Evaluating and writing the result after the last step, as a share of what preparing took (both predict the
# evaluation set; preparing also loads and decodes): measured on demo repairs on 2 cores, 2026-12-07, the
# finishing took 0.2–0.7 of the preparing (2 s of 10, 9 s of 13, 9 s of 16).
FINISH_SHARE = 0.5


def _step_eta(
    steps: list[StepEvent], prepare_s: float | None = None, since_last_s: float | None = None
) -> float | None:
    """How long the run has left: the time per step measured over the latest steps (the first steps' warm-up
    left out) times the steps left to where the run stops, plus the time to evaluate and write its result.

    The run stops, at the latest, where its rule allows: under the check rule where the check split's patience
    runs out unless it improves first (``stop_by``), else at ``max_steps``. Evaluating and writing the result
    is taken to cost FINISH_SHARE of what preparing did (``prepare_s``: both predict the evaluation set); once the
    last step is done, the time since it (``since_last_s``) is taken off, and when that runs out the time left
    is unknown (None) rather than a wrong "0". None until ETA_MIN_STEPS steps are measured."""
    if len(steps) < ETA_MIN_STEPS or not steps[-1].max_steps or steps[-1].elapsed_s is None:
        return None
    recent = steps[-ETA_WINDOW:]
    per_step = (recent[-1].elapsed_s - recent[0].elapsed_s) / max(1, len(recent) - 1)
    end = steps[-1].stop_by if steps[-1].stop_by is not None else steps[-1].max_steps
    steps_left = max(0, end - steps[-1].step)
    finish = FINISH_SHARE * prepare_s if prepare_s is not None else None
    if steps_left:
        return per_step * steps_left + (finish or 0.0)
    if finish is None or since_last_s is None:
        return None
    left = finish - since_last_s
    return left if left > 0 else None


def _step_times(run: dict | None, step_rows: list[dict], steps: list[StepEvent]) -> tuple[float | None, float | None]:
    """(seconds the worker took before the first step, seconds since the latest step) from the rows' ``t_s``
    (seconds since the run was claimed; rows of earlier versions have none) and the run's start."""
    if not step_rows or step_rows[0].get("t_s") is None or steps[0].elapsed_s is None:
        return None, None
    prepare = max(0.0, step_rows[0]["t_s"] - steps[0].elapsed_s)
    since = None
    if run and run.get("started_at") and step_rows[-1].get("t_s") is not None:
        started = datetime.fromisoformat(run["started_at"])
        since = (datetime.now(started.tzinfo) - started).total_seconds() - step_rows[-1]["t_s"]
    return prepare, since


def _auto_eta(rows: list[dict], done: int, total: int) -> float | None:
    """How long automatic strength's search has left, from the measured time of its trials so far (each row
    carries ``t_s``, the seconds since the repair started); None before the first trial has ended."""
    timed = [r["t_s"] for r in rows if r.get("phase") == AUTO_PHASE and r.get("t_s") is not None]
    if not done or not timed:
        return None
    return timed[-1] / done * max(0, total - done)


def _phase(run: dict | None, steps: list[StepEvent], auto: dict | None) -> str:
    """Where a repair stands, as the Repair page says it: queued, preparing (the worker loads the model and
    the images), choosing (automatic strength's search), tuning, cancelling (asked to stop, not stopped
    yet), or its ended status."""
    status = run["status"] if run else "failed"
    if status not in IN_QUEUE_RUN_STATES:
        return status
    if status == "queued":
        return "queued"
    if run.get("cancel_requested"):
        return CANCELLING
    if steps:
        return "tuning"
    return "choosing" if auto else "preparing"


def run_progress(store: Store, run_id: int) -> dict:
    """Live state of a run for the Tune page: status, its ``phase`` (:func:`_phase`), training-step rows
    (without steps the kept rule undid; ``undone`` counts them), the latest step, fraction, a measured time
    left (``eta_s``, an upper bound, None until measured), and with an automatic strength the sweep's latest
    event (``auto``: which strength and fold is running, out of how many, with its own ``eta_s``). The sweep
    counts as the first part of the run's progress.

    While the run waits or runs, each call also checks that its worker is alive: a dead worker's run
    is marked failed with the cause, and the queue moves on (:func:`core.app.jobs.reap_dead_workers`)."""
    run = store.run(run_id)
    if run and run["status"] in IN_QUEUE_RUN_STATES:
        jobs.reap_dead_workers(store)
        if run["status"] == "queued":
            jobs.ensure_worker(store)  # waiting with no worker alive (it died between runs): start one
        run = store.run(run_id)
    rows = store.progress(run_id)
    events = [event_from_json(row) for row in rows]
    auto_events = [e for e in events if not isinstance(e, StepEvent)]
    steps = [e for e in events if isinstance(e, StepEvent)]
    # A step the kept rule undid (it changed too many reference answers) is not part of the curve: the
    # run went on from the state before it, with half the step size.
    hist = [e for e in steps if not e.backtracked]
    last = steps[-1].to_json() if steps else None
    if steps and steps[-1].backtracked:  # the run holds the state before that step
        last = {**last, "fixed": hist[-1].fixed if hist else None}
    running = [e for e in auto_events if isinstance(e, AutoTrialStarted)]  # "about to run strength i, fold j"
    auto = None
    if running:
        done, total = auto_events[-1].done, auto_events[-1].total
        auto = {**running[-1].to_json(), "done": done, "total": total, "eta_s": _auto_eta(rows, done, total)}
    frac, eta = 0.0, None
    if last and last.get("max_steps"):
        step_rows = [r for r in rows if r.get("phase") != AUTO_PHASE]
        frac, eta = min(1.0, last["step"] / last["max_steps"]), _step_eta(steps, *_step_times(run, step_rows, steps))
    elif auto and auto.get("total"):
        frac = min(1.0, auto["done"] / auto["total"])
    if run and run["status"] == "done":
        frac, eta = 1.0, 0.0
    history = [e.to_json() for e in hist]
    return {"run": run, "phase": _phase(run, steps, auto), "history": history, "last": last, "auto": auto,
            "fraction": frac, "eta_s": eta, "undone": len(steps) - len(hist)}  # fmt: skip


def active_runs(store: Store, project_id: int) -> list[dict]:
    return [r for r in store.runs(project_id) if r["status"] in ACTIVE_RUN_STATES]


def run_metrics(store: Store, run_id: int) -> dict | None:
    """A finished run's ``metrics.json`` as a dict (:meth:`core.engine.results.RunMetrics.to_json`), or None."""
    m = run_result(store, run_id)
    return None if m is None else m.to_json()


def run_result(store: Store, run_id: int) -> RunMetrics | None:
    """A finished run's metrics, or None while it is not done (or wrote none)."""
    run = store.run(run_id)
    if not run or run["status"] != "done":
        return None
    return RunFolder(run["out_dir"]).metrics()


def run_stop(run: dict) -> Stop | None:
    """How a run stopped, from its row: the reason and the step it went back to (rows of earlier
    versions hold the English line of :meth:`core.engine.results.Stop.describe`). None when it has
    no known reason (it never ran, or it failed)."""
    text = run.get("stop_reason")
    if not text:
        return None
    try:
        stop = Stop.from_text(text)
    except ValueError:
        return None
    if stop.restored is None and run.get("restored_step") is not None:
        rule = RestoreRule.HELDOUT if run["config"].get("stop_rule") == "heldout" else RestoreRule.KEPT
        return Stop(stop.reason, Restored(rule, run["restored_step"]))
    return stop


def stop_words(run: dict, t: Callable[..., str]) -> str:
    """How a run stopped, in the language of ``t``: its reason and the step it went back to (:func:`run_stop`);
    a line this version cannot read is shown as stored."""
    stop = run_stop(run)
    if stop is None:
        return run.get("stop_reason") or ""
    words = t(stop.reason.key)
    return words + (" · " + t("stop_restored", step=stop.restored_step) if stop.restored is not None else "")


def decision_state(run: dict, project: dict) -> str:
    """How a run stands now: ``in_use`` (approved and its model is the active one), ``rolled_back``
    (approved, but the project went back to another model since), ``approved`` (approved, model not
    recorded), ``rejected`` or ``none``."""
    if run.get("decision") == "approved":
        if run.get("repaired_model_id") and run["repaired_model_id"] == project.get("active_model_id"):
            return "in_use"
        return "rolled_back" if run.get("repaired_model_id") else "approved"
    return run.get("decision") or "none"


def model_in_use(store: Store, project_id: int) -> int | None:
    """The run whose repaired model is the project's active model now, or None for the original."""
    p = store.project(project_id)
    if not p or not p["active_model_id"] or p["active_model_id"] == p["base_model_id"]:
        return None
    return next((r["id"] for r in store.runs(project_id) if r.get("repaired_model_id") == p["active_model_id"]), None)


def eval_root(store: Store, run: dict) -> Path:
    """The folder the paths in a run's ``predictions.csv`` are relative to: its project's evaluation set
    (a named version has the same rows and paths)."""
    ev = store.dataset(store.project(run["project_id"])["eval_dataset_id"])
    return dataset_root(Path(ev["path"]))


def prediction_rows(store: Store, run_id: int) -> list[dict]:
    """The rows of a run's ``predictions.csv`` with class indices: path, label, attribute, before, after."""
    run = store.run(run_id)
    rows = RunFolder(run["out_dir"]).predictions()
    if not rows:
        return []
    names = store.model(run["model_id"])["meta"]["class_names"]
    return [
        {
            "path": r.path,
            "label": _label_index(r.label, names),
            "attribute": r.attribute,
            "before": r.before,
            "after": r.after,
        }  # fmt: skip
        for r in rows
    ]


def changed_predictions(
    store: Store, run_id: int, after: list[int] | None = None, before: list[int] | None = None
) -> list[dict]:
    """Evaluation images whose prediction changed: fixed (now right) or broken (now wrong).

    ``after``: other new answers for the same rows (a preview of the run at a lower strength,
    :mod:`core.app.interpolated_runs`) instead of the run's own; ``before``: other old answers (the model
    in use now, :mod:`core.app.baseline`) instead of the original model's."""
    run = store.run(run_id)
    rows = prediction_rows(store, run_id)
    if not rows:
        return []
    for answers in (after, before):
        if answers is not None and len(answers) != len(rows):
            raise ValueError(f"{len(answers)} answers for {len(rows)} rows")
    root = eval_root(store, run)
    names = store.model(run["model_id"])["meta"]["class_names"]
    out = []
    for k, r in enumerate(rows):
        old = r["before"] if before is None else int(before[k])
        new, label = (r["after"] if after is None else int(after[k])), r["label"]
        if old == new:
            continue
        out.append(
            {
                "file": str(root / r["path"]),
                "label": names[label],
                "attribute": r["attribute"],
                "before": names[old],
                "after": names[new],
                "fixed": new == label,
                "broken": old == label,
            }
        )
    out.sort(key=lambda c: (not c["fixed"], c["label"]))
    return out


def _label_index(raw: str, names: list[str]) -> int:
    return names.index(raw) if raw in names else int(raw)


def tradeoff_points(store: Store, project_id: int) -> list[dict]:
    """One point per finished run: worst-group accuracy vs kept decisions, labelled by strength."""
    pts = []
    for r in store.runs(project_id):
        m = run_result(store, r["id"])
        if not m:
            continue
        pts.append(
            {
                "run_id": r["id"],
                "strength": r["strength_label"],
                "chosen_strength": m.strength,
                "worst_group": m.after.worst_group_accuracy,
                "kept": m.comparison.kept_decisions,
                "accuracy": m.after.accuracy,
                "decision": r["decision"],
            }
        )
    return pts
