"""Plotly figure builders for the workbench pages and the HTML report.

Each builder takes plain data (the metrics dict M of :mod:`core.engine.metrics`, progress rows, trade-off
points) plus the already-translated words it puts on the chart, and returns a ``plotly`` Figure.
No numbers are invented here: everything drawn comes from the data passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.app.safe_text import plot_text

OLD_COLOUR = "#9aa5b1"
NEW_COLOUR = "#1f77b4"
GOOD = "#2ca02c"
BAD = "#d62728"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def _group_name(g: dict) -> str:
    """A group's axis label; class names and attributes are user strings, so HTML is escaped."""
    name = f"{g['label']} · {g['attribute']}" if g.get("attribute") not in (None, "") else str(g["label"])
    return plot_text(name)


def accuracy_heatmap(m: dict, t: Callable[..., str]) -> go.Figure:
    """Accuracy per group as a heat map: one row per label, one column per attribute."""
    groups = m["groups"]
    labels = list(dict.fromkeys(g["label"] for g in groups))
    attrs = list(dict.fromkeys(str(g["attribute"]) for g in groups))
    z = [[None] * len(attrs) for _ in labels]
    text = [[""] * len(attrs) for _ in labels]
    for g in groups:
        i, j = labels.index(g["label"]), attrs.index(str(g["attribute"]))
        z[i][j] = 100 * g["accuracy"]
        text[i][j] = f"{_pct(g['accuracy'])}<br>n={g['count']}"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[plot_text(a) for a in attrs],
            y=[plot_text(label) for label in labels],
            text=text,
            texttemplate="%{text}",
            colorscale="RdYlGn",
            zmin=0,
            zmax=100,
            colorbar={"title": t("chart_accuracy_pct")},
            hovertemplate=t("chart_label") + ": %{y}<br>" + t("chart_attribute") + ": %{x}<br>%{text}<extra></extra>",
        )
    )
    fig.update_layout(
        title=t("chart_heatmap_title"),
        xaxis_title=t("chart_attribute"),
        yaxis_title=t("chart_label"),
        yaxis={"autorange": "reversed", "automargin": True},
        xaxis={"automargin": True},
        height=160 + 34 * len(labels),
        margin={"l": 80, "r": 10, "t": 50, "b": 60},
    )
    return fig


def group_bars(m: dict, t: Callable[..., str], top: int | None = None) -> go.Figure:
    """Per-group accuracy as bars, worst first, with 95% intervals and counts."""
    groups = sorted(m["groups"], key=lambda g: g["accuracy"])
    if top:
        groups = groups[:top]
    fig = go.Figure(
        go.Bar(
            x=[_group_name(g) for g in groups],
            y=[100 * g["accuracy"] for g in groups],
            text=[f"n={g['count']}" for g in groups],
            textposition="outside" if len(groups) <= 30 else "none",
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [100 * (g.get("ci_high", g["accuracy"]) - g["accuracy"]) for g in groups],
                "arrayminus": [100 * (g["accuracy"] - g.get("ci_low", g["accuracy"])) for g in groups],
            },
            marker_color=[BAD if g["accuracy"] < m["accuracy"] - 0.1 else NEW_COLOUR for g in groups],
            hovertemplate="%{x}<br>%{y:.0f}%<br>%{text}<extra></extra>",
        )
    )
    fig.update_layout(
        title=t("chart_bars_title"),
        yaxis={"title": t("chart_accuracy_pct"), "range": [0, 105]},
        height=420,
        xaxis={"automargin": True},
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def old_new_bars(before: dict, after: dict, t: Callable[..., str]) -> go.Figure:
    """Per-group accuracy, old model vs repaired model, as grouped bars (worst old groups first)."""
    key = lambda g: (g["label"], str(g["attribute"]))  # noqa: E731
    new = {key(g): g for g in after["groups"]}
    groups = sorted(before["groups"], key=lambda g: g["accuracy"])
    names = [_group_name(g) for g in groups]
    fig = go.Figure(
        [
            go.Bar(
                name=t("chart_old"),
                x=names,
                y=[100 * g["accuracy"] for g in groups],
                marker_color=OLD_COLOUR,
                text=[f"n={g['count']}" for g in groups],
            ),
            go.Bar(
                name=t("chart_new"),
                x=names,
                y=[100 * new[key(g)]["accuracy"] if key(g) in new else None for g in groups],
                marker_color=NEW_COLOUR,
            ),
        ]
    )
    fig.update_layout(
        barmode="group",
        title=t("chart_old_new_title"),
        yaxis={"title": t("chart_accuracy_pct"), "range": [0, 105]},
        height=420,
        legend={"orientation": "h", "y": 1.1},
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig


def live_curves(history: list[dict], t: Callable[..., str]) -> go.Figure:
    """Training curves of a run: loss and penalty; counterexamples fixed; held-out worst group."""
    steps = [h["step"] for h in history]
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(t("chart_loss_title"), t("chart_fixed_title"), t("chart_heldout_title")),
    )
    fig.add_trace(go.Scatter(x=steps, y=[h.get("loss") for h in history], name=t("chart_loss")), 1, 1)
    fig.add_trace(go.Scatter(x=steps, y=[h.get("penalty") for h in history], name=t("chart_penalty")), 1, 1)
    fig.add_trace(
        go.Scatter(x=steps, y=[h.get("fixed") for h in history], name=t("chart_fixed"), line={"color": GOOD}),
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
            line={"color": NEW_COLOUR},
        ),
        1,
        3,
    )
    fig.update_yaxes(range=[0, 100], row=1, col=3)
    for c in (1, 2, 3):
        fig.update_xaxes(title_text=t("chart_step"), row=1, col=c)
    fig.update_layout(height=330, legend={"orientation": "h", "y": -0.3}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def tradeoff(points: list[dict], t: Callable[..., str], highlight: int | None = None) -> go.Figure:
    """Worst-group accuracy vs kept decisions, one point per run, labelled by strength."""
    fig = go.Figure(
        go.Scatter(
            x=[100 * p["kept"] for p in points],
            y=[100 * p["worst_group"] if p["worst_group"] is not None else None for p in points],
            mode="markers+text",
            text=[plot_text(t("chart_run_point", run=p["run_id"], strength=p["strength"])) for p in points],
            textposition="top center",
            marker={
                "size": [16 if p["run_id"] == highlight else 10 for p in points],
                "color": [BAD if p["run_id"] == highlight else NEW_COLOUR for p in points],
            },
            hovertemplate="%{text}<br>"
            + t("chart_kept")
            + ": %{x:.1f}%<br>"
            + t("chart_worst")
            + ": %{y:.1f}%<extra></extra>",
        )
    )
    kept = [100 * p["kept"] for p in points] or [100.0]
    fig.update_layout(
        title=t("chart_tradeoff_title"),
        xaxis={"title": t("chart_kept") + " (%)", "range": [max(0.0, min(kept) - 5), 101]},
        yaxis={"title": t("chart_worst") + " (%)", "range": [-2, 102]},
        height=400,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig
