"""The server process guards itself, checked against a real ``streamlit run app.py``:

* Streamlit's own upload endpoint (``/_stcore/upload_file/<session>/<file>``) takes files only from a
  session signed in with the curator role: a visitor on the sign-in page, the demo session and an
  approver are refused with 403 and the server keeps none of their bytes (Streamlit's upload manager,
  read through the server's ``/_stcore/metrics``, holds exactly the accepted curator's file);
* the workers' supervisor in the server process ends a killed worker's run and moves the queue with no
  browser open, and the worker it started leaves when the server stops.

Each browser session's Streamlit session id is read from the server's first message on its WebSocket
(``NewSession``), as Streamlit's frontend reads it.
"""

from __future__ import annotations

import os
import re
import signal

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from core.app import jobs, projects, runs
from core.app.store import Store, pid_alive
from tests.e2e.conftest import counterexamples_as, settle, sign_in
from tests.optional import need
from tests.wb_helpers import ALICE, FAST_RUN, label_top, wait_for

need("playwright")  # skips this file where playwright is missing, except in CI (tests/optional.py)

XSRF_COOKIE = "_streamlit_xsrf"
LONG_RUN = {"strength": 1000.0, "max_steps": 5000, "min_steps": 5000, "stop_rule": "none"}


def _session(browser, url: str):
    """A new browser tab on ``url``: (context, page, its Streamlit session id once known)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    ids: list[str] = []

    def on_frame(payload) -> None:
        if isinstance(payload, bytes):
            msg = ForwardMsg.FromString(payload)
            if msg.WhichOneof("type") == "new_session":
                ids.append(msg.new_session.initialize.session_id)

    pg.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    pg.goto(url)
    settle(pg)
    return ctx, pg, ids


def _put(ctx, url: str, session_id: str, name: str, data: bytes) -> int:
    """PUT one file to Streamlit's upload endpoint as this tab would (its XSRF cookie and header)."""
    xsrf = next(c["value"] for c in ctx.cookies() if c["name"] == XSRF_COOKIE)
    resp = ctx.request.put(
        f"{url}/_stcore/upload_file/{session_id}/{name}",
        multipart={"file": {"name": f"{name}.zip", "mimeType": "application/zip", "buffer": data}},
        headers={"X-Xsrftoken": xsrf},
    )
    return resp.status


def _held_bytes(ctx, url: str) -> int:
    """The bytes Streamlit's upload manager holds now (0 when it holds no file)."""
    text = ctx.request.get(f"{url}/_stcore/metrics?families=cache_memory_bytes").text()
    held = re.findall(r'cache_type="UploadedFileManager"[^}]*}\s+(\d+)', text)
    return sum(int(b) for b in held)


def test_the_upload_endpoint_takes_files_only_from_signed_in_curators(server, browser):
    url = server.url
    visitor, _, visitor_id = _session(browser, url)
    demo, demo_pg, demo_id = _session(browser, url)
    demo_pg.get_by_role("button", name="Open the demo").click()
    demo_pg.locator(".st-key-sign_out").wait_for()
    approver, ann_pg, ann_id = _session(browser, url)
    sign_in(ann_pg, "ann")
    curator, alice_pg, alice_id = _session(browser, url)
    sign_in(alice_pg, "alice")
    try:
        for ids in (visitor_id, demo_id, ann_id, alice_id):
            wait_for(lambda ids=ids: ids)
        refused = b"x" * (3 * 2**20)
        for ctx, ids in ((visitor, visitor_id), (demo, demo_id), (approver, ann_id)):
            assert _put(ctx, url, ids[0], "refused", refused) == 403
        accepted = b"y" * (2**20 + 7)
        assert _put(curator, url, alice_id[0], "accepted", accepted) == 204
        # Metrics may lag by their cache's few seconds: wait until the accepted file shows, then it is all.
        wait_for(lambda: _held_bytes(curator, url) > 0, timeout=60)
        assert _held_bytes(curator, url) == len(accepted)

        # Signed out, the same tab is refused again.
        alice_pg.locator(".st-key-sign_out button").click()
        alice_pg.locator(".st-key-signin_name").wait_for()
        assert _put(curator, url, alice_id[0], "again", refused) == 403
        assert "refused an upload" in (server.log_dir / f"server{server.starts}.log").read_text()
    finally:
        for ctx in (visitor, demo, approver, curator):
            ctx.close()


def test_the_supervisor_moves_the_queue_with_no_browser_open(server, browser):
    store = Store(server.home)
    try:
        pid = projects.open_demo(store, ALICE)  # in this test's own task worker, stopped at once
    finally:
        jobs.stop_spawned_workers()
    label_top(store, pid, 8)
    long_id = runs.submit_run(store, pid, "cpt", dict(LONG_RUN), ALICE, start_worker=False)
    fast_id = runs.submit_run(store, pid, "cpt", dict(FAST_RUN), ALICE, start_worker=False)

    ctx, _, _ = _session(browser, server.url)  # one page view starts the server's side of things
    ctx.close()  # and from here on no browser is open
    first = wait_for(lambda: store.run(long_id)["status"] == "running" and store.run(long_id)["worker_pid"])
    os.kill(first, signal.SIGKILL)

    # Nobody polls the run: the supervisor fails it with the cause and a new worker does the next one.
    wait_for(lambda: store.run(fast_id)["status"] in ("done", "failed"), timeout=600)
    assert store.run(fast_id)["status"] == "done", store.run(fast_id)["error"]
    assert store.run(long_id)["status"] == "failed"
    assert "killed by signal 9" in store.run(long_id)["error"]
    second = store.run(fast_id)["worker_pid"]
    assert second != first and pid_alive(second)

    server.stop()  # its worker notices its server is gone and leaves
    wait_for(lambda: not pid_alive(second), timeout=60)


def test_a_refused_pool_is_not_kept_in_the_servers_memory(server, browser, tmp_path):
    ctx, pg = counterexamples_as(browser, server.url, "alice", open_demo=True)
    try:
        pg.get_by_text("Add more candidate images").click()
        junk = tmp_path / "pool.zip"
        junk.write_bytes(b"not a zip" * 200_000)
        pg.locator(".st-key-up_pool input[type=file]").set_input_files(str(junk))
        settle(pg)
        wait_for(lambda: _held_bytes(ctx, server.url) == junk.stat().st_size, timeout=60)
        pg.locator(".st-key-load_pool button").click()
        pg.locator("[data-testid=stAlert]", has_text="not a valid zip file").wait_for()
        wait_for(lambda: _held_bytes(ctx, server.url) == 0, timeout=60)  # the refused file was let go
        settle(pg)
        pg.locator(".st-key-load_pool button").click()  # drawn with the file: pressed again, it does nothing
        settle(pg)
        assert pg.locator(".st-key-load_pool button").is_disabled()  # nothing left to load
        assert pg.locator("[data-testid=stException]").count() == 0
    finally:
        ctx.close()
