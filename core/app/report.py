"""A self-contained HTML report of one repair run, to take to a meeting.

Everything is inside the one file: plotly.js is inlined from the installed ``plotly`` package (so
the charts work offline), images of changed predictions are embedded as base64 PNG data, and the
text is in the workbench's current language.
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

MAX_GALLERY = 48


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
) -> str:
    """The report as one HTML string (UTF-8), charts interactive and inlined."""
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
        (t("report_strength"), str(metrics.get("strength"))),
        (t("report_steps"), str(metrics.get("steps"))),
        (t("report_device"), str(metrics.get("device"))),
        (t("report_min_group"), str(before.get("min_group_count"))),
    ]
    facts_html = "".join(f"<tr><td>{e(a)}</td><td>{e(b)}</td></tr>" for a, b in facts)
    charts = "".join(
        f"<h2>{e(name)}</h2>" + fig.to_html(full_html=False, include_plotlyjs=False) for name, fig in figures
    )
    tiles = []
    for c in changed[:MAX_GALLERY]:
        mark = "✓" if c["fixed"] else ("✗" if c["broken"] else "•")
        cls = "fixed" if c["fixed"] else ("broken" if c["broken"] else "other")
        tiles.append(
            f'<figure class="{cls}"><img src="{_img_data_uri(c["file"])}" alt="">'
            f"<figcaption>{mark} {e(c['before'])} → {e(c['after'])}<br><small>{e(t('gallery_truth'))}: "
            f"{e(c['label'])}</small></figcaption></figure>"
        )
    decisions = "".join(f"<li>{e(line)}</li>" for line in decision_lines) or f"<li>{e(t('report_no_decision'))}</li>"
    return f"""<!DOCTYPE html>
<html lang="{e(lang)}"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body{{font-family:system-ui,"Noto Sans CJK JP",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ccc;padding:.3em .8em;text-align:left}}
.verdict{{padding:1em;border-radius:6px;background:#f3f6fa;border-left:6px solid #1f77b4;font-size:1.1em}}
.gallery{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0;padding:4px;border:2px solid #ccc;border-radius:4px;
font-size:.85em;text-align:center}} figure.fixed{{border-color:#2ca02c}} figure.broken{{border-color:#d62728}}
</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{e(title)}</h1>
<p>{e(t("report_run_line", run=run["id"], when=run.get("finished_at") or "", who=run.get("created_by") or ""))}</p>
<div class="verdict">{e(verdict_text)}</div>
<h2>{e(t("report_summary"))}</h2>
<table><tr><th></th><th>{e(t("chart_old"))}</th><th>{e(t("chart_new"))}</th></tr>{table}</table>
<table>{facts_html}</table>
<h2>{e(t("report_decisions"))}</h2><ul>{decisions}</ul>
{charts}
<h2>{e(t("review_changed_title"))}</h2>
<div class="gallery">{"".join(tiles) or e(t("review_no_changes"))}</div>
</body></html>
"""
