"""The whole trade-off: each method's curve of kept decisions against worst-group accuracy (``benchmark --frontier``).

One point per method says little: a method that changes more fixes more and breaks more. Every mergeable result is an
ordinary model θ' = θ + δ, so θ + α·δ for α in [0, 1] (WiSE-FT, PAINT's interpolation; :mod:`core.engine.weight_interpolation`)
traces the method's own curve from the old model (α = 0, kept 1.0) to the result (α = 1) at the cost of one evaluation
per α. For each run the benchmark scores :data:`ALPHAS` on the reported rows (never the check split) and stores the
points in ``runs.csv`` (column ``frontier``: a JSON list of ``[α, accuracy, worst group, kept]``).

:func:`frontier_table`: per method and shot count, the best worst-group accuracy (and its accuracy) that the method's
curve reaches at kept decisions ≥ 0.99, 0.95 and 0.90, taken per draw and averaged over draws; α = 0 (the old model)
always qualifies, so a cell is never below the base model. These are curve properties, chosen with the reported rows'
labels: they say what each method *can* reach, not what its default picks. :func:`frontier_figure`: the mean curve of
each method per shot count (kept on x, worst group on y).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from core.engine.inference import predict_logits
from core.engine.metrics import compare_predictions, group_metrics

ALPHAS = (0.25, 0.5, 0.75)  # beside α = 0 (the old model) and α = 1 (the result itself)
THRESHOLDS = (0.99, 0.95, 0.90)


def _scaled_model(model, repaired: dict, scale: float):
    """A copy of ``model`` carrying θ + scale·(θ' − θ) (``scale`` may exceed 1: see :func:`alpha_points`)."""
    out = copy.deepcopy(model).eval()
    base = model.state_dict()
    out.load_state_dict(
        {k: torch.lerp(b, repaired[k].to(b.dtype), scale) if b.is_floating_point() else b for k, b in base.items()}
    )
    return out


def alpha_points(bundle, result, data, device) -> list[list[float]]:
    """``[α, accuracy, worst group, kept]`` on ``data``'s reported rows for α = 0, :data:`ALPHAS` and 1.

    α = 0 and α = 1 come from the run's own before/after predictions; a result that is not an ordinary model of the
    base architecture (side-tuning) has only those two. α is relative to the change the run *trained*: where the
    guard (:mod:`core.engine.guard`) kept the repair at a strength α_c < 1 after the fact, the result is the point
    α = α_c of the curve through the trained change δ_c = δ/α_c, and that curve is traced, so that the default's
    curve is compared over the same range as every other method's."""
    names = bundle.meta.class_names
    before = result.before_pred
    chosen = result.metrics.check.alpha if result.metrics.check is not None else 1.0

    def point(alpha: float, pred: np.ndarray) -> list[float]:
        m = group_metrics(data.y_eval, pred, data.attr_eval, names, bootstrap=0)
        kept = compare_predictions(data.y_eval, before, pred)["kept_decisions"]
        return [alpha, m["accuracy"], m["worst_group_accuracy"], kept]

    points = [point(0.0, before)]
    if result.merged_state is not None and result.delta:
        for a in sorted({*ALPHAS, 1.0} - {chosen}):
            model = _scaled_model(bundle.model, result.merged_state, a / chosen)
            points.append(point(a, predict_logits(model, data.x_eval, device).argmax(1).numpy()))
    points.append(point(chosen, result.after_pred))
    return sorted(points)


def _points(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, shots, seed, α) from the ``frontier`` column."""
    rows = []
    for r in df.dropna(subset=["frontier"]).itertuples():
        for a, acc, wg, kept in json.loads(r.frontier):
            rows.append(
                {"method": r.method, "shots": r.shots, "seed": r.seed, "alpha": a, "accuracy": acc,
                 "worst_group": wg, "kept": kept}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=["method", "shots", "seed", "alpha", "accuracy", "worst_group", "kept"])


def best_at(df: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per (method, shots): mean over draws of the best worst group on the curve at kept ≥ ``threshold``, and the
    accuracy and kept of that point (ties on worst group: the higher accuracy)."""
    pts = _points(df)
    ok = pts[pts["kept"] >= threshold - 1e-12].sort_values(["worst_group", "accuracy"])
    best = ok.groupby(["method", "shots", "seed"]).tail(1)
    return best.groupby(["method", "shots"])[["worst_group", "accuracy", "kept"]].mean().reset_index()


def frontier_table(df: pd.DataFrame, methods: list[str]) -> str:
    """Markdown: one table per threshold, method × shots, cells ``worst group / accuracy`` (bold: best worst group)."""
    if "frontier" not in df or df["frontier"].isna().all():
        return ""
    shots = sorted(df["shots"].unique())
    parts = []
    for t in THRESHOLDS:
        b = best_at(df, t).set_index(["method", "shots"])
        lines = [
            f"**kept decisions ≥ {t:.2f}**: best worst-group accuracy / its unbiased accuracy (mean over draws)",
            "",
            "| method | " + " | ".join(f"{s} shot{'s' if s > 1 else ''}" for s in shots) + " |",
            "|---" * (len(shots) + 1) + "|",
        ]
        top = {
            s: max((b.loc[(m, s), "worst_group"] for m in methods if (m, s) in b.index), default=None) for s in shots
        }
        for m in methods:
            cells = []
            for s in shots:
                if (m, s) not in b.index:
                    cells.append("—")
                    continue
                wg, acc = b.loc[(m, s), "worst_group"], b.loc[(m, s), "accuracy"]
                txt = f"{wg:.3f} / {acc:.3f}"
                cells.append(f"**{txt}**" if top[s] is not None and abs(wg - top[s]) < 1e-12 else txt)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def frontier_figure(df: pd.DataFrame, methods: list[str], title: str, shots: list[int] | None = None) -> go.Figure:
    """Mean curve (over draws, per α) of each method, kept decisions on x and worst group on y, one panel per
    shot count in ``shots`` (default: the two largest)."""
    pts = _points(df)
    shots = shots or sorted(pts["shots"].unique())[-2:]
    fig = make_subplots(rows=1, cols=len(shots), subplot_titles=[f"{s} counterexamples" for s in shots])
    palette = ["#1f77b4", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf", "#000000"]  # fmt: skip
    for j, s in enumerate(shots):
        for i, m in enumerate(methods):
            p = pts[(pts["method"] == m) & (pts["shots"] == s)]
            if p.empty:
                continue
            mean = p.groupby("alpha")[["kept", "worst_group"]].mean().sort_index()
            fig.add_trace(
                go.Scatter(
                    x=mean["kept"], y=mean["worst_group"], mode="lines+markers", name=m, legendgroup=m,
                    showlegend=j == 0, line={"color": palette[i % len(palette)], "width": 4 if m.startswith("cpt") else 2},
                ),
                row=1, col=j + 1,
            )  # fmt: skip
        fig.update_xaxes(title_text="kept decisions", autorange="reversed", row=1, col=j + 1)
        fig.update_yaxes(title_text="worst-group accuracy", row=1, col=j + 1)
    fig.update_layout(title=title, height=520, width=560 * len(shots), template="plotly_white")
    return fig
