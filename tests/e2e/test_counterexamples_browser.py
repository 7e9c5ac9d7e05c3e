"""The Counterexamples page at meeting size (1280×720), in English and Japanese (docs/WORKBENCH.md).

Compact tiles (more than one row of images in view under the label bar), label buttons whose words
are not cut, a bulk-label bar that stays in view when boxes further down are ticked, and digit keys
that label the image shown in the label bar and outlined on the grid, never one scrolled away.
"""

from __future__ import annotations

import pytest

from core.app import pool, projects
from core.app.i18n import translator
from core.app.store import Store
from tests.e2e.conftest import ARTIFACTS, settle
from tests.optional import need
from tests.wb_helpers import wait_for

need("playwright")  # skips this file where playwright is missing, except in CI (tests/optional.py)

VIEW = {"width": 1280, "height": 720}


def _in_view(box: dict | None) -> bool:
    return bool(box) and box["y"] >= 0 and box["y"] + box["height"] <= VIEW["height"]


def _visible_tiles(pg) -> int:
    """Tiles of the grid wholly on screen and not under the label bar."""
    bar = pg.locator(".st-key-ce_labelbar").bounding_box()
    tiles = pg.locator("[class*='st-key-ce_tile_']")
    boxes = [tiles.nth(i).bounding_box() for i in range(tiles.count())]
    return sum(1 for b in boxes if _in_view(b) and b["y"] >= bar["y"] + bar["height"] - 1)


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_counterexamples_at_1280x720_compact_tiles_bar_in_view_and_a_visible_key_target(server, browser, lang):
    t = translator(lang)
    ctx = browser.new_context(viewport=VIEW)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(server.url + f"/?lang={lang}")
    settle(pg)
    pg.get_by_role("button", name=t("model_open_demo")).click()
    pg.get_by_text(t("model_bias_header")).first.wait_for()
    settle(pg)
    store = Store(server.home)
    pid = store.projects()[0]["id"]
    names = projects.project_summary(store, pid)["class_names"]
    pg.get_by_role("link", name=t("nav_counterexamples")).click()
    pg.locator(".st-key-ce_labelbar").wait_for()
    settle(pg)
    assert pg.locator("[data-testid=stException]").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"ce_top_{lang}.png"))

    # Every label button shows its whole word and its key (nothing cut to "th…").
    for i, name in enumerate(names):
        button = pg.locator(f".st-key-quick_{i} button")
        assert button.inner_text().replace("\n", " ").split()[0] == name
        cut = button.evaluate(
            "b => Array.from(b.querySelectorAll('*')).some(e => e.scrollWidth > e.clientWidth + 1)"
            " || b.scrollWidth > b.clientWidth + 1"
        )
        assert not cut, f"the {name} button's text is cut"

    # Scrolled to the grid: the bar stays at the top, and more than one row of tiles fits under it.
    pg.locator(".st-key-ce_tile_1").scroll_into_view_if_needed()
    pg.mouse.move(700, 500)
    pg.mouse.wheel(0, 400)
    pg.wait_for_timeout(500)
    assert _in_view(pg.locator(".st-key-ce_labelbar").bounding_box())
    # Where the wheel leaves the grid depends on what is above it (the demo banner, for one): bring
    # the second row of tiles to just under the bar, as a user scrolling on would, then count.
    bar = pg.locator(".st-key-ce_labelbar").bounding_box()
    row2 = pg.locator("[class*='st-key-ce_tile_']").nth(6).bounding_box()
    pg.mouse.wheel(0, row2["y"] - (bar["y"] + bar["height"] + 4))
    pg.wait_for_timeout(500)
    assert _in_view(pg.locator(".st-key-ce_labelbar").bounding_box())
    assert _visible_tiles(pg) >= 12, "fewer than two rows of six tiles are in view under the label bar"
    pg.screenshot(path=str(ARTIFACTS / f"ce_grid_{lang}.png"))

    # Tick a box in the last row: the bulk-label button is still in view and counts it.
    last = pg.locator("[class*='st-key-sel_']").nth(11)
    last.scroll_into_view_if_needed()
    last.locator("label").click()
    apply = pg.locator(".st-key-bulk_apply button")
    apply.filter(has_text="1").wait_for()
    assert _in_view(apply.bounding_box()), "the bulk-label bar scrolled out of view"
    pg.screenshot(path=str(ARTIFACTS / f"ce_bulk_in_view_{lang}.png"))
    last.locator("label").click()  # untick
    settle(pg)

    # "Label this" on an image further down makes it the key target: outlined, shown in the bar,
    # and the digit key labels that image.
    cands = pool.candidates(store, pid)
    tile_key = cands[9]["key"]
    focus_buttons = pg.locator("[class*='st-key-focus_'] button:visible")
    focus_buttons.nth(9).click()
    pg.locator(".st-key-ce_tile_focus").wait_for()
    settle(pg)
    focus_tile = pg.locator(".st-key-ce_tile_focus")
    focus_tile.scroll_into_view_if_needed()
    assert _in_view(focus_tile.bounding_box()) and _in_view(pg.locator(".st-key-ce_labelbar").bounding_box())
    says = t("ce_model_says", label=cands[9]["predicted"], pct=round(100 * cands[9]["confidence"]))
    assert says in pg.locator(".st-key-ce_labelbar").inner_text()  # the bar shows the picked image
    outline = focus_tile.evaluate("e => getComputedStyle(e).outlineStyle")
    assert outline == "solid"
    pg.screenshot(path=str(ARTIFACTS / f"ce_focus_{lang}.png"))
    digit = names.index("seven") if "seven" in names else 1
    pg.locator(".st-key-ce_labelbar").click(position={"x": 5, "y": 5})
    pg.keyboard.press(str(digit))
    wait_for(lambda: len(store.labels(pid)) == 1, timeout=60)
    labelled = pool.chosen_set(store, pid)
    assert [(c["key"], c["label"]) for c in labelled] == [(tile_key, names[digit])]
    settle(pg)
    assert pg.locator(".st-key-ce_tile_focus").count() in (0, 1)  # the next unlabelled image, if on this page
    ctx.close()
