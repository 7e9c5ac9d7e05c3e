"""Page URLs and the language switch on a freshly started server, in a real browser at 1280×720.

The first request after a server start is the hard case: a page URL typed or reloaded must run
app.py (sidebar, language, project) and the page under its own address; switching to Japanese on
the empty start page must take at the first click and survive a reload. Signed out, a page URL
shows the sign-in form under that address, and the page itself once signed in (a reload or a
typed URL starts a new browser session, so it asks for the password again).
"""

from __future__ import annotations

import re

from core.app.i18n import translator
from tests.e2e.conftest import ARTIFACTS, settle, sign_in
from tests.optional import need

need("playwright")  # skips this file where playwright is missing, except in CI (tests/optional.py)

VIEW = {"width": 1280, "height": 720}
# Streamlit's frontend looks for its server under the page's path first and then under the root
# (streamlit/streamlit#7074); those probes are the only 4xx answers allowed.
BASE_PATH_PROBE = re.compile(r"/[a-z]+/_stcore/(health|host-config)$")


def test_typed_and_reloaded_page_urls_and_japanese_on_the_empty_start_page(server, browser):
    ja, en = translator("ja"), translator("en")
    ctx = browser.new_context(viewport=VIEW)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    failed = []
    pg.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)

    # The first request of a fresh server is a page URL: app.py runs (the sidebar is there) and,
    # signed out, the sign-in form is drawn under that address.
    pg.goto(server.url + "/model")
    language = pg.get_by_text("日本語")
    language.wait_for()
    assert pg.url.startswith(server.url + "/model")
    pg.get_by_role("heading", name=en("signin_title")).wait_for()
    # Japanese at the first click, without waiting for the page to settle.
    language.click()
    pg.get_by_role("heading", name=ja("signin_title")).wait_for()
    settle(pg)
    pg.screenshot(path=str(ARTIFACTS / "signin_page_ja.png"))
    sign_in(pg, "alice")
    pg.get_by_role("heading", name=ja("model_title")).wait_for()
    settle(pg)
    assert "lang=ja" in pg.url and pg.locator("input[type=radio]").nth(1).is_checked()
    assert pg.url.startswith(server.url + "/model")
    pg.screenshot(path=str(ARTIFACTS / "url_model_ja_first_click.png"))
    pg.reload()
    pg.get_by_role("heading", name=ja("signin_title")).wait_for()
    sign_in(pg, "alice")
    pg.get_by_role("heading", name=ja("model_title")).wait_for()
    settle(pg)
    assert pg.url.startswith(server.url + "/model")

    # Every page's URL works when typed, in the language of the query string.
    for path, title in (("review", "review_title"), ("tune", "tune_title"), ("history", "history_title")):
        pg.goto(f"{server.url}/{path}?lang=en")
        sign_in(pg, "alice")
        pg.get_by_role("heading", name=en(title)).wait_for()
        settle(pg)
        assert pg.get_by_text("Page not found").count() == 0, path
        assert pg.url.startswith(f"{server.url}/{path}"), pg.url
    pg.screenshot(path=str(ARTIFACTS / "url_history_typed_en.png"))

    # The bare address opens the Model page under its own URL.
    pg.goto(server.url + "/?lang=en")
    sign_in(pg, "alice")
    pg.get_by_role("heading", name=en("model_title")).wait_for()
    settle(pg)
    assert pg.url.startswith(server.url + "/model")
    assert [u for u in failed if not BASE_PATH_PROBE.search(u.split("?")[0])] == [], failed
    ctx.close()
