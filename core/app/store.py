"""The workbench's embedded store: SQLite (WAL) plus an artifacts folder (docs/DESIGN.md §6).

Everything the workbench knows lives here, so a browser refresh, a second tab or a server restart
loses nothing: projects, models, datasets, counterexample labels, repair runs with their live
progress, evaluation metrics and the audit log. The location is ``$BIASREPAIR_HOME`` (default
``<repo>/.workbench``): ``store.db`` and ``artifacts/``.

The audit table is append-only. SQLite triggers raise on any UPDATE or DELETE of an audit row, and
on an INSERT that names an existing id (``INSERT OR REPLACE`` would otherwise delete the old row
without firing the DELETE trigger), so even a bug in the app cannot rewrite history.

Each call opens its own short-lived connection: Streamlit runs scripts on several threads and the
job runner is a separate process, and SQLite connections must not be shared across either.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.errors import UserError

HOME_ENV = "BIASREPAIR_HOME"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HOME = REPO_ROOT / ".workbench"

QUEUES = ("runs", "tasks")  # repairs, and the short model computations pages wait for
RUN_STATES = ("preparing", "queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED_STATES = ("done", "failed", "cancelled", "interrupted")

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    is_demo INTEGER NOT NULL DEFAULT 0,
    base_model_id INTEGER,
    active_model_id INTEGER,
    eval_dataset_id INTEGER,
    pool_dataset_id INTEGER,
    reference_dataset_id INTEGER,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    kind TEXT NOT NULL CHECK (kind IN ('base', 'repaired')),
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    meta_json TEXT NOT NULL,
    sha256_json TEXT NOT NULL,
    run_id INTEGER,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    role TEXT NOT NULL CHECK (role IN ('eval', 'pool', 'uploads', 'reference')),
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    n_items INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counterexamples (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    item_path TEXT NOT NULL,
    label TEXT NOT NULL,
    attribute TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (project_id, dataset_id, item_path)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    model_id INTEGER NOT NULL REFERENCES models(id),
    status TEXT NOT NULL,
    method TEXT NOT NULL,
    config_json TEXT NOT NULL,
    strength_label TEXT NOT NULL,
    n_counterexamples INTEGER NOT NULL,
    out_dir TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_pid INTEGER,
    device TEXT,
    error TEXT,
    stop_reason TEXT,
    decision TEXT,
    repaired_model_id INTEGER,
    request_json TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS progress (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    step INTEGER NOT NULL,
    data_json TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    model_id INTEGER NOT NULL REFERENCES models(id),
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    metrics_json TEXT NOT NULL,
    predictions_path TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (model_id, dataset_id)
);
CREATE TABLE IF NOT EXISTS workers (
    pid INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    heartbeat REAL NOT NULL,
    queue TEXT NOT NULL DEFAULT 'runs'
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    project_id INTEGER,
    kind TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    result_json TEXT,
    error TEXT,
    worker_pid INTEGER,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status, id);
CREATE TABLE IF NOT EXISTS named_groups (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    new_dataset_id INTEGER REFERENCES datasets(id),
    model_id INTEGER NOT NULL REFERENCES models(id),
    group_id INTEGER NOT NULL,
    label TEXT NOT NULL,
    name TEXT NOT NULL,
    paths_json TEXT NOT NULL,
    n_named INTEGER NOT NULL,
    n_kept INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS named_groups_project ON named_groups(project_id, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    project_id INTEGER,
    action TEXT NOT NULL,
    detail_json TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_replace BEFORE INSERT ON audit
WHEN EXISTS (SELECT 1 FROM audit WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE INDEX IF NOT EXISTS audit_project ON audit(project_id, id);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    roles TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    demo INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sign_in_failures (name TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sign_in_failures_name ON sign_in_failures(name, at);
CREATE TABLE IF NOT EXISTS label_versions (
    project_id INTEGER NOT NULL,
    dataset_id INTEGER NOT NULL,
    item_path TEXT NOT NULL,
    version INTEGER NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    PRIMARY KEY (project_id, dataset_id, item_path)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, id);
"""


