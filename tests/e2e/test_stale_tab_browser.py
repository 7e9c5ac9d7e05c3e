"""A tab left open while its account is disabled acts no more: the label button's callback, which
runs with the person the page was drawn for, is refused by the store's fresh check (core/app/accounts.py)."""

from __future__ import annotations

from core.app import accounts, pool
from core.app.store import Store
from tests.e2e.conftest import ARTIFACTS, Server, counterexamples_as, settle
from tests.optional import need
from tests.wb_helpers import ROOT_ADMIN, make_accounts, seed_demo_cache

need("playwright")  # skips this file where playwright is missing, except in CI (tests/optional.py)


def test_a_disabled_curators_open_tab_saves_no_label(tmp_path, demo_dir, browser):
    home = tmp_path / "home"
    seed_demo_cache(home, demo_dir)
    make_accounts(Store(home))
    srv = Server(home, tmp_path)
    srv.start()
    try:
        ctx, pg = counterexamples_as(browser, srv.url, "alice", open_demo=True)
        store = Store(home)
        pid = store.projects()[0]["id"]

        accounts.set_disabled(store, ROOT_ADMIN, "alice", True)  # by an admin elsewhere, the tab still open
        pg.locator(".st-key-quick_1 button").click()
        pg.locator(".st-key-signin_name").wait_for()  # the tab is signed out ...
        settle(pg)
        pg.screenshot(path=str(ARTIFACTS / "stale_tab_refused.png"))
        assert pool.chosen_set(store, pid) == []  # ... and its click saved nothing
        events = store.audit_events()
        last = max(i for i, e in enumerate(events) if e["action"] == "account_disabled")
        after = [(e["actor"], e["action"], e["detail"].get("session_ended")) for e in events[last + 1 :]]
        assert after == [("alice", "forbidden", True)]
        ctx.close()
    finally:
        srv.stop()
