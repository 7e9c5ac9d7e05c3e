"""A self-contained HTML report of one repair, to take to a meeting.

Everything is inside the one file: plotly.js is inlined from the installed ``plotly`` package (so
the charts work offline), every chart also carries a static SVG drawing that is shown instead when
plotly.js does not run (blocked scripts, a broken copy, printing without scripts), images of changed
predictions are embedded as base64 PNG data, and the text is in the workbench's current language.
It opens with the one-screen before/after summary card, and shows fixed and broken images side by
side, each a varied sample (:func:`core.app.summary.varied_sample`). Its content is the Review
page's (:mod:`core.app.review`) at full strength, with the decisions recorded on the repair.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path

import plotly.graph_objects as go
from PIL import Image
from plotly.offline import get_plotlyjs

from core.app import charts, display
from core.app.accounts import User, require
from core.app.baseline import ORIGINAL, Baseline, tradeoff_points
from core.app.display import group_name, percent, points
from core.app.review import ReviewContent, decision_events, review_content
from core.app.staticchart import figure_svg
from core.app.store import Store, now_iso
from core.app.summary import check_text, varied_sample

MAX_GALLERY = 48  # in all: half fixed, half broken


def _img_data_uri(path: str | Path, size: int = 96) -> str:
    img = Image.open(path).convert("RGB")
    img = img.resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _numbers(metrics: dict, t: Callable[..., str]) -> str:
    """The old-vs-new table (accuracy, worst group, bias gap) and the table of facts about the repair."""
    e = html.escape
    before, after = metrics["before"], metrics["after"]
    rows = [
        (t("metric_accuracy"), percent(before["accuracy"]), percent(after["accuracy"])),
        (t("metric_worst_group"), percent(before["worst_group_accuracy"]), percent(after["worst_group_accuracy"])),
        (t("metric_bias_gap"), points(before["bias_gap"]), points(after["bias_gap"])),
    ]
    table = "".join(f"<tr><td>{e(a)}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    facts = [
        (t("metric_kept"), percent(metrics["kept_decisions"])),
        (t("metric_changed"), str(metrics["changed_predictions"])),
        (t("metric_errors_corrected"), percent(metrics["errors_corrected"])),
        (t("metric_errors_introduced"), percent(metrics["errors_introduced"])),
        (t("report_method"), str(metrics.get("method"))),
        (t("report_strength"), display.number(metrics.get("strength"))),
        (t("report_steps"), str(metrics.get("steps"))),
        (t("report_device"), str(metrics.get("device"))),
        (t("report_smallest_group"), str(min((g["count"] for g in before.get("groups", [])), default="–"))),
        (t("report_min_group"), str(before.get("min_group_count"))),
    ]
    facts_html = "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td></tr>" for a, b in facts)
    return (
        f"<table><tr><th></th><th>{e(t('chart_old'))}</th><th>{e(t('chart_new'))}</th></tr>{table}</table>\n"
        f"<table>{facts_html}</table>"
    )


def _check(metrics: dict, t: Callable[..., str]) -> str:
    """The check split's paragraph (:func:`core.app.summary.check_text`), or nothing."""
    words = check_text(metrics, t)
    return f'<p class="check">{html.escape(words)}</p>' if words is not None else ""


def _charts(figures: list[tuple[str, go.Figure]]) -> str:
    """Each chart under its title: interactive, and its static drawing for when plotly.js cannot run."""
    return "".join(
        f'<section class="chart"><h2>{html.escape(name)}</h2><div class="live">'
        + fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        + f'</div><div class="static">{figure_svg(fig)}</div></section>'
        for name, fig in figures
    )


def _gallery_side(items: list[dict], cls: str, mark: str, title: str, note: str, t: Callable[..., str]) -> str:
    e = html.escape
    tiles = (
        "".join(
            f'<figure class="{cls}"><img src="{_img_data_uri(c["file"])}" alt="">'
            f"<figcaption>{mark} {e(c['before'])} → {e(c['after'])}<br><small>{e(group_name(c))}</small>"
            "</figcaption></figure>"
            for c in items
        )
        or f"<p>{e(t('review_no_changes'))}</p>"
    )
    return (
        f'<div class="side {cls}-side"><h3>{e(title)}</h3>'
        f"<p class=note>{e(note)}</p>"
        f'<div class="gallery {cls}">{tiles}</div></div>'
    )