class LabelConflict(UserError):
    """A label changed since the page that saves over it loaded it: who changed it, to what (None:
    removed), when, and its version now (pass that version to save over it deliberately)."""

    def __init__(self, current: str | None, changed_by: str, changed_at: str, version: int):
        what = f"labelled it {current}" if current is not None else "removed its label"
        super().__init__(
            f"{changed_by} {what} at {changed_at}, after this page loaded it",
            "label_conflict",
            who=changed_by,
            label=current if current is not None else "—",
            when=changed_at,
        )
        self.current, self.changed_by, self.changed_at, self.version = current, changed_by, changed_at, version


def now_iso() -> str:
    """UTC timestamp to the second, ISO 8601; what every *_at column holds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def home_dir() -> Path:
    """The store folder: ``$BIASREPAIR_HOME`` or ``<repo>/.workbench``."""
    raw = os.environ.get(HOME_ENV, "").strip()
    return Path(raw).expanduser().resolve() if raw else DEFAULT_HOME


class Store:
    """A handle on one store folder. Cheap to create; holds no open connection."""

    def __init__(self, home: str | Path | None = None):
        self.home = Path(home).resolve() if home else home_dir()
        self.artifacts = self.home / "artifacts"
        self.db_path = self.home / "store.db"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            # Stores made by earlier versions lack these columns.
            if "queue" not in {r[1] for r in con.execute("PRAGMA table_info(workers)")}:
                con.execute("ALTER TABLE workers ADD COLUMN queue TEXT NOT NULL DEFAULT 'runs'")
            if "request_json" not in {r[1] for r in con.execute("PRAGMA table_info(runs)")}:
                con.execute("ALTER TABLE runs ADD COLUMN request_json TEXT")
            if "restored_step" not in {r[1] for r in con.execute("PRAGMA table_info(runs)")}:
                con.execute("ALTER TABLE runs ADD COLUMN restored_step INTEGER")  # beside stop_reason
            if "reference_dataset_id" not in {r[1] for r in con.execute("PRAGMA table_info(projects)")}:
                con.execute("ALTER TABLE projects ADD COLUMN reference_dataset_id INTEGER")
            if "disabled" not in {r[1] for r in con.execute("PRAGMA table_info(users)")}:
                con.execute("ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0")
            _allow_reference_role(con)
        finally:
            con.close()

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one unit of work; commits on success, rolls back on error."""
        con = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("PRAGMA busy_timeout=30000")
        try:
            con.execute("BEGIN IMMEDIATE")
            yield con
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    # ---- generic helpers -------------------------------------------------------------------
    def query(self, sql: str, params: tuple = ()) -> list[dict]:
        with self.connect() as con:
            return [dict(r) for r in con.execute(sql, params).fetchall()]

    def one(self, sql: str, params: tuple = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: tuple = ()) -> int:
        """Run one write statement; returns lastrowid (for INSERT) or rowcount."""
        with self.connect() as con:
            cur = con.execute(sql, params)
            return cur.lastrowid if sql.lstrip().upper().startswith("INSERT") else cur.rowcount

    def artifact_dir(self, *parts: str) -> Path:
        """A folder under artifacts/, created on demand."""
        d = self.artifacts.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ---- audit -----------------------------------------------------------------------------
    def audit(self, actor: str, action: str, project_id: int | None = None, **detail) -> int:
        """Append one audit event. There is deliberately no way to change or remove one."""
        return self.execute(
            "INSERT INTO audit (ts, actor, project_id, action, detail_json) VALUES (?,?,?,?,?)",
            (now_iso(), actor or "unknown", project_id, action, json.dumps(detail, default=str)),
        )

    def audit_events(self, project_id: int | None = None) -> list[dict]:
        """Audit rows, oldest first, with ``detail`` decoded."""
        if project_id is None:
            rows = self.query("SELECT * FROM audit ORDER BY id")
        else:
            rows = self.query("SELECT * FROM audit WHERE project_id = ? ORDER BY id", (project_id,))
        for r in rows:
            r["detail"] = json.loads(r.pop("detail_json"))
        return rows

    # ---- projects, models, datasets --------------------------------------------------------
    def create_project(self, name: str, actor: str, is_demo: bool = False) -> int:
        return self.execute(
            "INSERT INTO projects (name, is_demo, created_at, created_by) VALUES (?,?,?,?)",
            (name, int(is_demo), now_iso(), actor),
        )

    def project(self, project_id: int) -> dict | None:
        return self.one("SELECT * FROM projects WHERE id = ?", (project_id,))

    def projects(self) -> list[dict]:
        return self.query("SELECT * FROM projects ORDER BY id DESC")

    def set_project(self, project_id: int, **fields) -> None:
        allowed = {
            "name",
            "base_model_id",
            "active_model_id",
            "eval_dataset_id",
            "pool_dataset_id",
            "reference_dataset_id",
        }
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot set project field(s) {bad}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.execute(f"UPDATE projects SET {cols} WHERE id = ?", (*fields.values(), project_id))

    def add_model(
        self,
        project_id: int,
        kind: str,
        name: str,
        path: Path,
        meta: dict,
        sha256: dict,
        run_id: int | None = None,
    ) -> int:
        return self.execute(
            "INSERT INTO models (project_id, kind, name, path, meta_json, sha256_json, run_id, created_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (project_id, kind, name, str(path), json.dumps(meta), json.dumps(sha256), run_id, now_iso()),
        )

    def set_model_sha256(self, model_id: int, sha256: dict) -> None:
        self.execute("UPDATE models SET sha256_json = ? WHERE id = ?", (json.dumps(sha256), model_id))

    def set_model_path(self, model_id: int, path: Path) -> None:
        self.execute("UPDATE models SET path = ? WHERE id = ?", (str(path), model_id))

    def model(self, model_id: int) -> dict | None:
        row = self.one("SELECT * FROM models WHERE id = ?", (model_id,))
        if row:
            row["meta"] = json.loads(row["meta_json"])
            row["sha256"] = json.loads(row["sha256_json"])
        return row

    def add_dataset(self, project_id: int, role: str, name: str, path: Path, sha256: str, n_items: int) -> int:
        return self.execute(
            "INSERT INTO datasets (project_id, role, name, path, sha256, n_items, created_at) VALUES (?,?,?,?,?,?,?)",
            (project_id, role, name, str(path), sha256, n_items, now_iso()),
        )

    def add_artifact_dataset(self, project_id: int, role: str, name: str) -> tuple[int, Path]:
        """A new, empty dataset whose folder is ``artifacts/datasets/<id>``, set in the same transaction
        as the row is made, so no row ever points anywhere else."""
        with self.connect() as con:
            cur = con.execute(
                "INSERT INTO datasets (project_id, role, name, path, sha256, n_items, created_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (project_id, role, name, "", "", 0, now_iso()),
            )
            did = int(cur.lastrowid)
            root = self.artifacts / "datasets" / str(did)
            con.execute("UPDATE datasets SET path = ? WHERE id = ?", (str(root), did))
        root.mkdir(parents=True, exist_ok=True)
        return did, root

    def inside_home(self, path: str | Path) -> bool:
        """Whether ``path`` (resolved) lies inside this store's folder."""
        home = self.home.resolve()
        target = Path(path).resolve()
        return target == home or home in target.parents

    def set_dataset_path(self, dataset_id: int, path: Path) -> None:
        self.execute("UPDATE datasets SET path = ? WHERE id = ?", (str(path), dataset_id))

    def dataset(self, dataset_id: int) -> dict | None:
        return self.one("SELECT * FROM datasets WHERE id = ?", (dataset_id,))

    def datasets(self, project_id: int, role: str | None = None) -> list[dict]:
        if role is None:
            return self.query("SELECT * FROM datasets WHERE project_id = ? ORDER BY id", (project_id,))
        return self.query("SELECT * FROM datasets WHERE project_id = ? AND role = ? ORDER BY id", (project_id, role))

    def set_dataset_size(self, dataset_id: int, n_items: int, sha256: str) -> None:
        self.execute("UPDATE datasets SET n_items = ?, sha256 = ? WHERE id = ?", (n_items, sha256, dataset_id))

    # ---- evaluations -----------------------------------------------------------------------
    def save_evaluation(self, model_id: int, dataset_id: int, metrics: dict, predictions_path: Path) -> None:
        self.execute(
            "INSERT OR REPLACE INTO evaluations (model_id, dataset_id, metrics_json, predictions_path,"
            " created_at) VALUES (?,?,?,?,?)",
            (model_id, dataset_id, json.dumps(metrics), str(predictions_path), now_iso()),
        )

    def evaluation(self, model_id: int, dataset_id: int) -> dict | None:
        row = self.one("SELECT * FROM evaluations WHERE model_id = ? AND dataset_id = ?", (model_id, dataset_id))
        if row:
            row["metrics"] = json.loads(row.pop("metrics_json"))
        return row

    # ---- named suspected groups (issue #12) -------------------------------------------------
    def add_named_group(
        self,
        project_id: int,
        dataset_id: int,
        new_dataset_id: int,
        model_id: int,
        group_id: int,
        label: str,
        name: str,
        paths: list[str],
        n_named: int,
        n_kept: int,
        actor: str,
    ) -> int:
        """Record that a suspected group of ``dataset_id`` was named; ``new_dataset_id`` is the
        evaluation set version with the name filled in as the attribute of its images."""
        return self.execute(
            "INSERT INTO named_groups (project_id, dataset_id, new_dataset_id, model_id, group_id, label, name,"
            " paths_json, n_named, n_kept, created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                project_id,
                dataset_id,
                new_dataset_id,
                model_id,
                group_id,
                label,
                name,
                json.dumps(paths),
                n_named,
                n_kept,
                now_iso(),
                actor,
            ),
        )

    def named_groups(self, project_id: int) -> list[dict]:
        """The project's named groups, oldest first, with ``paths`` decoded."""
        rows = self.query("SELECT * FROM named_groups WHERE project_id = ? ORDER BY id", (project_id,))
        for r in rows:
            r["paths"] = json.loads(r.pop("paths_json"))
        return rows

    # ---- counterexamples -------------------------------------------------------------------
    # Every label write (set or remove) raises the image's version in label_versions, which outlives a
    # removed label; a writer that says which version it saw is refused when it is not the current one.
    @staticmethod
    def _label_state(con: sqlite3.Connection, key: tuple, expected_version: int | None) -> tuple[str | None, int]:
        prev = con.execute(
            "SELECT label FROM counterexamples WHERE project_id=? AND dataset_id=? AND item_path=?", key
        ).fetchone()
        ver = con.execute(
            "SELECT version, changed_by, changed_at FROM label_versions WHERE project_id=? AND dataset_id=?"
            " AND item_path=?",
            key,
        ).fetchone()
        version = ver["version"] if ver else 0
        if expected_version is not None and expected_version != version:
            raise LabelConflict(prev["label"] if prev else None, ver["changed_by"], ver["changed_at"], version)
        return (prev["label"] if prev else None), version

    @staticmethod
    def _bump_label_version(con: sqlite3.Connection, key: tuple, version: int, actor: str) -> None:
        con.execute(
            "INSERT INTO label_versions (project_id, dataset_id, item_path, version, changed_by, changed_at)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (project_id, dataset_id, item_path) DO UPDATE SET"
            " version = excluded.version, changed_by = excluded.changed_by, changed_at = excluded.changed_at",
            (*key, version + 1, actor, now_iso()),
        )

    def set_label(
        self,
        project_id: int,
        dataset_id: int,
        item_path: str,
        label: str,
        attribute: str | None,
        actor: str,
        expected_version: int | None = None,
    ) -> str | None:
        """Label one pool image; returns the previous label (None if it was not chosen yet). With
        ``expected_version`` (the version the caller saw; 0: never labelled), raises
        :class:`LabelConflict` instead of writing if the label changed since."""
        key = (project_id, dataset_id, item_path)
        with self.connect() as con:
            prev, version = self._label_state(con, key, expected_version)
            if prev != label:
                self._bump_label_version(con, key, version, actor)
            con.execute(
                "INSERT INTO counterexamples (project_id, dataset_id, item_path, label, attribute, created_at,"
                " created_by) VALUES (?,?,?,?,?,?,?) ON CONFLICT (project_id, dataset_id, item_path)"
                " DO UPDATE SET label = excluded.label, created_at = excluded.created_at,"
                " created_by = excluded.created_by",
                (project_id, dataset_id, item_path, label, attribute, now_iso(), actor),
            )
        return prev

    def remove_label(
        self, project_id: int, dataset_id: int, item_path: str, actor: str = "", expected_version: int | None = None
    ) -> str | None:
        """Remove one image's label; returns it (None: it had none). ``expected_version`` as in set_label."""
        key = (project_id, dataset_id, item_path)
        with self.connect() as con:
            prev, version = self._label_state(con, key, expected_version)
            if prev is not None:
                self._bump_label_version(con, key, version, actor or "unknown")
            con.execute("DELETE FROM counterexamples WHERE project_id=? AND dataset_id=? AND item_path=?", key)
        return prev

    def label_versions(self, project_id: int) -> dict[tuple[int, str], int]:
        """The current version of every image label of the project ever written, by (dataset id, path)."""
        rows = self.query(
            "SELECT dataset_id, item_path, version FROM label_versions WHERE project_id = ?", (project_id,)
        )
        return {(r["dataset_id"], r["item_path"]): r["version"] for r in rows}

    def label_change_count(self, project_id: int) -> int:
        """A number that grows with every label change of the project: cheap to poll for "has someone
        else labelled something?"."""
        row = self.one("SELECT COALESCE(SUM(version), 0) AS n FROM label_versions WHERE project_id = ?", (project_id,))
        return int(row["n"])

    def labels(self, project_id: int) -> list[dict]:
        return self.query(
            "SELECT c.*, d.path AS dataset_path, d.role AS dataset_role FROM counterexamples c"
            " JOIN datasets d ON d.id = c.dataset_id WHERE c.project_id = ? ORDER BY c.id",
            (project_id,),
        )

    # ---- runs ------------------------------------------------------------------------------
    def create_run(
        self,
        project_id: int,
        model_id: int,
        method: str,
        config: dict,
        strength_label: str,
        n_counterexamples: int,
        out_dir: Path,
        actor: str,
    ) -> int:
        return self.execute(
            "INSERT INTO runs (project_id, model_id, status, method, config_json, strength_label,"
            " n_counterexamples, out_dir, created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                project_id,
                model_id,
                "preparing",
                method,
                json.dumps(config),
                strength_label,
                n_counterexamples,
                str(out_dir),
                now_iso(),
                actor,
            ),
        )

    def set_run_request(self, run_id: int, request_json: str) -> None:
        """The run's typed request (core.engine.request.RunRequest.to_json), fixed before it is queued."""
        self.execute("UPDATE runs SET request_json = ? WHERE id = ? AND status = 'preparing'", (request_json, run_id))

    def queue_run(self, run_id: int, out_dir: Path) -> None:
        """A prepared run (its inputs written to ``out_dir``) becomes visible to the worker."""
        self.execute(
            "UPDATE runs SET status = 'queued', out_dir = ? WHERE id = ? AND status = 'preparing'",
            (str(out_dir), run_id),
        )

    def run(self, run_id: int) -> dict | None:
        row = self.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if row:
            row["config"] = json.loads(row["config_json"])
        return row

    def runs(self, project_id: int) -> list[dict]:
        rows = self.query("SELECT * FROM runs WHERE project_id = ? ORDER BY id DESC", (project_id,))
        for r in rows:
            r["config"] = json.loads(r["config_json"])
        return rows

    def _claim(self, table: str, pid: int, extra_set: str = "", extra: tuple = ()) -> int | None:
        """The id of the oldest queued row of ``table`` ('runs' or 'tasks'), now 'running' for ``pid``."""
        with self.connect() as con:
            row = con.execute(f"SELECT id FROM {table} WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            con.execute(
                f"UPDATE {table} SET status = 'running', worker_pid = ?{extra_set} WHERE id = ? AND status = 'queued'",
                (pid, *extra, row["id"]),
            )
        return row["id"]

    def has_queued_runs(self) -> bool:
        return self.one("SELECT id FROM runs WHERE status = 'queued' LIMIT 1") is not None

    def claim_next_run(self, pid: int) -> dict | None:
        """Atomically move the oldest queued run to 'running' for worker ``pid``."""
        run_id = self._claim("runs", pid, ", started_at = ?", (now_iso(),))
        if run_id is None:
            return None
        return self.run(run_id)

    def finish_run(self, run_id: int, status: str, **fields) -> bool:
        """Record how a run ended; only a running or queued run can end (first writer wins). Returns
        whether this call ended it."""
        if status not in FINISHED_STATES:
            raise ValueError(f"not a final state: {status}")
        # stop_reason: a core.engine.results.StopReason value; restored_step: the step the run went back to.
        # out_dir: a run made whole (an interpolation).
        allowed = {"error", "stop_reason", "restored_step", "device", "out_dir"}
        cols = "".join(f", {k} = ?" for k in fields if k in allowed)
        vals = tuple(v for k, v in fields.items() if k in allowed)
        changed = self.execute(
            f"UPDATE runs SET status = ?, finished_at = ?{cols} WHERE id = ? AND status IN ('preparing','queued','running')",
            (status, now_iso(), *vals, run_id),
        )
        return changed > 0

    def set_run(self, run_id: int, **fields) -> None:
        allowed = {"device", "decision", "repaired_model_id", "cancel_requested"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot set run field(s) {bad}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def cancel_requested(self, run_id: int) -> bool:
        row = self.one("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,))
        return bool(row and row["cancel_requested"])

    def add_progress(self, run_id: int, events: list[dict]) -> None:
        if not events:
            return
        with self.connect() as con:
            con.executemany(
                "INSERT OR REPLACE INTO progress (run_id, step, data_json) VALUES (?,?,?)",
                [(run_id, int(e.get("step", 0)), json.dumps(e, default=float)) for e in events],
            )

    def progress(self, run_id: int) -> list[dict]:
        rows = self.query("SELECT data_json FROM progress WHERE run_id = ? ORDER BY step", (run_id,))
        return [json.loads(r["data_json"]) for r in rows]

    # ---- workers ---------------------------------------------------------------------------
    def heartbeat(self, pid: int, queue: str = "runs") -> None:
        t = time.time()
        self.execute(
            "INSERT INTO workers (pid, started_at, heartbeat, queue) VALUES (?,?,?,?)"
            " ON CONFLICT (pid) DO UPDATE SET heartbeat = excluded.heartbeat",
            (pid, t, t, queue),
        )

    def remove_worker(self, pid: int) -> None:
        self.execute("DELETE FROM workers WHERE pid = ?", (pid,))

    def live_workers(self, stale_after: float = 10.0, queue: str | None = None) -> list[int]:
        """Worker pids (of ``queue``, or of any) whose heartbeat is recent and whose process still exists."""
        cutoff = time.time() - stale_after
        alive = []
        rows = self.query("SELECT pid, heartbeat, queue FROM workers")
        for row in (r for r in rows if queue is None or r["queue"] == queue):
            if row["heartbeat"] >= cutoff and pid_alive(row["pid"]):
                alive.append(row["pid"])
        return alive

    def workers(self) -> dict[int, dict]:
        """The registered workers by pid: ``started_at``, ``heartbeat`` (Unix times) and ``queue``."""
        return {r["pid"]: r for r in self.query("SELECT * FROM workers")}

    def orphaned(self, stale_after: float = 10.0) -> dict[str, list[dict]]:
        """Work left 'running' by a worker that is not alive (its process is gone, or its heartbeat
        is older than ``stale_after`` seconds): ``{"runs": [...], "tasks": [...]}``, rows with ``id``
        and ``worker_pid``. Nothing is changed here; :func:`core.app.jobs.reap_dead_workers` ends them."""
        live = set(self.live_workers(stale_after))
        return {
            table: [
                r
                for r in self.query(f"SELECT id, worker_pid FROM {table} WHERE status = 'running' ORDER BY id")
                if r["worker_pid"] not in live
            ]
            for table in ("runs", "tasks")
        }

    def stale_preparing(self, older_than: float) -> list[dict]:
        """Runs still 'preparing' that were created more than ``older_than`` seconds ago: the page
        process that was preparing them stopped (preparing copies a few counterexample files and
        ends in seconds, or fails the run itself)."""
        cutoff = (datetime.now(UTC) - timedelta(seconds=older_than)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self.query(
            "SELECT id, project_id, created_by FROM runs WHERE status = 'preparing' AND created_at < ? ORDER BY id",
            (cutoff,),
        )

    # ---- tasks: short model computations a page waits for (evaluate, predict, register) ------
    def submit_task(self, kind: str, payload: dict, actor: str, project_id: int | None = None) -> int:
        return self.execute(
            "INSERT INTO tasks (project_id, kind, payload_json, status, created_at, created_by)"
            " VALUES (?,?,?,'queued',?,?)",
            (project_id, kind, json.dumps(payload), now_iso(), actor),
        )

    def task(self, task_id: int) -> dict | None:
        row = self.one("SELECT * FROM tasks WHERE id = ?", (task_id,))
        if row:
            row["payload"] = json.loads(row.pop("payload_json"))
            raw = row.pop("result_json")
            row["result"] = json.loads(raw) if raw else None
        return row

    def has_queued_tasks(self) -> bool:
        return self.one("SELECT id FROM tasks WHERE status = 'queued' LIMIT 1") is not None

    def pending_tasks(self, kind: str) -> list[dict]:
        """The payloads of the queued or running tasks of one kind."""
        rows = self.query(
            "SELECT payload_json FROM tasks WHERE kind = ? AND status IN ('queued', 'running') ORDER BY id", (kind,)
        )
        return [json.loads(r["payload_json"]) for r in rows]

    def claim_next_task(self, pid: int) -> dict | None:
        """Atomically move the oldest queued task to 'running' for worker ``pid``."""
        task_id = self._claim("tasks", pid)
        if task_id is None:
            return None
        return self.task(task_id)

    def finish_task(self, task_id: int, status: str, result: dict | None = None, error: str | None = None) -> bool:
        """Record how a task ended (first writer wins); returns whether this call ended it."""
        if status not in ("done", "failed"):
            raise ValueError(f"not a final task state: {status}")
        return 0 < self.execute(
            "UPDATE tasks SET status = ?, result_json = ?, error = ?, finished_at = ?"
            " WHERE id = ? AND status IN ('queued', 'running')",
            (status, json.dumps(result) if result is not None else None, error, now_iso(), task_id),
        )


def _allow_reference_role(con: sqlite3.Connection) -> None:
    """Stores made before reference images existed have a CHECK on datasets.role without
    'reference'; SQLite cannot alter a CHECK, so the table is rebuilt once, keeping every row."""
    sql = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'datasets'").fetchone()[0]
    if "'reference'" in sql:
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        new_sql = sql.replace("'uploads')", "'uploads', 'reference')").replace("datasets", "datasets_new", 1)
        con.execute(new_sql)
        con.execute("INSERT INTO datasets_new SELECT * FROM datasets")
        con.execute("DROP TABLE datasets")
        con.execute("ALTER TABLE datasets_new RENAME TO datasets")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists (and is not a zombie we could reap)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return False
    except OSError:
        pass
    return True
