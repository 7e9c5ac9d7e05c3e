"""The upload guard (serving/upload_guard.py): who may send files, that the pinned Streamlit still asks the
two questions the guard answers (and nothing else asks them), and that a refused file is let go. The guard
against a real server: tests/e2e/test_server_guards_browser.py."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
import streamlit
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
from streamlit.runtime.uploaded_file_manager import UploadedFileRec

from core.app import accounts, uploads
from core.app.accounts import User
from core.app.store import Store
from core.formats.meta import MAX_MODEL_BYTES
from serving import upload_guard
from tests.wb_helpers import PASSWORDS, ROOT_ADMIN, make_accounts

ROOT = Path(__file__).resolve().parent.parent
STREAMLIT = Path(streamlit.__file__).parent
ROUTES = STREAMLIT / "web" / "server" / "starlette" / "starlette_routes.py"


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "home")
    make_accounts(s)
    return s


def test_only_a_signed_in_curator_may_send_files(store):
    may = uploads.may_send_files
    alice = accounts.sign_in(store, "alice", PASSWORDS["alice"])  # curator
    mia = accounts.sign_in(store, "mia", PASSWORDS["mia"])  # curator and approver
    root = accounts.sign_in(store, "root", PASSWORDS["root"])  # admin
    ann = accounts.sign_in(store, "ann", PASSWORDS["ann"])  # approver only
    demo = accounts.demo_session(store)
    assert may(store, alice) and may(store, mia) and may(store, root)
    assert not may(store, None) and not may(store, "") and not may(store, "no-such-token")
    assert not may(store, ann) and not may(store, demo)
    accounts.sign_out(store, alice)
    assert not may(store, alice)  # the session ended
    accounts.set_disabled(store, ROOT_ADMIN, "mia", True)
    assert not may(store, mia)  # the account is disabled


def test_the_stated_limits_are_the_workbenchs_own_and_the_server_takes_no_more(monkeypatch):
    """What an uploader states ("Limit … per file") is what the workbench takes of that kind of file, and the
    server's own cap (.streamlit/config.toml, which Streamlit states for an uploader without a limit of its
    own) is :data:`uploads.SERVER_UPLOAD_MB`; the README's reverse proxy takes as much."""
    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))["server"]
    assert server["maxUploadSize"] == uploads.SERVER_UPLOAD_MB
    assert f"client_max_body_size {uploads.SERVER_UPLOAD_MB}m;" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert uploads.upload_limit_mb("model") * 2**20 == MAX_MODEL_BYTES
    assert uploads.upload_limit_mb("images_zip") * 2**20 == uploads.MAX_POOL_ZIP_BYTES
    assert uploads.upload_limit_mb("image") == uploads.SERVER_UPLOAD_MB
    assert uploads.upload_limit_mb("eval_zip") == uploads.SERVER_UPLOAD_MB  # it may unpack to 1 GB
    monkeypatch.setenv("BIASREPAIR_MAX_UNZIPPED_MB", "100")
    assert uploads.upload_limit_mb("eval_zip") == 100
    for kind in ("model", "images_zip", "eval_zip", "image"):
        assert 1 <= uploads.upload_limit_mb(kind) <= server["maxUploadSize"], kind


def test_who_may_not_upload_gets_a_line_saying_who_may():
    assert uploads.no_upload_key(User("alice", ["curator"])) is None
    assert uploads.no_upload_key(User("root", ["admin"])) is None  # an admin may do everything
    assert uploads.no_upload_key(User("ann", ["approver"])) == "upload_curators_only"
    assert uploads.no_upload_key(None) == "upload_curators_only"
    assert uploads.no_upload_key(User("demo", ["curator"], demo=True)) == "upload_not_in_demo"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == name
    ]


def test_the_pinned_streamlit_asks_the_guard_before_it_reads_an_upload():
    """Streamlit's upload handler asks ``runtime.is_active_session`` before it reads the body and stores the
    file with ``upload_mgr.add_file``; no other server code calls either, so the guard's answers stop uploads
    and nothing else. An upgrade of Streamlit that moves them fails here."""
    tree = ast.parse(ROUTES.read_text(encoding="utf-8"))
    put = next(n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef) and n.name == "_upload_put")
    (asked,) = _calls(put, "is_active_session")
    (stored,) = _calls(put, "add_file")
    (read,) = _calls(put, "stream")
    assert asked.lineno < read.lineno < stored.lineno
    elsewhere = []
    for path in STREAMLIT.rglob("*.py"):
        if "testing" in path.parts or path == ROUTES:
            continue
        calls = _calls(ast.parse(path.read_text(encoding="utf-8")), "is_active_session")
        calls += _calls(ast.parse(path.read_text(encoding="utf-8")), "add_file")
        elsewhere += [f"{path.relative_to(STREAMLIT)}:{c.lineno}" for c in calls]
    assert elsewhere == ["runtime/runtime.py:468"]  # Runtime.is_active_session asking its session manager


def test_a_refused_file_is_let_go():
    mgr = MemoryUploadedFileManager("/_stcore/upload_file")
    mgr.add_file("s1", UploadedFileRec("f1", "pool.zip", "application/zip", b"z" * 2**20))
    mgr.add_file("s1", UploadedFileRec("f2", "kept.zip", "application/zip", b"k"))
    state = {"up_pool": object(), "other": 1}
    upload_guard.release("s1", ["f1"], state, "up_pool", mgr=mgr)
    assert mgr.get_files("s1", ["f1"]) == []  # no longer held by the upload manager
    assert [r.name for r in mgr.get_files("s1", ["f2"])] == ["kept.zip"]  # another file is untouched
    assert state == {"other": 1}  # nor by the uploader's state
    assert mgr.get_stats()["cache_memory_bytes"][0].byte_length == 1