def _gallery(changed: list[dict], t: Callable[..., str]) -> str:
    """Fixed and broken images side by side, each a varied sample of at most half of MAX_GALLERY."""
    sides = []
    for cls, mark, title in (("fixed", "✓", "review_tab_fixed"), ("broken", "✗", "review_tab_broken")):
        every = [c for c in changed if c[cls]]
        sample = varied_sample(every, MAX_GALLERY // 2)
        note = t("review_sample_note", shown=len(sample), n=len(every))
        sides.append(_gallery_side(sample, cls, mark, t(title, n=len(every)), note, t))
    return '<div class="galleries">' + "".join(sides) + "</div>"


_STYLE = """body{font-family:system-ui,"Noto Sans CJK JP",sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;
color:#222;font-size:16px}
table{border-collapse:collapse;margin:1em 0} td,th{border:1px solid #ccc;padding:.3em .8em;text-align:left}
.verdict{padding:1em;border-radius:6px;background:#f3f6fa;border-left:6px solid #5e3c99;font-size:1.2em}
.galleries{display:grid;grid-template-columns:1fr 1fr;gap:24px} .note{color:#444;margin:.2em 0 .6em}
.gallery{display:flex;flex-wrap:wrap;gap:8px} figure{margin:0;padding:4px;border:3px solid #ccc;border-radius:4px;
font-size:14px;text-align:center} figure.fixed{border-color:#5e3c99} figure.broken{border-color:#e66101}
figure img{width:96px;height:96px;image-rendering:pixelated}
.chart .static{display:none} html.noplotly .chart .static{display:block} html.noplotly .chart .live{display:none}
@media print{.chart .static{display:block} .chart .live{display:none}}"""


def build_report(
    *,
    title: str,
    run: dict,
    metrics: dict,
    verdict_text: str,
    figures: list[tuple[str, go.Figure]],
    changed: list[dict],
    decision_lines: list[str],
    t: Callable[..., str],
    lang: str,
    summary_html: str = "",
    tz: str | None = None,
    baseline_words: str = "",
) -> str:
    """The report as one HTML string (UTF-8), charts interactive and inlined, with static fallbacks.

    ``summary_html`` is the before/after card (:func:`core.app.summary.summary_card_html`, with the
    verdict in it); without it the verdict is shown on its own. Times are written in the zone ``tz``
    (the reader's browser zone; UTC when None), with the zone named."""
    e = html.escape
    top = summary_html or f'<div class="verdict">{e(verdict_text)}</div>'
    decisions = "".join(f"<li>{e(line)}</li>" for line in decision_lines) or f"<li>{e(t('report_no_decision'))}</li>"
    when = display.local_time(run.get("finished_at"), tz)
    return f"""<!DOCTYPE html>
<html lang="{e(lang)}"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
{_STYLE}
</style>
<noscript><style>.chart .static{{display:block}} .chart .live{{display:none}}</style></noscript>
<script type="text/javascript">{get_plotlyjs()}</script>
<script>if (!window.Plotly) document.documentElement.classList.add("noplotly");</script>
</head><body>
<h1>{e(title)}</h1>
<p>{e(t("report_run_line", run=run["id"], when=when, who=run.get("created_by") or ""))}</p>
<p class="baseline"><strong>{e(baseline_words or t("baseline_compared_original"))}</strong></p>
{top}
<h2>{e(t("report_summary"))}</h2>
{_numbers(metrics, t)}
{_check(metrics, t)}
<h2>{e(t("report_decisions"))}</h2><ul>{decisions}</ul>
{_charts(figures)}
<h2>{e(t("review_changed_title"))}</h2>
{_gallery(changed, t)}
</body></html>
"""


def decision_lines(store: Store, run: dict, actor: User, t: Callable[..., str], tz: str | None) -> list[str]:
    """The decisions on the repair (:func:`core.app.review.decision_events`), one line each with when,
    who, what and their comment, and last who made this report and when."""
    lines = [
        t(
            "report_decision_line",
            when=display.local_time(e["ts"], tz),
            who=e["actor"],
            action=t(f"action_{e['action']}"),
            detail=" ".join(
                [e["detail"].get("comment", "")]
                + ([t("report_four_eyes_relaxed")] if e["detail"].get("four_eyes") == "relaxed" else [])
            ).strip(),
        )
        for e in decision_events(store, run)
    ]
    lines.append(t("report_made_by", who=actor, when=display.local_time(now_iso(), tz)))
    return lines


def report_figures(store: Store, content: ReviewContent, t: Callable[..., str]) -> list[tuple[str, go.Figure]]:
    """The report's charts, each with its title: the heat maps of the old and the repaired model, the
    old-vs-new bars, all of the project's repairs on the trade-off chart, and the training curves."""
    m = content.metrics
    run = content.run
    old = content.baseline.name(t)
    pts = tradeoff_points(store, run["project_id"], content.baseline)
    return [
        (t("chart_heatmap_title") + " — " + old, charts.accuracy_heatmap(m["before"], t)),
        (t("chart_heatmap_title") + " — " + t("chart_new"), charts.accuracy_heatmap(m["after"], t)),
        (t("chart_old_new_title"), charts.old_new_bars(m["before"], m["after"], t, old_name=old)),
        (t("chart_tradeoff_title"), charts.tradeoff(pts, t, highlight=run["id"])),
        (t("chart_loss_title"), charts.live_curves(store.progress(run["id"]), t)),
    ]


def report_html(
    store: Store,
    run_id: int,
    actor: User,
    t: Callable[..., str],
    lang: str,
    tz: str | None,
    baseline: Baseline = ORIGINAL,
) -> str:
    """The report of a repair at full strength (whatever strength the Review page previews), made by
    ``actor``: the same content the Review page shows (:func:`core.app.review.review_content`) against the
    same ``baseline`` (named in the report), its charts, and the decisions on it, in the language of ``t``
    and the time zone ``tz``. Made only once the store says ``actor`` is still signed in (a tab left open
    after its session ended gets nothing)."""
    run = store.run(run_id)
    actor = require(store, actor, None, "report", run["project_id"] if run else None)
    content = review_content(store, run_id, t, baseline=baseline)
    return build_report(
        title=t("report_title", run=run_id),
        run=content.run,
        metrics=content.metrics,
        verdict_text=content.words,
        summary_html=content.card_html(t, with_verdict=True),
        figures=report_figures(store, content, t),
        changed=content.changed,
        baseline_words=content.baseline.words(t),
        decision_lines=decision_lines(store, content.run, actor, t, tz),
        t=t,
        lang=lang,
        tz=tz,
    )
