"""Projects: the store a page works on, the project it shows, and the built-in demo.

A project holds one base model, its evaluation set and candidate pool, the curator's labels and the
repair runs. Everything here reads the store; opening the demo is handed to the task worker, which
builds the demo's files once per store and registers them. A demo session opens its own copy of it
instead (:mod:`core.app.sandboxes`); nobody else is shown those copies.
"""

from __future__ import annotations

import functools
from pathlib import Path

from core.app import jobs, sandboxes
from core.app.accounts import User, require
from core.app.store import Store, home_dir
from core.errors import UserError


@functools.lru_cache(maxsize=8)
def _store_for(home: str) -> Store:
    store = Store(home)
    jobs.reap_dead_workers(store)
    return store


def get_store(home: str | Path | None = None) -> Store:
    """The store for ``home`` (default ``$BIASREPAIR_HOME``). On first use in a process, work that a
    dead worker left running is marked as failed with its cause."""
    return _store_for(str(Path(home).resolve() if home else home_dir()))


def latest_project_id(store: Store) -> int | None:
    """The newest project that is not a demo session's sandbox."""
    return next((p["id"] for p in store.projects() if p["sandbox_of"] is None), None)


def visible_projects(store: Store, user: User | None, *current: int | None) -> list[dict]:
    """The projects ``user`` picks from, newest first: a demo session its own sandbox only; anyone else every
    project but the sandboxes (those ``current`` names stay, as when an approver signs in where a demo
    session was)."""
    if user is None:
        return []
    if user.demo:
        own = store.session_sandbox(user.session) if user.session else None
        return [own] if own is not None else []
    return [p for p in store.projects() if p["sandbox_of"] is None or p["id"] in current]


def project_summary(store: Store, project_id: int) -> dict:
    """What the sidebar and every page need to know about a project, in one dict."""
    p = store.project(project_id)
    if p is None:
        raise UserError(f"project {project_id} does not exist")
    active = store.model(p["active_model_id"]) if p["active_model_id"] else None
    return {
        "project": p,
        "active_model": active,
        "base_model_id": p["base_model_id"],
        "class_names": active["meta"]["class_names"] if active else [],
        "eval": store.dataset(p["eval_dataset_id"]) if p["eval_dataset_id"] else None,
        "pool": store.dataset(p["pool_dataset_id"]) if p["pool_dataset_id"] else None,
        "reference": store.dataset(p["reference_dataset_id"]) if p["reference_dataset_id"] else None,
        "n_labels": len(store.labels(project_id)),
    }


def open_demo(store: Store, actor: User) -> int:
    """The demo project, built and evaluated the first time (by the task worker) and reused after,
    so labels and runs made on it stay. Two tabs pressing the button at once get the same project:
    the task worker handles one task at a time and reuses the project the first one made. Anyone
    signed in may open it; a demo session gets its own sandbox, a fresh copy of it."""
    if isinstance(actor, User) and actor.demo and actor.session is not None:
        return sandboxes.open_sandbox(store, actor)
    require(store, actor, None, "open_demo")
    return int(jobs.compute(store, "open_demo", {}, actor)["project_id"])
