"""Plotly figure builders for the workbench pages and the HTML report.

Each builder takes plain data (the metrics dict M of :mod:`core.engine.metrics`, progress rows, trade-off
points) plus the already-translated words it puts on the chart, and returns a ``plotly`` Figure.
No numbers are invented here: everything drawn comes from the data passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.app import display
from core.app.display import group_name, percent
from core.app.safe_text import plot_text, short

# A colour-blind-safe palette (purple / orange / grey, from ColorBrewer's PuOr) that never uses red,
# blue or green, so no colour on a chart reads as a group attribute like "red" or "blue"; every
# colour is also named in a legend or a caption, and bars carry their values as text.
OLD_COLOUR = "#a6a6a6"  # the old model: neutral grey
NEW_COLOUR = "#5e3c99"  # the repaired model, and "normal": dark purple
LOW_COLOUR = "#e66101"  # a group well below the overall accuracy: orange
CURRENT_COLOUR = "#e66101"  # the run being reviewed on the trade-off chart (also a larger star)
OTHER_COLOUR = "#8c8c8c"  # other runs
GOOD = NEW_COLOUR
BAD = LOW_COLOUR
HEATMAP_SCALE = [[0.0, "#b35806"], [0.25, "#f1a340"], [0.5, "#f7f7f7"], [0.75, "#998ec3"], [1.0, "#542788"]]
FONT = {"size": 15, "color": "#222"}
TICK_FONT = {"size": 14, "color": "#222"}


def _style(fig: go.Figure) -> go.Figure:
    """Readable from a distance: ≥ 14 px dark text everywhere, axes that make room for their labels."""
    fig.update_layout(
        font=FONT,
        title_font={"size": 18, "color": "#111"},
        legend_font={"size": 15},
        uniformtext={"minsize": 14, "mode": "show"},
        colorway=[NEW_COLOUR, LOW_COLOUR, OTHER_COLOUR, "#222222"],
        paper_bgcolor="white",
        plot_bgcolor="white",
    )
    fig.update_xaxes(
        tickfont=TICK_FONT, title_font={"size": 15, "color": "#222"}, automargin=True, linecolor="#666", showline=True
    )
    fig.update_yaxes(
        tickfont=TICK_FONT,
        title_font={"size": 15, "color": "#222"},
        automargin=True,
        gridcolor="#e3e3e3",
        linecolor="#666",
    )
    fig.update_annotations(font_size=15)
    return fig


# Bar charts keep the same plot area whatever the group names: the x labels are cut to a fixed length
# (the full name is in the hover), drawn at a fixed angle in a fixed bottom margin, so a long name can
# never push the bars into a thin strip.
BAR_MARGIN = {"l": 70, "r": 10, "t": 90, "b": 120}
TICK_ANGLE = -30


def _full(g: dict) -> str:
    """The group's whole name and size for a hover."""
    return f"{plot_text(group_name(g))} (n={g['count']})"


def _ticks(groups: list[dict]) -> dict[tuple, str]:
    """Each group's x-axis label: its name (cut when long) and its size on a second line (never drawn on
    the bars), distinct for distinct groups."""
    names = _unique_short([group_name(g) for g in groups])
    return {_key(g): f"{name}<br>n={g['count']}" for g, name in zip(groups, names)}


def _key(g: dict) -> tuple:
    return (g["label"], str(g["attribute"]))


def _bar_axes(fig: go.Figure) -> None:
    fig.update_xaxes(automargin=False, tickangle=TICK_ANGLE)
    fig.update_yaxes(automargin=False)


