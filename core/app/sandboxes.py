"""Demo sandboxes: every demo session works on its own copy of the demo (docs/WORKBENCH.md, "Demo sandboxes").

The demo project is built once per store by the task worker (:func:`core.app.compute.open_demo`: the model
registered, evaluated, its pool predicted), at server start (:func:`at_server_start`) or on the first "Open
the demo". It is the *template*: what it was as built (its base model, its first evaluation set, pool and
reference images, and the model's answers on them) is what a sandbox copies, never its labels, runs, named
groups or later uploads. A sandbox is a new project row bound to the demo session's token
(:class:`core.app.store.sandbox_rows.SandboxRows`) with its own rows and its own copies of the small files
(the model, the image lists, the evaluation and pool answers: a few hundred kB); the images themselves are
the demo's, shared read-only as before. Making one runs no model, so it takes a fraction of a second.

A demo session sees and changes only its own sandbox (:func:`core.app.accounts.require`); *Reset* gives it a
fresh one. :func:`cleanup` deletes sandboxes whose session has ended or expired, or that are older than
``$BIASREPAIR_DEMO_SANDBOX_HOURS``, with their files; it never touches the template or any other project.
No torch here: the page process calls this.
"""

from __future__ import annotations

import functools
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core import settings
from core.app import jobs
from core.app.accounts import Forbidden, User, acting, require
from core.app.budget import check_budget, folder_bytes
from core.app.pool_files import items_file, pool_predictions_path
from core.app.store import IN_QUEUE_RUN_STATES, DatasetRole, Queue, RunStatus, Store
from core.engine.results import StopReason

WORKBENCH = "workbench"  # the actor of what the workbench does by itself (building, cleaning up)
PARTS = (DatasetRole.EVAL, DatasetRole.POOL, DatasetRole.REFERENCE)


@dataclass(frozen=True)
class Template:
    """The demo project as it was built: its base model and its first dataset of each role."""

    project_id: int
    model: dict
    datasets: dict[str, dict]

    def evaluation(self, store: Store) -> dict | None:
        return store.evaluation(self.model["id"], self.datasets[DatasetRole.EVAL]["id"])

    def pool_answers(self, store: Store) -> Path:
        pool = self.datasets[DatasetRole.POOL]
        return pool_predictions_path(store, self.model["id"], pool["id"], pool["n_items"])

    def ready(self, store: Store) -> bool:
        return self.evaluation(store) is not None and self.pool_answers(store).is_file()


def template(store: Store) -> Template | None:
    """The demo project's parts as built; None before the build has registered them all."""
    p = next((p for p in store.projects() if p["is_demo"] and p["sandbox_of"] is None), None)
    if p is None or not p["base_model_id"]:
        return None
    parts = {role: rows[0] for role in PARTS if (rows := store.datasets(p["id"], role))}
    if set(parts) != set(PARTS):
        return None
    return Template(p["id"], store.model(p["base_model_id"]), parts)


def ensure_template(store: Store, actor: str) -> Template:
    """The template, built (or finished) by the task worker first when it is not ready."""
    t = template(store)
    if t is None or t.evaluation(store) is None:
        jobs.compute(store, "open_demo", {}, actor)  # waits behind a build already under way
        t = template(store)
    if not t.pool_answers(store).is_file():  # a demo built before sandboxes were
        pool = t.datasets[DatasetRole.POOL]
        jobs.compute(store, "pool_predictions", {"model_id": t.model["id"], "dataset_id": pool["id"]}, actor)
    return t


def start_template_build(store: Store) -> bool:
    """Have the task worker build the template now, without waiting; False when it is ready or under way."""
    t = template(store)
    if (t is not None and t.ready(store)) or store.pending_tasks("open_demo"):
        return False
    store.submit_task("open_demo", {}, WORKBENCH)
    jobs.ensure_worker(store, Queue.TASKS)
    return True


def open_sandbox(store: Store, actor: User) -> int:
    """The demo session's own sandbox: the one it has, or a fresh copy of the template."""
    fresh = require(store, actor, None, "open_demo")
    if not fresh.demo or fresh.session is None:
        raise Forbidden("only a demo session has a sandbox", "demo_sandbox_only", action="open_demo")
    found = store.session_sandbox(fresh.session)
    if found is not None:
        return found["id"]
    t = ensure_template(store, fresh)
    cleanup(store)
    with store.transaction():  # two tabs of one session opening at once make one sandbox
        found = store.session_sandbox(fresh.session)
        return found["id"] if found is not None else _copy(store, t, fresh)


