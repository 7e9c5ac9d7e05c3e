"""Times in the browser's own zone (docs/WORKBENCH.md, "Page addresses, times and numbers"): a browser in Tokyo reads the History in JST with the
zone named, not raw UTC ISO strings; at 1280×720, in Japanese."""

from __future__ import annotations

from core.app import display
from core.app.i18n import translator
from core.app.store import Store
from tests.e2e.conftest import ARTIFACTS, settle
from tests.optional import need

need("playwright")  # skips this file where playwright is missing, except in CI (tests/optional.py)


def test_history_times_are_in_the_browsers_zone(server, browser):
    t = translator("ja")
    ctx = browser.new_context(viewport={"width": 1280, "height": 720}, timezone_id="Asia/Tokyo")
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(server.url + "/?lang=ja")
    settle(pg)
    pg.get_by_role("button", name=t("model_open_demo")).click()
    pg.get_by_text(t("model_bias_header")).first.wait_for()
    settle(pg)
    pg.get_by_role("link", name=t("nav_history")).click()
    # The grid is drawn on a canvas; its cells are also in an accessible (hidden) table.
    pg.locator("th", has_text=t("history_col_when", zone="Asia/Tokyo")).first.wait_for(state="attached")
    settle(pg)
    first = Store(server.home).audit_events(Store(server.home).projects()[0]["id"])[0]
    local = display.local_time(first["ts"], "Asia/Tokyo", with_zone=False, seconds=True)
    assert local != first["ts"] and local[11:13] != first["ts"][11:13]  # nine hours ahead of UTC
    table = pg.locator("[data-testid=stDataFrame]").first
    table.wait_for()
    pg.wait_for_timeout(500)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / "history_tokyo_ja.png"))
    cells = table.locator("table").first.inner_text()
    assert local in cells and first["ts"] not in cells
    ctx.close()
