"""At 1280×720, in English and Japanese, each main page shows its essential thing on the first screen, without
scrolling: Model the finding and the heat map; Counterexamples the gallery and the label bar; Repair the start
button and the live progress; Review the verdict, the card and what the strength (α) slider changes. Each element's
bounding box must lie inside the viewport while the page is scrolled to its top. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import pytest

from core.app import similar
from core.app.i18n import translator
from core.app.store import Store
from tests.e2e.conftest import ARTIFACTS, settle, sign_in
from tests.optional import need
from tests.run_fixtures import make_tradeoff_run
from tests.wb_helpers import label_top

need("playwright")  # skips this file where playwright is missing, except in CI (tests/optional.py)

VIEW = {"width": 1280, "height": 720}


def _to_top(pg) -> None:
    """Scroll Streamlit's main area (it scrolls inside the page) and the window to the top."""
    pg.evaluate(
        "() => { window.scrollTo(0, 0); document.querySelectorAll('[data-testid=stMain], section.main, "
        "[data-testid=stAppViewContainer]').forEach(e => e.scrollTo(0, 0)); }"
    )
    pg.wait_for_timeout(200)


def _outside(pg, selectors: dict[str, str]) -> dict[str, dict | None]:
    """The elements (by name) whose box is not inside the first screen, with their boxes."""
    out = {}
    for name, sel in selectors.items():
        loc = pg.locator(sel).first
        loc.wait_for()
        box = loc.bounding_box()
        inside = (
            box is not None
            and box["height"] > 0
            and box["x"] >= 0
            and box["y"] >= 0
            and box["x"] + box["width"] <= VIEW["width"] + 0.5
            and box["y"] + box["height"] <= VIEW["height"] + 0.5
        )
        if not inside:
            out[name] = box
    return out


def _page(pg, link: str, wait: str, name: str, selectors: dict[str, str]) -> dict:
    pg.get_by_role("link", name=link).click()
    pg.locator(wait).first.wait_for()
    settle(pg)
    _to_top(pg)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"first_screen_{name}.png"))
    return _outside(pg, selectors)


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_each_pages_essential_element_is_on_the_first_screen(server, browser, lang):
    t = translator(lang)
    ctx = browser.new_context(viewport=VIEW)
    pg = ctx.new_page()
    pg.set_default_timeout(90_000)
    pg.goto(server.url + ("/?lang=ja" if lang == "ja" else "/"))
    sign_in(pg, "mia")
    pg.get_by_role("button", name=t("model_open_demo")).click()
    pg.get_by_text(t("model_bias_header")).first.wait_for()
    settle(pg)
    store = Store(server.home)
    pid = store.projects()[0]["id"]
    label_top(store, pid, 6)
    make_tradeoff_run(store, pid)

    missing = {}
    missing["model"] = _page(
        pg,
        t("nav_model"),
        ".st-key-model_heatmap",
        f"model_{lang}",
        {"finding": ".st-key-model_finding", "heat map": ".st-key-model_heatmap"},
    )
    missing["counterexamples"] = _page(
        pg,
        t("nav_counterexamples"),
        "[class*='st-key-ce_tile_']",
        f"counterexamples_{lang}",
        {"label bar": ".st-key-ce_labelbar", "first tile": "[class*='st-key-ce_tile_']"},
    )
    # "More like this" on the first tile: the gallery shows its look-alikes (the model's own features), to label.
    pg.locator("[class*='st-key-like_'] button:visible").first.click()
    pg.locator(".st-key-ce_like_back").wait_for()
    settle(pg)
    _to_top(pg)
    pg.screenshot(path=str(ARTIFACTS / f"first_screen_more_like_this_{lang}.png"))
    assert pg.locator("[class*='st-key-like_'] button:visible").count() == similar.MORE_LIKE_THIS
    missing["more like this"] = _outside(
        pg, {"label bar": ".st-key-ce_labelbar", "first look-alike": "[class*='st-key-ce_tile_'] img"}
    )
    pg.locator("[class*='st-key-focus_'] button:visible").first.click()
    settle(pg)
    pg.locator(".st-key-ce_quick_buttons button").nth(3).click()
    settle(pg)
    assert len(store.labels(pid)) == 7  # the six labelled before and one look-alike
    pg.locator(".st-key-ce_like_back button").click()
    settle(pg)
    missing["repair"] = _page(
        pg,
        t("nav_tune"),
        ".st-key-tune_live [data-testid=stProgress]",
        f"repair_{lang}",
        {"start": ".st-key-tune_start button", "live progress": ".st-key-tune_live [data-testid=stProgress]"},
    )
    review = {
        "verdict": ".st-key-summary_card [data-testid=stAlert]",
        "card": ".st-key-summary_card",
        "α slider": ".st-key-alpha_box",
    }
    missing["review"] = _page(pg, t("nav_review"), ".st-key-alpha_box", f"review_{lang}", review)
    # One step down the strength slider: the preview line and the card at α 0.95 stay on the first screen.
    pg.locator(".st-key-alpha_box input[type=range]").focus()
    pg.keyboard.press("ArrowLeft")
    pg.get_by_text(t("review_alpha_preview", alpha="0.95", share="95", fixed="", n="", fixed_full="", run="")[:8])
    pg.locator(".st-key-alpha_box [data-testid=stAlert]").wait_for()
    settle(pg)
    _to_top(pg)
    pg.screenshot(path=str(ARTIFACTS / f"first_screen_review_alpha_{lang}.png"))
    missing["review at α 0.95"] = _outside(pg, {**review, "α effect": ".st-key-alpha_box [data-testid=stAlert]"})
    assert not any(missing.values()), missing
    ctx.close()