def reset_sandbox(store: Store, actor: User) -> int:
    """Give the demo session a fresh sandbox; the old one (its labels, repairs and named groups) is deleted,
    at once, or by the cleanup once its repairs have stopped. Returns the new sandbox's id."""
    old = store.session_sandbox(actor.session) if isinstance(actor, User) and actor.session else None
    if old is None:
        store.audit_refusal(str(actor) or "anonymous", "forbidden", None, attempted="reset_demo", needs="demo")
        raise Forbidden("only a demo session has a sandbox to reset", "demo_sandbox_only", action="reset_demo")
    t = ensure_template(store, actor)
    with acting(store, actor, None, "reset_demo", old["id"]) as fresh:
        lost = what_reset_loses(store, old["id"])
        store.release_sandbox(old["id"])
        new = _copy(store, t, fresh)
        store.audit(fresh, "demo_reset", new, old_project=old["id"], **lost)
    _stop_runs(store, old["id"])
    _delete(store, old["id"])
    return new


def what_reset_loses(store: Store, project_id: int) -> dict[str, int]:
    """What a reset of this sandbox throws away: its labels, repairs and named groups."""
    return {
        "labels": len(store.labels(project_id)),
        "runs": len(store.runs(project_id)),
        "groups": len(store.named_groups(project_id)),
    }


def cleanup(store: Store, now: float | None = None) -> list[int]:
    """Delete the sandboxes whose session has ended or expired, or that are older than
    ``$BIASREPAIR_DEMO_SANDBOX_HOURS``; one with a repair or a task still going is asked to stop and left
    for a later cleanup. Returns the ids deleted."""
    now = time.time() if now is None else now
    max_age = 3600 * settings.DEMO_SANDBOX_HOURS.get()
    deleted = []
    for s in store.sandboxes(now):
        if s["live"] and now - _epoch(s["created_at"]) <= max_age:
            continue
        if s["busy"]:
            _stop_runs(store, s["id"])
        elif _delete(store, s["id"]):
            deleted.append(s["id"])
    return deleted


@functools.lru_cache(maxsize=8)
def _started(home: str) -> None:
    store = Store(home)
    cleanup(store)
    if settings.DEMO_PREBUILD.get():
        start_template_build(store)


def at_server_start(store: Store) -> None:
    """Once per server process and store: clean up old sandboxes and start building the template, so
    that the first "Open the demo" only copies it (``$BIASREPAIR_DEMO_PREBUILD=0``: build on that click)."""
    _started(str(store.home))


# ---- copying and deleting -----------------------------------------------------------------------------
def _epoch(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _template_files(store: Store, t: Template) -> list[Path]:
    model = Path(t.model["path"])
    files = [f for f in model.iterdir() if f.is_file()] + [t.pool_answers(store)]
    files += [items_file(store, t.datasets[r]["id"]) for r in (DatasetRole.POOL, DatasetRole.REFERENCE)]
    return files + [Path(t.evaluation(store)["predictions_path"])]


def _copy(store: Store, t: Template, actor: User) -> int:
    """A new sandbox for ``actor``'s session: the template's rows and small files copied, inside the caller's
    write transaction (the files of a copy that fails half-way are removed)."""
    check_budget(store, sum(f.stat().st_size for f in _template_files(store, t)), "Demo")
    pid = store.create_sandbox("Demo", actor, t.project_id, actor.session)
    made: list[Path] = []
    try:
        store.audit(actor, "open_demo", pid, sandbox_of=t.project_id)
        mid = _copy_model(store, pid, t.model, actor, made)
        ids = {role: _copy_dataset(store, pid, row, actor, made) for role, row in t.datasets.items()}
        store.set_project(pid, eval_dataset_id=ids["eval"], pool_dataset_id=ids["pool"])
        store.set_project(pid, reference_dataset_id=ids["reference"])
        ev = t.evaluation(store)
        target = store.artifact_dir("evaluations") / f"m{mid}_d{ids['eval']}.npz"
        made.append(Path(shutil.copyfile(ev["predictions_path"], target)))
        store.save_evaluation(mid, ids["eval"], ev["metrics"], target)
        n_pool = t.datasets[DatasetRole.POOL]["n_items"]
        answers = pool_predictions_path(store, mid, ids["pool"], n_pool)
        made.append(Path(shutil.copyfile(t.pool_answers(store), answers)))
    except BaseException:
        for f in made:
            shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)
        raise
    return pid


