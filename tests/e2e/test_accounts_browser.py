"""Two curators in two browser contexts (two people, two sessions) labelling the demo at once: saving
over a label the page has not seen asks first, and a page redraws when the other person labels."""

from __future__ import annotations

import pytest

from core.app import pool
from core.app.store import Store
from tests.e2e.conftest import ARTIFACTS, Server, counterexamples_as, settle
from tests.optional import need
from tests.wb_helpers import PASSWORDS, make_accounts, seed_demo_cache, wait_for

need("playwright")  # skips this file where playwright is missing, except in CI (tests/optional.py)


def _server(tmp_path, demo_dir, refresh: str) -> Server:
    home = tmp_path / "home"
    seed_demo_cache(home, demo_dir)
    make_accounts(Store(home))
    srv = Server(home, tmp_path, env={"BIASREPAIR_LABEL_REFRESH": refresh})
    srv.start()
    return srv


@pytest.fixture()
def no_refresh_server(tmp_path, demo_dir):
    srv = _server(tmp_path, demo_dir, "0")  # no polling: bob's page stays as it was drawn
    yield srv
    srv.stop()


@pytest.fixture()
def refresh_server(tmp_path, demo_dir):
    srv = _server(tmp_path, demo_dir, "2")
    yield srv
    srv.stop()


def test_two_curators_labelling_the_same_image_get_asked(no_refresh_server, browser):
    srv = no_refresh_server
    a_ctx, alice = counterexamples_as(browser, srv.url, "alice", open_demo=True)
    b_ctx, bob = counterexamples_as(browser, srv.url, "bob", open_demo=False)
    store = Store(srv.home)
    pid = store.projects()[0]["id"]
    top = pool.candidates(store, pid)[0]

    alice.locator(".st-key-quick_1 button").click()  # alice: "one"
    wait_for(lambda: pool.chosen_set(store, pid))
    settle(alice)
    bob.locator(".st-key-quick_0 button").click()  # bob, on the same image, still shown unlabelled
    question = bob.get_by_text("alice labelled this image “one”")
    question.wait_for()
    settle(bob)
    assert bob.get_by_text("You chose “zero”").count() == 1
    bob.screenshot(path=str(ARTIFACTS / "label_conflict_prompt.png"))
    assert [(c["key"], c["label"], c["by"]) for c in pool.chosen_set(store, pid)] == [(top["key"], "one", "alice")]

    bob.get_by_role("button", name="Overwrite with mine").click()
    wait_for(lambda: pool.chosen_set(store, pid)[0]["label"] == "zero")
    settle(bob)
    assert bob.get_by_text("alice labelled this image").count() == 0
    assert pool.chosen_set(store, pid)[0]["by"] == "bob"
    events = [(e["actor"], e["action"]) for e in store.audit_events(pid) if e["action"].startswith("label")]
    assert events == [("alice", "label_added"), ("bob", "label_changed")]
    a_ctx.close()
    b_ctx.close()
    # The passwords typed into the sign-in form reach neither the server's log nor the store.
    logs = b"".join(f.read_bytes() for f in srv.log_dir.glob("server*.log"))
    stored = b"".join(f.read_bytes() for f in srv.home.glob("store.db*"))
    for name in ("alice", "bob"):
        assert PASSWORDS[name].encode() not in logs and PASSWORDS[name].encode() not in stored


def test_a_page_redraws_when_another_curator_labels(refresh_server, browser):
    srv = refresh_server
    a_ctx, alice = counterexamples_as(browser, srv.url, "alice", open_demo=True)
    b_ctx, bob = counterexamples_as(browser, srv.url, "bob", open_demo=False)
    bob.get_by_text("The project's counterexamples (0)").wait_for()
    alice.locator(".st-key-quick_1 button").click()
    # Bob touches nothing: his page polls the store's change count and redraws.
    bob.get_by_text("The project's counterexamples (1)").wait_for(timeout=60_000)
    settle(bob)
    bob.screenshot(path=str(ARTIFACTS / "label_live_refresh.png"))
    a_ctx.close()
    b_ctx.close()
