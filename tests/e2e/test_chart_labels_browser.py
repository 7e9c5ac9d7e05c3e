"""Chart labels drawn by plotly.js in Chromium: a quote in a group name reads as a quote (not ``&quot;``),
a tag in a name stays text, and a very long name is cut with an ellipsis on the axis (whole in the hover)
without shrinking the plot area of the bar charts."""

from __future__ import annotations

import pytest

from core.app import charts
from core.app.i18n import translator
from tests.e2e.conftest import ARTIFACTS
from tests.optional import need

need("playwright")  # skips this file where playwright is missing, except in CI (tests/optional.py)

QUOTED = 'say "hi"'
TAG = "<b>bold</b>"
LONG = "a very long attribute value that somebody typed into the manifest without thinking of charts"


def _metrics() -> dict:
    groups = [
        {"label": label, "attribute": a, "accuracy": acc, "count": 12, "correct": 6, "ci_low": 0.2, "ci_high": 0.9}
        for label, acc in (("cat", 0.4), ("dog", 0.8))
        for a in (QUOTED, TAG, LONG, "plain")
    ]
    return {"groups": groups, "accuracy": 0.6, "worst_group_accuracy": 0.4, "bias_gap": 0.4, "min_group_count": 12}


def _draw(browser, fig, name: str, tmp_path):
    path = tmp_path / f"{name}.html"
    fig.write_html(path, include_plotlyjs=True, config={"staticPlot": False})
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = ctx.new_page()
    pg.goto(path.as_uri())
    pg.locator(".main-svg .nsewdrag").first.wait_for(state="attached")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"chart_labels_{name}.png"))
    return ctx, pg


def _hover(pg, box):
    """Move the mouse over the plot until plotly shows its hover label, and return it. Plotly answers a mouse move
    only once it has finished drawing; a move that comes earlier (a loaded machine) shows nothing, so move again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    hover = pg.locator(".hoverlayer .hovertext").first
    for i in range(8):
        pg.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * (0.9 - 0.01 * i))
        pg.mouse.move(box["x"] + box["width"] * 0.12, box["y"] + box["height"] * 0.85)
        try:
            hover.wait_for(timeout=4000)
            return hover
        except PlaywrightTimeout:
            continue
    hover.wait_for()  # the last chance, at the test's own timeout
    return hover


@pytest.mark.parametrize("builder", ["group_bars", "old_new_bars", "accuracy_heatmap"])
def test_chart_labels_are_plain_text_and_long_names_do_not_squash(browser, builder, tmp_path):
    t = translator("en")
    m = _metrics()
    fig = charts.old_new_bars(m, m, t) if builder == "old_new_bars" else getattr(charts, builder)(m, t)
    ctx, pg = _draw(browser, fig, builder, tmp_path)
    ticks = pg.locator(".xtick text, .ytick text").all_text_contents()
    shown = " ".join(ticks)
    assert QUOTED in shown and "&quot;" not in shown and "&#" not in shown, ticks
    assert TAG in shown and pg.locator(".xtick text b, .ytick text b").count() == 0, ticks
    assert LONG not in shown and any(LONG[:8] + "…" in s or (LONG[:8] in s and "…" in s) for s in ticks), ticks
    plot = pg.locator(".main-svg .nsewdrag").first
    box = plot.bounding_box()
    if builder != "accuracy_heatmap":
        # 460/520 px figures: the bars keep at least 250 px of height, whatever the names.
        assert box["height"] >= 250, box
    else:
        assert box["width"] >= 600, box
    # The hover names the whole group.
    hover = _hover(pg, box)
    text = hover.text_content()
    assert "&quot;" not in text and any(full in text for full in (QUOTED, LONG, TAG, "plain")), text
    ctx.close()


def test_hover_carries_the_whole_long_name(browser, tmp_path):
    t = translator("en")
    m = _metrics()
    ctx, pg = _draw(browser, charts.group_bars(m, t), "hover", tmp_path)
    names = pg.evaluate("() => document.querySelector('.js-plotly-plot').data.flatMap(d => d.customdata)")
    assert any(LONG in n for n in names) and any(QUOTED in n for n in names), names
    ctx.close()


@pytest.mark.parametrize("builder", ["group_bars", "old_new_bars"])
def test_long_names_alone_keep_the_bars_height(browser, builder, tmp_path):
    t = translator("en")
    m = _metrics()
    m["groups"] = [dict(g, attribute=f"{LONG} {i}") for i, g in enumerate(m["groups"])]
    fig = charts.old_new_bars(m, m, t) if builder == "old_new_bars" else getattr(charts, builder)(m, t)
    ctx, pg = _draw(browser, fig, f"long_{builder}", tmp_path)
    assert pg.locator(".main-svg .nsewdrag").first.bounding_box()["height"] >= 250
    assert len(set(pg.locator(".xtick text").all_text_contents())) == len(m["groups"])  # cut names stay apart
    ctx.close()
