"""The workbench's embedded store: SQLite (WAL) plus an artifacts folder (docs/DESIGN.md §6).

Everything the workbench knows lives here, so a browser refresh, a second tab or a server restart
loses nothing: projects, models, datasets, counterexample labels, repair runs with their live
progress, evaluation metrics, accounts and the audit log. The location is ``$BIASREPAIR_HOME``
(default ``<repo>/.workbench``): ``store.db`` and ``artifacts/``.

All of the workbench's SQL is in this package, in one part per area; :class:`Store` is all of them:

* ``base``: the folder, connections and the private SQL helpers the parts share;
* ``schema``: the schema version and the numbered migrations applied when a store is opened;
* ``states``: the closed sets the rows hold (run and task states, queues, dataset roles, model kinds);
* ``project_data``: projects, models, datasets, evaluations, named groups, labels and label versions;
* ``run_queue``: runs, progress, workers and heartbeats, tasks, and the claims on both queues;
* ``sandbox_rows``: demo sandboxes, a demo session's own copy of the demo project;
* ``account_rows``: users, sessions, failed sign-ins and the admin's settings;
* ``audit_log``: the append-only audit log.
"""

from __future__ import annotations

from core.app.store.account_rows import AccountRows
from core.app.store.audit_log import AuditLog
from core.app.store.base import DEFAULT_HOME, HOME_ENV, REPO_ROOT, home_dir, now_iso, pid_alive
from core.app.store.project_data import LabelConflict, ProjectData
from core.app.store.run_queue import RunQueue
from core.app.store.sandbox_rows import SandboxRows
from core.app.store.schema import LATEST as SCHEMA_VERSION
from core.app.store.states import (
    ACTIVE_RUN_STATES,
    ENDED_WITHOUT_RESULT,
    FINISHED_RUN_STATES,
    IN_QUEUE_RUN_STATES,
    DatasetRole,
    ModelKind,
    Queue,
    RunStatus,
    TaskStatus,
)

QUEUES = tuple(Queue)  # repairs, and the short model computations pages wait for
RUN_STATES = tuple(RunStatus)
FINISHED_STATES = FINISHED_RUN_STATES


class Store(ProjectData, SandboxRows, RunQueue, AccountRows, AuditLog):
    """A handle on one store folder. Cheap to create; holds no open connection."""


__all__ = [
    "ACTIVE_RUN_STATES",
    "DEFAULT_HOME",
    "ENDED_WITHOUT_RESULT",
    "FINISHED_RUN_STATES",
    "FINISHED_STATES",
    "HOME_ENV",
    "IN_QUEUE_RUN_STATES",
    "QUEUES",
    "REPO_ROOT",
    "RUN_STATES",
    "SCHEMA_VERSION",
    "DatasetRole",
    "LabelConflict",
    "ModelKind",
    "Queue",
    "RunStatus",
    "Store",
    "TaskStatus",
    "home_dir",
    "now_iso",
    "pid_alive",
]
