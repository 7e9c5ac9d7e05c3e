"""The optional MLflow model registry, page side (docs/FORMATS.md): whether it is on (an admin setting), where it
is (``MLFLOW_TRACKING_URI``, else a SQLite store under the workbench home), and asking the task worker to bring
it up to date after an approval or a rollback. Nothing here imports mlflow or waits for it: the worker does the
work (:mod:`core.app.mlflow_registry`), so an unreachable registry never blocks an approval. A failed update is
audited (``registry_failed``), shown on the Review page and queued again when the page is next shown.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

from core.app import jobs
from core.app.accounts import Role, User, require, setting
from core.app.store import Queue, Store

REGISTRY_SETTING = "mlflow_registry"
URI_ENV = "MLFLOW_TRACKING_URI"
ALIAS = "champion"  # the registry alias of the project's model in use
TASK = "mlflow_sync"
DONE, FAILED = "registry_updated", "registry_failed"
RETRY_AFTER_S = 60


def registry_enabled(store: Store) -> bool:
    return setting(store, REGISTRY_SETTING) == "1"


def set_registry_enabled(store: Store, admin: User, on: bool) -> None:
    """Turn registering approved repairs in MLflow on or off (an admin; audited)."""
    require(store, admin, Role.ADMIN, "change_settings")
    if registry_enabled(store) == on:
        return
    store.set_setting(REGISTRY_SETTING, "1" if on else "0")
    store.audit(admin, "mlflow_registry_on" if on else "mlflow_registry_off", None, uri=tracking_uri(store))


def tracking_uri(store: Store) -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite store in the workbench home's ``mlflow/`` folder."""
    return os.environ.get(URI_ENV) or f"sqlite:///{(store.home / 'mlflow' / 'mlflow.db').resolve()}"


def model_name(project: dict) -> str:
    """The registered model's name for a project: its name, made safe, and its id (names must be unique)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", project["name"]).strip("-")[:60] or "project"
    return f"{slug}-{project['id']}"


def queue_sync(store: Store, project_id: int, actor: str) -> bool:
    """Ask the task worker to register the project's model in use and move the alias to it, without waiting;
    False (and nothing queued) when the registry is off or an update is already waiting."""
    if not registry_enabled(store):
        return False
    if any(p.get("project_id") == project_id for p in store.pending_tasks(TASK)):
        return False
    store.submit_task(TASK, {"project_id": project_id}, actor, project_id)
    jobs.ensure_worker(store, Queue.TASKS)
    return True


def last_update(store: Store, project_id: int) -> dict | None:
    """The latest ``registry_updated`` or ``registry_failed`` audit row of a project, or None."""
    rows = [e for e in store.audit_events(project_id) if e["action"] in (DONE, FAILED)]
    return rows[-1] if rows else None


def retry_if_failed(store: Store, project_id: int, actor: str) -> dict | None:
    """The last update when it failed, else None; queued again (if the registry is still on) once it is
    ``RETRY_AFTER_S`` old, so that a page shown again and again does not hammer a registry that is down."""
    last = last_update(store, project_id)
    if last is None or last["action"] != FAILED:
        return None
    age = datetime.now(UTC) - datetime.strptime(last["ts"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if age.total_seconds() >= RETRY_AFTER_S:
        queue_sync(store, project_id, actor)
    return last
