"""A self-contained HTML report of one repair run, to take to a meeting.

Everything is inside the one file: plotly.js is inlined from the installed ``plotly`` package (so
the charts work offline), every chart also carries a static SVG drawing that is shown instead when
plotly.js does not run (blocked scripts, a broken copy, printing without scripts), images of changed
predictions are embedded as base64 PNG data, and the text is in the workbench's current language.
It opens with the one-screen before/after summary card, and shows fixed and broken images side by
side, each a varied sample (:func:`core.app.summary.varied_sample`).
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

from core.app import display
from core.app.staticchart import figure_svg
from core.app.summary import group_name, varied_sample

MAX_GALLERY = 48  # in all: half fixed, half broken


def _img_data_uri(path: str | Path, size: int = 96) -> str:
    img = Image.open(path).convert("RGB")
    img = img.resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _points(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


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
) -> str:
    """The report as one HTML string (UTF-8), charts interactive and inlined, with static fallbacks.

    ``summary_html`` is the before/after card (:func:`core.app.summary.summary_card_html`, with the
    verdict in it); without it the verdict is shown on its own. Times are written in the zone ``tz``
    (the reader's browser zone; UTC when None), with the zone named."""
    e = html.escape
    before, after = metrics["before"], metrics["after"]
    rows = [
        (t("metric_accuracy"), _pct(before["accuracy"]), _pct(after["accuracy"])),
        (t("metric_worst_group"), _pct(before["worst_group_accuracy"]), _pct(after["worst_group_accuracy"])),
        (t("metric_bias_gap"), _points(before["bias_gap"]), _points(after["bias_gap"])),
    ]
    table = "".join(f"<tr><td>{e(a)}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    facts = [
        (t("metric_kept"), _pct(metrics["kept_decisions"])),
        (t("metric_changed"), str(metrics["changed_predictions"])),
        (t("metric_errors_corrected"), _pct(metrics["errors_corrected"])),
        (t("metric_errors_introduced"), _pct(metrics["errors_introduced"])),
        (t("report_method"), str(metrics.get("method"))),
        (t("report_strength"), display.number(metrics.get("strength"))),
        (t("report_steps"), str(metrics.get("steps"))),
        (t("report_device"), str(metrics.get("device"))),
        (t("report_smallest_group"), str(min((g["count"] for g in before.get("groups", [])), default="–"))),
        (t("report_min_group"), str(before.get("min_group_count"))),
    ]
    facts_html = "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td></tr>" for a, b in facts)
    charts = "".join(
        f'<section class="chart"><h2>{e(name)}</h2><div class="live">'
        + fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        + f'</div><div class="static">{figure_svg(fig)}</div></section>'
        for name, fig in figures
    )
    half = MAX_GALLERY // 2
    fixed = varied_sample([c for c in changed if c["fixed"]], half)
    broken = varied_sample([c for c in changed if c["broken"]], half)
    n_fixed = sum(1 for c in changed if c["fixed"])
    n_broken = sum(1 for c in changed if c["broken"])

    def tiles(items: list[dict], cls: str, mark: str) -> str:
        out = [
            f'<figure class="{cls}"><img src="{_img_data_uri(c["file"])}" alt="">'
            f"<figcaption>{mark} {e(c['before'])} → {e(c['after'])}<br><small>{e(group_name(c))}</small>"
            "</figcaption></figure>"
            for c in items
        ]
        return "".join(out) or f"<p>{e(t('review_no_changes'))}</p>"

    gallery = (
        '<div class="galleries">'
        f'<div class="side fixed-side"><h3>{e(t("review_tab_fixed", n=n_fixed))}</h3>'
        f"<p class=note>{e(t('review_sample_note', shown=len(fixed), n=n_fixed))}</p>"
        f'<div class="gallery fixed">{tiles(fixed, "fixed", "✓")}</div></div>'
        f'<div class="side broken-side"><h3>{e(t("review_tab_broken", n=n_broken))}</h3>'
        f"<p class=note>{e(t('review_sample_note', shown=len(broken), n=n_broken))}</p>"
        f'<div class="gallery broken">{tiles(broken, "broken", "✗")}</div></div>'
        "</div>"
    )
    top = summary_html or f'<div class="verdict">{e(verdict_text)}</div>'
    decisions = "".join(f"<li>{e(line)}</li>" for line in decision_lines) or f"<li>{e(t('report_no_decision'))}</li>"
    return f"""<!DOCTYPE html>
<html lang="{e(lang)}"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body{{font-family:system-ui,"Noto Sans CJK JP",sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;
color:#222;font-size:16px}}
table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ccc;padding:.3em .8em;text-align:left}}
.verdict{{padding:1em;border-radius:6px;background:#f3f6fa;border-left:6px solid #5e3c99;font-size:1.2em}}
.galleries{{display:grid;grid-template-columns:1fr 1fr;gap:24px}} .note{{color:#444;margin:.2em 0 .6em}}
.gallery{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0;padding:4px;border:3px solid #ccc;border-radius:4px;
font-size:14px;text-align:center}} figure.fixed{{border-color:#5e3c99}} figure.broken{{border-color:#e66101}}
figure img{{width:96px;height:96px;image-rendering:pixelated}}
.chart .static{{display:none}} html.noplotly .chart .static{{display:block}} html.noplotly .chart .live{{display:none}}
@media print{{.chart .static{{display:block}} .chart .live{{display:none}}}}
</style>
<noscript><style>.chart .static{{display:block}} .chart .live{{display:none}}</style></noscript>
<script type="text/javascript">{get_plotlyjs()}</script>
<script>if (!window.Plotly) document.documentElement.classList.add("noplotly");</script>
</head><body>
<h1>{e(title)}</h1>
<p>{e(t("report_run_line", run=run["id"], when=display.local_time(run.get("finished_at"), tz), who=run.get("created_by") or ""))}</p>
{top}
<h2>{e(t("report_summary"))}</h2>
<table><tr><th></th><th>{e(t("chart_old"))}</th><th>{e(t("chart_new"))}</th></tr>{table}</table>
<table>{facts_html}</table>
<h2>{e(t("report_decisions"))}</h2><ul>{decisions}</ul>
{charts}
<h2>{e(t("review_changed_title"))}</h2>
{gallery}
</body></html>
"""
