"""The store's layout and how it got there: a schema version and numbered migrations.

``schema_version`` holds one row per migration applied to the database (its number and when). Opening
a store applies, in order and inside one transaction, every migration in :data:`MIGRATIONS` whose
number is above the highest one recorded; a store already current costs one small read and takes no
lock. A migration, once released, is never edited: a change to the layout is a new, higher number.

Stores made before the layout had versions (every store made before this table existed) have no
``schema_version`` table, so every migration runs on them. That is why each migration here checks
before it changes anything (``IF NOT EXISTS``, a missing column, a missing ``CHECK`` value): such a
store may already have some of their steps, and it ends with the same layout as a new store, every
row kept. A store whose version is above :data:`LATEST` was made by newer code: it is refused with a
:class:`~core.errors.UserError` and left exactly as it was.

The append-only audit table: SQLite triggers raise on any UPDATE or DELETE of an audit row, and on an
INSERT that names an existing id (``INSERT OR REPLACE`` would otherwise delete the old row without
firing the DELETE trigger), so even a bug in the app cannot rewrite history. Since migration 11 each
row also carries ``chain``, the SHA-256 of the previous row's chain and its own content, and
``audit_head`` the last row's id and chain, so that a change made around the triggers (dropped, or
the table replaced) is found by :meth:`core.app.store.audit_log.AuditLog.audit_chain_break`.
"""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path

from core.errors import UserError

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
)"""


def _script(con: sqlite3.Connection, sql: str) -> None:
    """Run several statements inside the caller's transaction (``executescript`` would commit it)."""
    statement = ""
    for line in textwrap.dedent(sql).strip().splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            con.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement: {statement[:80]!r}")


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}


def _add_column(con: sqlite3.Connection, table: str, column: str, definition: str) -> None:
    if column not in _columns(con, table):
        con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


FIRST_LAYOUT = """
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    is_demo INTEGER NOT NULL DEFAULT 0,
    base_model_id INTEGER,
    active_model_id INTEGER,
    eval_dataset_id INTEGER,
    pool_dataset_id INTEGER,
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
    role TEXT NOT NULL CHECK (role IN ('eval', 'pool', 'uploads')),
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
    heartbeat REAL NOT NULL
);
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
CREATE INDEX IF NOT EXISTS audit_project ON audit(project_id, id);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, id);
"""


def _first_layout(con: sqlite3.Connection) -> None:
    """1: projects, models, datasets, counterexamples, runs with their progress, evaluations, workers
    and the append-only audit log."""
    _script(con, FIRST_LAYOUT)


def _task_queue(con: sqlite3.Connection) -> None:
    """2: the task queue (short model computations a page waits for), a queue per worker, and the run's
    typed request."""
    _script(
        con,
        """
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
        """,
    )
    _add_column(con, "workers", "queue", "TEXT NOT NULL DEFAULT 'runs'")
    _add_column(con, "runs", "request_json", "TEXT")


def _named_groups(con: sqlite3.Connection) -> None:
    """3: suspected groups named by a curator (each a new version of the evaluation set)."""
    _script(
        con,
        """
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
        """,
    )


def _reference_images(con: sqlite3.Connection) -> None:
    """4: reference images: a project's reference dataset, and 'reference' as a dataset role. SQLite
    cannot alter a CHECK, so the datasets table is rebuilt once, keeping every row."""
    _add_column(con, "projects", "reference_dataset_id", "INTEGER")
    sql = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'datasets'").fetchone()[0]
    if "'reference'" in sql:
        return
    new_sql = sql.replace("'uploads')", "'uploads', 'reference')").replace("datasets", "datasets_new", 1)
    con.execute(new_sql)
    con.execute("INSERT INTO datasets_new SELECT * FROM datasets")
    con.execute("DROP TABLE datasets")
    con.execute("ALTER TABLE datasets_new RENAME TO datasets")


def _audit_no_replace(con: sqlite3.Connection) -> None:
    """5: an audit row cannot be replaced by an INSERT naming its id."""
    _script(
        con,
        """
        CREATE TRIGGER IF NOT EXISTS audit_no_replace BEFORE INSERT ON audit
        WHEN EXISTS (SELECT 1 FROM audit WHERE id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
        """,
    )


def _accounts(con: sqlite3.Connection) -> None:
    """6: accounts with their roles, sessions, and the admin's settings."""
    _script(
        con,
        """
        CREATE TABLE IF NOT EXISTS users (
            name TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            roles TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS sessions (
            token_sha256 TEXT PRIMARY KEY,
            user TEXT NOT NULL,
            demo INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        """,
    )


