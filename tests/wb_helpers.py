"""Helpers shared by the workbench tests: a store seeded with the session's demo, pool truth, waiting.

The demo is built once per session by the ``demo_dir`` fixture (tests/conftest.py); seeding a
store's ``demo_cache`` with it lets ``open_demo`` skip the build, so every test gets a fresh store
in well under a second.
"""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from pathlib import Path

from core.app import accounts
from core.app.accounts import User

PARTS = ("model", "eval", "pool", "counterexamples", "reference")
APP = str(Path(__file__).resolve().parent.parent / "app.py")  # the workbench, for AppTest

# The people the service-layer tests act as (core functions take a signed-in User, not a name).
ALICE = User("alice", ["curator"])
BOB = User("bob", ["curator"])
MIA = User("mia", ["curator", "approver"])
ANN = User("ann", ["approver"])
ROOT_ADMIN = User("root", ["admin"])
# Their accounts for the page and browser tests. Each password is distinctive, so a test can grep
# the store, the logs and the audit rows for it (tests/test_accounts.py).
PASSWORDS = {
    "root": "root-Secret-7d41",
    "alice": "alice-Secret-93fa",
    "bob": "bob-Secret-0c5e",
    "mia": "mia-Secret-b827",
    "ann": "ann-Secret-4e19",
}


def make_accounts(store) -> None:
    """The test accounts (root first, as the first-run admin; then the others, made by root)."""
    if accounts.has_users(store):
        return
    accounts.create_user(store, None, "root", PASSWORDS["root"], ROOT_ADMIN.roles)
    for u in (ALICE, BOB, MIA, ANN):
        accounts.create_user(store, ROOT_ADMIN, u, PASSWORDS[u], u.roles)


def sign_in_app(at, store, name: str = "mia"):
    """Sign an AppTest in as ``name`` the way the sign-in form does: a session token for the password."""
    make_accounts(store)
    at.session_state["auth_token"] = accounts.sign_in(store, name, PASSWORDS[name])
    return at


FAST_RUN = {"strength": 1000.0, "max_steps": 30, "min_steps": 5}


def seed_demo_cache(home: Path, demo_dir: Path) -> None:
    """Point ``home``'s demo cache at an already built demo."""
    cache = Path(home) / "demo_cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "paths.json").write_text(json.dumps({p: str(Path(demo_dir) / p) for p in PARTS}))
    (cache / "BUILT").write_text("ok")


def open_demo_here(store, actor: User = ALICE) -> int:
    """The demo project opened as :func:`core.app.projects.open_demo` opens it (the same permission check,
    then the task worker's ``open_demo`` task), with the task run in this process: for tests whose subject
    is what comes after, not the task worker, whose start alone takes seconds (a Python process importing
    torch). Opening through the worker is tested in tests/test_workbench.py, tests/test_jobs.py and the
    page tests."""
    from core.app import compute

    assert not actor.demo, "a demo session opens a sandbox: use projects.open_demo"
    accounts.require(store, actor, None, "open_demo")
    return int(compute.open_demo(store, {}, actor)["project_id"])


def demo_store(home: Path, demo_dir: Path, actor: User = ALICE):
    """A store at ``home`` with the demo opened (by its task worker, stopped afterwards): (store, demo project)."""
    from core.app import jobs, projects
    from core.app.store import Store

    seed_demo_cache(home, demo_dir)
    store = Store(home)
    try:
        pid = projects.open_demo(store, actor)
    finally:
        jobs.stop_spawned_workers()
    return store, store.project(pid)


def pool_truth(store, project_id: int) -> dict[str, str]:
    """The demo pool's true labels by image path (the UI never shows these; tests use them)."""
    pool = store.dataset(store.project(project_id)["pool_dataset_id"])
    with open(Path(pool["path"]) / "manifest.csv", encoding="utf-8") as fh:
        return {r["path"]: r["label"] for r in csv.DictReader(fh)}


def label_top(store, project_id: int, n: int, actor: User = ALICE) -> list[str]:
    """Label the n top-ranked candidates with their true labels; returns their keys."""
    from core.app import pool

    truth = pool_truth(store, project_id)
    keys = []
    for c in pool.candidates(store, project_id)[:n]:
        pool.set_label(store, project_id, c["key"], truth[c["path"]], actor)
        keys.append(c["key"])
    return keys


def wait_for(predicate, timeout: float = 120.0, every: float = 0.2):
    """Poll until predicate() is truthy and return it; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


def make_zip(files: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    """An in-memory zip of name → bytes, as a user's upload would be (``method``: stored, or deflated)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_folder_bytes(folder: Path) -> bytes:
    """A folder as zip bytes, as a user would upload it."""
    return make_zip(
        {f.relative_to(folder).as_posix(): f.read_bytes() for f in sorted(Path(folder).rglob("*")) if f.is_file()}
    )


def strip_attributes(folder: Path) -> dict[str, bytes]:
    """A dataset folder's files with the ``attribute`` column removed from manifest.csv: labels only,
    as a user who brings a plain folder of labelled images has."""
    files = {f.relative_to(folder).as_posix(): f.read_bytes() for f in sorted(Path(folder).rglob("*")) if f.is_file()}
    rows = list(csv.DictReader(io.StringIO(files["manifest.csv"].decode("utf-8"))))
    cols = [c for c in rows[0] if c != "attribute"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    files["manifest.csv"] = buf.getvalue().encode("utf-8")
    return files


def no_attribute_project(store, demo_dir: Path, actor: User = ALICE) -> int:
    """A project made through the upload services from the demo's model, its evaluation set and its
    pool with every attribute column stripped. Returns its id."""
    from core.app import uploads

    pid = uploads.upload_model_zip(store, zip_folder_bytes(Path(demo_dir) / "model"), "plain.zip", actor)
    uploads.upload_eval_zip(store, pid, make_zip(strip_attributes(Path(demo_dir) / "eval")), "plain_eval.zip", actor)
    pool_files = strip_attributes(Path(demo_dir) / "pool")
    del pool_files["manifest.csv"]  # a plain folder of images
    uploads.upload_pool_zip(store, pid, make_zip(pool_files), "plain_pool.zip", actor)
    return pid
