"""The store's schema version and numbered migrations (core/app/store/schema.py).

The fixtures in tests/fixtures/store_layouts/ are real stores made by earlier versions of the store code
through their own methods (the commit is named on each file's first line), dumped as SQL:

* ``first.sql``: the first layout (no task queue, no reference images, no accounts);
* ``reference_images.sql``: a task queue and reference images, but no named groups yet;
* ``before_disabled_accounts.sql``: accounts, sessions and failed sign-ins, before accounts could be disabled;
* ``before_schema_versions.sql``: the layout of the code just before schema versions existed.

Each must open in place with every row kept, at the current version and with the same layout as a new store.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.app import accounts
from core.app.store import SCHEMA_VERSION, LabelConflict, RunStatus, Store, schema
from core.app.store.schema import MIGRATIONS
from core.errors import UserError

LAYOUTS = Path(__file__).parent / "fixtures" / "store_layouts"
FIXTURES = sorted(p.name for p in LAYOUTS.glob("*.sql"))
ROOT = Path(__file__).resolve().parent.parent


def _db(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    return con


def _old_store(tmp_path: Path, fixture: str) -> Path:
    home = tmp_path / fixture.removesuffix(".sql")
    home.mkdir()
    with contextlib.closing(sqlite3.connect(home / "store.db")) as con:
        con.executescript((LAYOUTS / fixture).read_text(encoding="utf-8"))
    return home


def _rows(db: Path) -> dict[str, list[dict]]:
    """Every row of every table, in rowid order (tables without rowid aside: there are none)."""
    with contextlib.closing(_db(db)) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: [dict(r) for r in con.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in tables}


def _layout(db: Path) -> dict:
    """What a store's layout is, whatever order its columns were added in: each table's columns (name,
    type, not null, default, primary key), the CHECKs in its text, and the names of indexes and triggers."""
    with contextlib.closing(_db(db)) as con:
        master = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        out: dict = {"index": set(), "trigger": set()}
        for kind, name, table, sql in master.fetchall():
            if kind == "table" and name != "schema_version":
                cols = {tuple(r)[1:] for r in con.execute(f"PRAGMA table_info({name})")}
                checks = sorted(part.split(")")[0] for part in sql.split("CHECK (")[1:])
                out[name] = (cols, checks)
            elif kind in ("index", "trigger"):
                out[kind].add((name, table))
        return out


def _versions(db: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY version")]


def test_the_migrations_are_numbered_one_to_the_latest_in_order():
    assert [n for n, _ in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    assert all(fn.__doc__ and fn.__doc__.startswith(f"{n}:") for n, fn in MIGRATIONS)


LAST_UNVERSIONED = 9  # the migrations up to this one rebuild the layout the code had before schema versions


def test_a_new_store_is_at_the_latest_version_with_the_layout_the_code_had_before_versions(tmp_path):
    store = Store(tmp_path / "new")
    assert _versions(store.db_path) == list(range(1, SCHEMA_VERSION + 1))
    before = _old_store(tmp_path, "before_schema_versions.sql") / "store.db"
    with contextlib.closing(sqlite3.connect(before)) as con:  # plus what the migrations since then add, raw
        for n, fn in MIGRATIONS:
            if n > LAST_UNVERSIONED:
                fn(con)
        con.commit()
    assert _layout(store.db_path) == _layout(before)


def test_the_fixtures_are_the_layouts_the_store_upgrades_from():
    assert FIXTURES == [
        "before_disabled_accounts.sql",
        "before_schema_versions.sql",
        "first.sql",
        "reference_images.sql",
    ]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_an_old_store_upgrades_in_place_keeping_every_row(tmp_path, fixture):
    home = _old_store(tmp_path, fixture)
    before = _rows(home / "store.db")
    assert "schema_version" not in before
    store = Store(home)
    after = _rows(store.db_path)
    assert _versions(store.db_path) == list(range(1, SCHEMA_VERSION + 1))
    for table, rows in before.items():  # every row kept, with every value of the columns it had
        columns = rows[0].keys() if rows else ()
        assert [{k: r[k] for k in columns} for r in after[table]] == rows, table
    assert _layout(store.db_path) == _layout(Store(tmp_path / "new").db_path)
    with contextlib.closing(sqlite3.connect(store.db_path)) as con:
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.parametrize("fixture", FIXTURES)
def test_an_upgraded_store_works_as_a_new_one(tmp_path, fixture):
    store = Store(_old_store(tmp_path, fixture))
    (project,) = store.projects()
    pid = project["id"]
    assert [(c["item_path"], c["label"]) for c in store.labels(pid)] == [
        ("img/007.png", "seven"),
        ("img/011.png", "one"),
    ]
    pool = project["pool_dataset_id"]
    seen = store.label_versions(pid).get((pool, "img/007.png"), 0)  # 0 in a store made before label versions
    assert store.set_label(pid, pool, "img/007.png", "one", "red", "cy", expected_version=seen) == "seven"
    with pytest.raises(LabelConflict, match="cy labelled it one"):
        store.set_label(pid, pool, "img/007.png", "two", "red", "dee", expected_version=seen)
    run = store.run(1)
    assert run["status"] == RunStatus.DONE and run["config"] == {"strength": 10.0} and run["stop_reason"] == "all_fixed"
    assert [p["loss"] for p in store.progress(1)] == [2.0, 1.5]
    assert store.evaluation(project["base_model_id"], project["eval_dataset_id"])["metrics"]["accuracy"] == 0.5
    ref = store.add_dataset(pid, "reference", "typical.zip", store.home, "r1", 5)
    store.set_project(pid, reference_dataset_id=ref)
    assert store.project(pid)["reference_dataset_id"] == ref
    assert store.run_queued_detail(pid, 1) == {"run_id": 1, "labelled_by": {"ann": 1, "bob": 1}}
    with contextlib.closing(sqlite3.connect(store.db_path)) as con, pytest.raises(sqlite3.DatabaseError):
        con.execute("UPDATE audit SET actor = 'mallory'")  # the audit log stays append-only
    tid = store.submit_task("evaluate", {}, "cy", pid)
    assert store.claim_next_task(99)["id"] == tid and store.finish_task(tid, "done", result={})
    names = {u["name"]: u for u in accounts.users(store)}
    if fixture.startswith("before_"):  # the stores that had accounts keep them
        assert names["ann"]["roles"] == ["admin", "approver", "curator"] and accounts.four_eyes_relaxed(store)
        assert names["bob"]["disabled"] == (fixture == "before_schema_versions.sql")
    else:  # the others get their first account as a new store does, enabled
        assert names == {}
        accounts.create_user(store, None, "root", "long-enough-1", ["admin"])
        assert [(u["name"], u["disabled"]) for u in accounts.users(store)] == [("root", False)]


def test_opening_a_current_store_again_changes_nothing(tmp_path):
    home = _old_store(tmp_path, "first.sql")
    Store(home)
    rows = _rows(home / "store.db")
    Store(home)
    assert _rows(home / "store.db") == rows


def test_a_store_from_newer_code_is_refused_and_left_as_it_was(tmp_path):
    home = _old_store(tmp_path, "before_schema_versions.sql")
    with contextlib.closing(sqlite3.connect(home / "store.db")) as con, con:
        con.execute(schema.VERSION_TABLE)
        con.execute("INSERT INTO schema_version VALUES (?, 'later')", (SCHEMA_VERSION + 1,))
    rows, layout = _rows(home / "store.db"), _layout(home / "store.db")
    with pytest.raises(UserError, match=f"newer version of the workbench.*schema version {SCHEMA_VERSION + 1}") as exc:
        Store(home)
    assert exc.value.key == "store_too_new" and exc.value.params["latest"] == SCHEMA_VERSION
    assert _rows(home / "store.db") == rows and _layout(home / "store.db") == layout


def test_a_failing_migration_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    home = _old_store(tmp_path, "reference_images.sql")
    rows, layout = _rows(home / "store.db"), _layout(home / "store.db")

    def broken(con):
        con.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration failed")

    monkeypatch.setattr(schema, "MIGRATIONS", [*MIGRATIONS, (SCHEMA_VERSION + 1, broken)])
    monkeypatch.setattr(schema, "LATEST", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="migration failed"):
        Store(home)
    assert _rows(home / "store.db") == rows and _layout(home / "store.db") == layout  # no step of any migration


OPEN = "import sys; from core.app.store import Store; Store(sys.argv[1])"


def test_processes_opening_an_old_store_at_once_upgrade_it_once(tmp_path):
    home = _old_store(tmp_path, "first.sql")
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(home)], cwd=ROOT) for _ in range(4)]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    assert _versions(home / "store.db") == list(range(1, SCHEMA_VERSION + 1))
    assert len(Store(home).labels(1)) == 2


def test_the_workbench_says_so_on_a_store_from_newer_code(tmp_path, monkeypatch):
    home = Store(tmp_path / "newer").home
    with contextlib.closing(sqlite3.connect(home / "store.db")) as con, con:
        con.execute("INSERT INTO schema_version VALUES (?, 'later')", (SCHEMA_VERSION + 5,))
    monkeypatch.setenv("BIASREPAIR_HOME", str(home))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["lang"] = "ja"
    at.run()
    assert not at.exception and len(at.error) == 1
    assert f"スキーマ版 {SCHEMA_VERSION + 5}" in at.error[0].value and str(home) in at.error[0].value