def _label_versions(con: sqlite3.Connection) -> None:
    """7: every image label's version, so a save over a label changed since it was read is noticed."""
    _script(
        con,
        """
        CREATE TABLE IF NOT EXISTS label_versions (
            project_id INTEGER NOT NULL,
            dataset_id INTEGER NOT NULL,
            item_path TEXT NOT NULL,
            version INTEGER NOT NULL,
            changed_by TEXT NOT NULL,
            changed_at TEXT NOT NULL,
            PRIMARY KEY (project_id, dataset_id, item_path)
        );
        """,
    )


def _sign_in_failures(con: sqlite3.Connection) -> None:
    """8: failed sign-ins, which lock a name for a while."""
    _script(
        con,
        """
        CREATE TABLE IF NOT EXISTS sign_in_failures (name TEXT NOT NULL, at REAL NOT NULL);
        CREATE INDEX IF NOT EXISTS sign_in_failures_name ON sign_in_failures(name, at);
        """,
    )


def _disabled_accounts(con: sqlite3.Connection) -> None:
    """9: an account can be disabled."""
    _add_column(con, "users", "disabled", "INTEGER NOT NULL DEFAULT 0")


def _restored_step(con: sqlite3.Connection) -> None:
    """10: the step a run went back to, beside its stop reason (a core.engine.results.StopReason value)."""
    _add_column(con, "runs", "restored_step", "INTEGER")


def _audit_chain(con: sqlite3.Connection) -> None:
    """11: each audit row carries the hash of the chain up to it; the head of the chain is kept apart."""
    _add_column(con, "audit", "chain", "TEXT")
    _script(
        con,
        """
        CREATE TABLE IF NOT EXISTS audit_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            last_id INTEGER NOT NULL,
            chain TEXT NOT NULL
        );
        """,
    )


def _demo_sandboxes(con: sqlite3.Connection) -> None:
    """12: a demo session's own copy of the demo project: the project it was copied from and the session it
    belongs to (the SHA-256 of that session's token; NULL once reset or never)."""
    _add_column(con, "projects", "sandbox_of", "INTEGER")
    _add_column(con, "projects", "demo_session", "TEXT")
    con.execute("CREATE INDEX IF NOT EXISTS projects_demo_session ON projects(demo_session)")


MIGRATIONS: list[tuple[int, Callable[[sqlite3.Connection], None]]] = [
    (1, _first_layout),
    (2, _task_queue),
    (3, _named_groups),
    (4, _reference_images),
    (5, _audit_no_replace),
    (6, _accounts),
    (7, _label_versions),
    (8, _sign_in_failures),
    (9, _disabled_accounts),
    (10, _restored_step),
    (11, _audit_chain),
    (12, _demo_sandboxes),
]
LATEST = MIGRATIONS[-1][0]


def version(con: sqlite3.Connection) -> int:
    """The highest migration applied to the database; 0 for a new one or one made before versions."""
    try:
        row = con.execute("SELECT MAX(version) FROM schema_version").fetchone()
    except sqlite3.OperationalError:  # no such table
        return 0
    return int(row[0] or 0)


def _refuse_newer(found: int, db_path: Path) -> None:
    if found > LATEST:
        raise UserError(
            f"the store in {db_path.parent} was made by a newer version of the workbench (schema version {found};"
            f" this one knows up to {LATEST}): open it with that version, or choose another BIASREPAIR_HOME",
            "store_too_new",
            home=str(db_path.parent),
            found=found,
            latest=LATEST,
        )


def upgrade(con: sqlite3.Connection, db_path: Path) -> int:
    """Bring the database of ``con`` (an autocommit connection) to :data:`LATEST`, in one transaction;
    returns the version it had. Two processes opening one store at once wait for each other's lock,
    and the second finds nothing to do."""
    found = version(con)
    _refuse_newer(found, db_path)
    if found == LATEST:
        return found
    con.execute("BEGIN IMMEDIATE")
    try:
        found = version(con)  # another process may have upgraded it meanwhile
        _refuse_newer(found, db_path)
        con.execute(VERSION_TABLE)
        for number, migrate in MIGRATIONS:
            if number > found:
                migrate(con)
                con.execute(
                    "INSERT INTO schema_version (version, applied_at)"
                    " VALUES (?, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
                    (number,),
                )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return found
