"""Streamlit's own upload endpoint, open only to sessions that may upload.

A file picked in an ``st.file_uploader`` reaches the server outside the app script: the browser PUTs it
to ``/_stcore/upload_file/<session id>/<file id>`` and Streamlit keeps it in memory (its
``MemoryUploadedFileManager``) while the session lives, whether or not the page ever uses it. Streamlit
asks only that the session exists, so a visitor on the sign-in page could leave hundreds of megabytes
in the server's memory. :func:`install` puts the workbench's question in front. Streamlit's endpoint
(1.67, ``web/server/starlette/starlette_routes.py``) asks ``runtime.is_active_session(session id)``
before it reads the request's body; here that question also needs the session to be signed in with an
account that may upload (:func:`core.app.uploads.may_send_files`: curator role, not the demo), else the
request is refused with 403 and no byte of the file is read. The upload manager's ``add_file`` asks
again once the body is in (a session signed out while its file was arriving): the file is dropped, 403.
``tests/test_upload_guard.py`` checks that these two calls are still where the guard expects them.

app.py installs it at the top of every script run (once per server process: later calls return at
once). The very first session of a server process is the one that triggers that first run, so until
its first lines have run (milliseconds) the endpoint is Streamlit's own.

:func:`release` hands back the memory of a file the app refused after it arrived (too big a pool, not
a zip): the file leaves the upload manager and the widget's state, and the allocator returns the freed
pages to the system.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
from typing import Any

import streamlit as st
from starlette.exceptions import HTTPException
from streamlit import runtime as st_runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.app import uploads
from core.app.store import Store

TOKEN_KEY = "auth_token"  # where app.py keeps the session token in st.session_state
REFUSED = "sign in with an account that may upload files (curator) before sending one"
_INSTALLED = "_biasrepair_upload_guard"
_log = logging.getLogger(__name__)


def _token(rt: Any, session_id: str) -> str | None:
    """The workbench session token held by the Streamlit session ``session_id``; None when there is none."""
    app_session = rt.get_app_session(session_id)
    if app_session is None:
        return None
    state = app_session.session_state
    return state[TOKEN_KEY] if TOKEN_KEY in state else None


def session_may_upload(rt: Any, store: Store, session_id: str) -> bool:
    """Whether the Streamlit session ``session_id`` may send files now; False on any doubt."""
    try:
        return uploads.may_send_files(store, _token(rt, session_id))
    except Exception:  # a session ending meanwhile, a locked database: refuse, never let it through
        _log.exception("upload guard: could not check session %s", session_id[:8])
        return False


def _refuse(session_id: str, when: str) -> HTTPException:
    _log.warning("refused an upload %s from session %s: not signed in with the curator role", when, session_id[:8])
    return HTTPException(status_code=403, detail=REFUSED)


def install(store: Store) -> bool:
    """Guard the running server's upload endpoint (see the module's docstring); returns whether this call
    installed it (False: already installed, or no Streamlit server runs in this process, as under AppTest)."""
    if not st_runtime.exists():
        return False
    rt = st_runtime.get_instance()
    if getattr(rt, _INSTALLED, False):
        return False
    mgr = rt.uploaded_file_mgr
    active, add_file = rt.is_active_session, mgr.add_file

    @functools.wraps(active)
    def is_active_session(session_id: str) -> bool:
        if not active(session_id):
            return False
        if not session_may_upload(rt, store, session_id):
            raise _refuse(session_id, "before its body was read")
        return True

    @functools.wraps(add_file)
    def guarded_add_file(session_id: str, file: Any) -> None:
        if not session_may_upload(rt, store, session_id):
            del file  # the body read so far goes with the request
            raise _refuse(session_id, "after its body arrived")
        add_file(session_id, file)

    rt.is_active_session = is_active_session
    mgr.add_file = guarded_add_file
    setattr(rt, _INSTALLED, True)
    return True


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim`` (None elsewhere): returns freed heap pages to the system."""
    name = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(name).malloc_trim if name else None
    return None


def release(
    session_id: str, file_ids: list[str], state: Any = None, widget_key: str | None = None, mgr: Any = None
) -> None:
    """Forget uploaded files the app refused: out of Streamlit's upload manager (``mgr``, default the running
    server's) and (``state``, ``widget_key``: ``st.session_state`` and the uploader's key) out of the widget's
    state, then the memory handed back to the system (a collection, then glibc's ``malloc_trim``), so that a
    refused file of hundreds of megabytes does not stay resident for the rest of the session."""
    if mgr is None and st_runtime.exists():
        mgr = st_runtime.get_instance().uploaded_file_mgr
    for file_id in file_ids if mgr is not None else ():
        mgr.remove_file(session_id, file_id)
    if state is not None and widget_key is not None and widget_key in state:
        del state[widget_key]
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def forget(widget_key: str, *files: Any) -> None:
    """A page refused the file (or files) ``files`` of the uploader ``widget_key``: close them and release
    them (:func:`release`) for this session. The uploader then gives None (its chip stays until removed)."""
    ctx = get_script_run_ctx()
    for f in files:
        # An UploadedFile is a BytesIO: reading it may have made it a private copy of the bytes, which the
        # page's functions (kept as widget callbacks) hold until the page runs again. Closed, it lets go.
        f.close()
    if ctx is not None:
        release(ctx.session_id, [f.file_id for f in files], st.session_state, widget_key)