def _copy_model(store: Store, pid: int, model: dict, actor: User, made: list[Path]) -> int:
    mid = store.add_model(pid, "base", model["name"], Path(), model["meta"], model["sha256"])
    target = store.artifact_dir("models", str(mid))
    made.append(target)
    for f in Path(model["path"]).iterdir():
        if f.is_file():
            shutil.copyfile(f, target / f.name)
    store.set_model_path(mid, target)
    store.set_project(pid, base_model_id=mid, active_model_id=mid)
    # The stored files' hashes, recorded as those of the files put into this project (so they are checked).
    store.audit(actor, "upload_model", pid, model_id=mid, name=model["name"], architecture=model["meta"]["architecture"],
                sha256=model["sha256"], upload_sha256=model["sha256"], copied_from=model["id"])  # fmt: skip
    return mid


def _copy_dataset(store: Store, pid: int, row: dict, actor: User, made: list[Path]) -> int:
    """The dataset's row for the sandbox: the same (shared, read-only) images, its own image list."""
    did = store.add_dataset(pid, row["role"], row["name"], Path(row["path"]), row["sha256"], row["n_items"])
    source = items_file(store, row["id"])
    if source.is_file():
        target = items_file(store, did)
        made.append(target.parent)
        shutil.copyfile(source, target)
    store.audit(actor, f"upload_{row['role']}", pid, dataset_id=did, name=row["name"], images=row["n_items"],
                sha256=row["sha256"], copied_from=row["id"])  # fmt: skip
    return did


def _stop_runs(store: Store, project_id: int) -> None:
    """Ask a sandbox's repairs to stop (a queued one ends at once), as Cancel does."""
    for run in store.runs(project_id):
        if run["status"] in IN_QUEUE_RUN_STATES and not run["cancel_requested"]:
            store.set_run(run["id"], cancel_requested=1)
            if run["status"] == RunStatus.QUEUED:
                store.finish_run(run["id"], RunStatus.CANCELLED, stop_reason=StopReason.CANCELLED.value)
            store.audit(WORKBENCH, "run_cancel_requested", project_id, run_id=run["id"], sandbox=True)


def _delete(store: Store, project_id: int) -> bool:
    """Delete a sandbox's rows and the files named by its own ids; False when it was not deleted (not a
    sandbox, or busy). Only paths under ``artifacts/`` built from the sandbox's ids are removed."""
    owned = store.delete_sandbox(project_id)
    if owned is None:
        return False
    art = store.artifacts
    folders = [art / "models" / str(m) for m in owned["models"]] + [art / "runs" / str(r) for r in owned["runs"]]
    folders += [art / "exports" / f"run{r}" for r in owned["runs"]]
    folders += [art / "datasets" / str(d) for d in owned["datasets"]]
    folders += [f for m in owned["models"] for f in (art / "discovery").glob(f"m{m}_d*")]
    # The answers and the "More like this" features of its models on the pools; the decoded evaluation images
    # (artifacts/pixels) stay: they are the demo's images, shared with the template and every other sandbox.
    files = [
        f for m in owned["models"] for k in ("pool_predictions", "pool_features") for f in (art / k).glob(f"m{m}_d*")
    ]
    files += [Path(f) for f in owned["files"] if store.inside_home(f)]
    freed = sum(folder_bytes(f) for f in folders) + sum(f.stat().st_size for f in files if f.is_file())
    for f in folders:
        shutil.rmtree(f, ignore_errors=True)
    for f in files:
        f.unlink(missing_ok=True)
    counts = {k: len(owned[k]) for k in ("models", "runs", "datasets")}
    store.audit(WORKBENCH, "demo_sandbox_deleted", project_id, bytes_freed=freed, **counts)
    return True
