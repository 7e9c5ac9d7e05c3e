"""The store's folder and its database connections; the raw SQL helpers the store's parts share.

Each call opens its own short-lived connection: Streamlit runs scripts on several threads and the
job runner is a separate process, and SQLite connections must not be shared across either. The
helpers are private to the store package: code outside it calls the parts' named methods.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from core import settings
from core.app.store.schema import upgrade
from core.errors import UserError, is_disk_full

HOME_ENV = settings.HOME.name
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_HOME = REPO_ROOT / ".workbench"
BUSY_TIMEOUT_S = 30


def now_iso() -> str:
    """UTC timestamp to the second, ISO 8601; what every *_at column holds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def home_dir() -> Path:
    """The store folder: ``$BIASREPAIR_HOME`` or ``<repo>/.workbench``."""
    raw = settings.HOME.get()
    return Path(raw).expanduser().resolve() if raw else DEFAULT_HOME


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


def open_connection(db_path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are begun explicitly) that waits for a lock."""
    con = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    return con


_OPEN = threading.local()  # this thread's open transaction per database: {db_path: (connection, pending)}


def _open_transactions() -> dict[Path, tuple[sqlite3.Connection, list[Callable[[], object]]]]:
    if not hasattr(_OPEN, "by_db"):
        _OPEN.by_db = {}
    return _OPEN.by_db


class StoreBase:
    """A handle on one store folder. Cheap to create; holds no open connection.

    Opening one makes the folder, puts the database in WAL mode and brings its layout to the current
    schema version (:mod:`core.app.store.schema`); a store made by newer code is refused, untouched."""

    def __init__(self, home: str | Path | None = None):
        self.home = Path(home).resolve() if home else home_dir()
        self.artifacts = self.home / "artifacts"
        self.db_path = self.home / "store.db"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        con = open_connection(self.db_path)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            upgrade(con, self.db_path)
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self, write: bool = True) -> Iterator[None]:
        """One write transaction around several of the store's calls on this thread: they all see, and
        commit or roll back, together (the check of who acts and the action it allows, say). Rows
        that must outlive a rollback (a refusal's audit row) are kept aside by :meth:`_after` and
        written once the transaction is over. Nested calls join the outer transaction. With ``write=False``
        it is a read transaction: one consistent snapshot for several reads, without the write lock."""
        open_now = _open_transactions()
        if self.db_path in open_now:
            yield
            return
        pending: list[Callable[[], object]] = []
        try:
            with self._connect(write) as con:
                open_now[self.db_path] = (con, pending)
                yield
        finally:
            open_now.pop(self.db_path, None)
            for write in pending:
                write()

    def _after(self, write: Callable[[], object]) -> None:
        """Do a write now, or, inside :meth:`transaction`, once it is over whatever its outcome
        (committed or rolled back)."""
        joined = _open_transactions().get(self.db_path)
        if joined is None:
            write()
        else:
            joined[1].append(write)

    @contextlib.contextmanager
    def _connect(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection for one unit of work; commits on success, rolls back on error. Inside
        :meth:`transaction` it is that transaction's connection (committed when that ends). A read
        (``write=False``) takes no write lock: in WAL mode it reads one consistent snapshot and never
        waits for a writer."""
        joined = _open_transactions().get(self.db_path)
        if joined is not None:
            yield joined[0]
            return
        con = open_connection(self.db_path)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA foreign_keys=ON")
        try:
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
            yield con
            con.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise self._disk_full() from exc
            raise
        finally:
            con.close()

    def os_failure(self, exc: OSError, otherwise: UserError) -> UserError:
        """What to tell the user about a file that could not be written or unpacked: a full disk (or quota) is
        said as such, in words and with the store's folder; any other cause as ``otherwise``."""
        return self._disk_full() if is_disk_full(exc) else otherwise

    def _disk_full(self) -> UserError:
        return UserError(
            f"the disk that holds the workbench's store ({self.home}) is full, so nothing was saved: free some space "
            "(or delete old repairs) and try again",
            "disk_full",
            home=str(self.home),
        )

    def _query(self, sql: str, params: tuple = ()) -> list[dict]:
        """Rows of one SELECT, read without the write lock."""
        with self._connect(write=False) as con:
            return [dict(r) for r in con.execute(sql, params).fetchall()]

    def _one(self, sql: str, params: tuple = ()) -> dict | None:
        rows = self._query(sql, params)
        return rows[0] if rows else None

    def _execute(self, sql: str, params: tuple = ()) -> int:
        """Run one write statement; returns lastrowid (for INSERT) or rowcount."""
        with self._connect() as con:
            cur = con.execute(sql, params)
            return cur.lastrowid if sql.lstrip().upper().startswith("INSERT") else cur.rowcount

    def artifact_dir(self, *parts: str) -> Path:
        """A folder under artifacts/, created on demand."""
        d = self.artifacts.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def inside_home(self, path: str | Path) -> bool:
        """Whether ``path`` (resolved) lies inside this store's folder."""
        home = self.home.resolve()
        target = Path(path).resolve()
        return target == home or home in target.parents