def accuracy_heatmap(m: dict, t: Callable[..., str]) -> go.Figure:
    """Accuracy per group as a heat map: one row per label, one column per attribute."""
    groups = m["groups"]
    labels = list(dict.fromkeys(g["label"] for g in groups))
    attrs = list(dict.fromkeys(str(g["attribute"]) for g in groups))
    # With few columns a cell has room for its numbers on one line, so a row needs only 30 px and the
    # heat map of ten classes fits on the first screen under the finding.
    wide = len(attrs) <= 4
    sep, row_px = (" · ", 30) if wide else ("<br>", 40)
    z = [[None] * len(attrs) for _ in labels]
    text = [[""] * len(attrs) for _ in labels]
    full = [[[plot_text(label), plot_text(a)] for a in attrs] for label in labels]
    for g in groups:
        i, j = labels.index(g["label"]), attrs.index(str(g["attribute"]))
        z[i][j] = 100 * g["accuracy"]
        text[i][j] = f"{percent(g['accuracy'], 0)}{sep}n={g['count']}"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=_unique_short(attrs),
            y=_unique_short(labels),
            customdata=full,
            text=text,
            texttemplate="%{text}",
            colorscale=HEATMAP_SCALE,
            textfont={"size": 14},
            zmin=0,
            zmax=100,
            colorbar={"title": t("chart_accuracy_pct")},
            hovertemplate=t("chart_label")
            + ": %{customdata[0]}<br>"
            + t("chart_attribute")
            + ": %{customdata[1]}<br>%{text}<extra></extra>",
        )
    )
    fig.update_layout(
        title=t("chart_heatmap_title"),
        xaxis_title=t("chart_attribute"),
        yaxis_title=t("chart_label"),
        yaxis={"autorange": "reversed", "automargin": False},
        xaxis={"automargin": False, "tickangle": 0 if len(attrs) <= 6 else TICK_ANGLE},
        height=(110 if len(attrs) <= 6 else 150) + row_px * len(labels),
        margin={"l": 190, "r": 10, "t": 40, "b": 70 if len(attrs) <= 6 else 110},
    )
    return _style(fig)


def _unique_short(names: list[str]) -> list[str]:
    """Axis categories: each name cut for the axis, kept distinct (plotly merges equal categories)."""
    out: list[str] = []
    for name in names:
        cut = plot_text(short(name))
        while cut in out:
            cut += "\u200b"  # an invisible ZERO WIDTH SPACE keeps two cut names apart
        out.append(cut)
    return out


def group_bars(m: dict, t: Callable[..., str], top: int | None = None) -> go.Figure:
    """Per-group accuracy as bars, worst first, with 95% intervals; the value inside each bar, the
    group's size under its name. Groups more than 10 points below the overall accuracy are orange,
    the others purple, and the legend says so."""
    groups = sorted(m["groups"], key=lambda g: g["accuracy"])
    if top:
        groups = groups[:top]
    low = [g["accuracy"] < m["accuracy"] - 0.1 for g in groups]
    tick = _ticks(groups)
    fig = go.Figure()
    for is_low, name, colour in (
        (True, t("chart_low_groups"), LOW_COLOUR),
        (False, t("chart_other_groups"), NEW_COLOUR),
    ):
        sel = [g for g, lo in zip(groups, low) if lo == is_low]
        if not sel:
            continue
        fig.add_trace(
            go.Bar(
                name=name,
                x=[tick[_key(g)] for g in sel],
                y=[100 * g["accuracy"] for g in sel],
                text=[f"{100 * g['accuracy']:.0f}" for g in sel],
                textposition="inside",
                insidetextanchor="start",
                textangle=0,
                textfont={"size": 14, "color": "white"},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [100 * (_ci(g, "ci_high") - g["accuracy"]) for g in sel],
                    "arrayminus": [100 * (g["accuracy"] - _ci(g, "ci_low")) for g in sel],
                    "color": "#222",
                },
                marker_color=colour,
                customdata=[_full(g) for g in sel],
                hovertemplate="%{customdata}<br>%{y:.1f}%<extra></extra>",
            )
        )
    fig.update_layout(
        title=t("chart_bars_title"),
        yaxis={"title": t("chart_accuracy_pct"), "range": [0, 105]},
        xaxis={"categoryorder": "array", "categoryarray": list(tick.values())},
        height=460,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        margin=BAR_MARGIN,
    )
    _style(fig)
    _bar_axes(fig)
    return fig


def _ci(g: dict, key: str) -> float:
    v = g.get(key)
    return g["accuracy"] if v is None or v != v else v


def old_new_bars(before: dict, after: dict, t: Callable[..., str], old_name: str | None = None) -> go.Figure:
    """Per-group accuracy, old model (grey; ``old_name`` names it, the original by default) vs repaired
    model (purple), as grouped bars with their values, worst old groups first; group names and sizes on
    the axis."""
    old_name = old_name or t("chart_old")
    new = {_key(g): g for g in after["groups"]}
    groups = sorted(before["groups"], key=lambda g: g["accuracy"])
    names = list(_ticks(groups).values())
    new_y = [100 * new[_key(g)]["accuracy"] if _key(g) in new else None for g in groups]
    fig = go.Figure(
        [
            go.Bar(
                name=old_name,
                x=names,
                y=[100 * g["accuracy"] for g in groups],
                marker_color=OLD_COLOUR,
                text=[f"{100 * g['accuracy']:.0f}" for g in groups],
                textposition="auto",
                textangle=-90,
                textfont={"size": 14, "color": "#111"},
                customdata=[_full(g) for g in groups],
                hovertemplate="%{customdata}<br>" + old_name + ": %{y:.1f}%<extra></extra>",
            ),
            go.Bar(
                name=t("chart_new"),
                x=names,
                y=new_y,
                marker_color=NEW_COLOUR,
                text=["" if y is None else f"{y:.0f}" for y in new_y],
                textposition="auto",
                textangle=-90,
                textfont={"size": 14},
                customdata=[_full(g) for g in groups],
                hovertemplate="%{customdata}<br>" + t("chart_new") + ": %{y:.1f}%<extra></extra>",
            ),
        ]
    )
    fig.update_layout(
        barmode="group",
        title=t("chart_old_new_title"),
        yaxis={"title": t("chart_accuracy_pct"), "range": [0, 105]},
        height=520,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        margin=BAR_MARGIN,
    )
    _style(fig)
    _bar_axes(fig)
    return fig


def live_curves(history: list[dict], t: Callable[..., str]) -> go.Figure:
    """Training curves of a run: loss and penalty; counterexamples fixed; held-out worst group."""
    steps = [h["step"] for h in history]
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(t("chart_loss_title"), t("chart_fixed_title"), t("chart_heldout_title")),
    )
    # Four series, four colours and dash patterns from the same colour-blind-safe palette, so no two
    # share a look (the legend names each).
    fig.add_trace(
        go.Scatter(x=steps, y=[h.get("loss") for h in history], name=t("chart_loss"), line={"color": NEW_COLOUR}),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=[h.get("penalty") for h in history],
            name=t("chart_penalty"),
            line={"color": LOW_COLOUR, "dash": "dash"},
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=[h.get("fixed") for h in history],
            name=t("chart_fixed"),
            line={"color": "#222222", "dash": "dot"},
        ),
        1,
        2,
    )
    total = history[-1].get("total") if history else None
    if total:
        fig.update_yaxes(range=[0, total + 0.5], row=1, col=2)
    held = [(h["step"], h.get("heldout_worst_group")) for h in history if h.get("heldout_worst_group") is not None]
    fig.add_trace(
        go.Scatter(
            x=[s for s, _ in held],
            y=[100 * v for _, v in held],
            name=t("chart_heldout"),
            mode="lines+markers",
            line={"color": OTHER_COLOUR, "dash": "dashdot"},
        ),
        1,
        3,
    )
    fig.update_yaxes(range=[0, 100], row=1, col=3)
    for c in (1, 2, 3):
        fig.update_xaxes(title_text=t("chart_step"), row=1, col=c)
    fig.update_layout(height=380, legend={"orientation": "h", "y": -0.3}, margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return _style(fig)


def tradeoff(points: list[dict], t: Callable[..., str], highlight: int | None = None) -> go.Figure:
    """Worst-group accuracy vs kept decisions, one point per run, labelled by run and strength. The
    run under review is a large orange star, the others grey dots; the legend says which is which."""
    fig = go.Figure()
    for is_current, name in ((False, t("chart_other_runs")), (True, t("chart_this_run"))):
        sel = [p for p in points if (p["run_id"] == highlight) == is_current]
        if not sel:
            continue
        fig.add_trace(
            go.Scatter(
                name=name,
                x=[100 * p["kept"] for p in sel],
                y=[100 * p["worst_group"] if p["worst_group"] is not None else None for p in sel],
                mode="markers+text",
                text=[t("chart_run_point", run=p["run_id"], strength=display.number(p["strength"])) for p in sel],
                textposition="top center",
                textfont={"size": 14},
                marker={
                    "size": 20 if is_current else 11,
                    "symbol": "star" if is_current else "circle",
                    "color": CURRENT_COLOUR if is_current else OTHER_COLOUR,
                    "line": {"width": 1, "color": "#222"},
                },
                hovertemplate="%{text}<br>"
                + t("metric_kept")
                + ": %{x:.1f}%<br>"
                + t("metric_worst_group")
                + ": %{y:.1f}%<extra></extra>",
            )
        )
    kept = [100 * p["kept"] for p in points] or [100.0]
    fig.update_layout(
        title=t("chart_tradeoff_title"),
        xaxis={"title": t("metric_kept") + " (%)", "range": [max(0.0, min(kept) - 5), 100.9]},
        yaxis={"title": t("metric_worst_group") + " (%)", "range": [-2, 108]},
        height=440,
        showlegend=True,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        margin={"l": 10, "r": 10, "t": 90, "b": 10},
    )
    return _style(fig)
