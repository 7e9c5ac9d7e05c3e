"""A static SVG drawing of a plotly figure, for the report's fallback when plotly.js cannot run.

Covers what the workbench draws: bar charts (grouped), heat maps and scatter/line plots, side by
side when a figure has several subplots. It draws the figure's own data, titles, axis titles, group
names and value labels in ≥ 14 px text; it is a readable picture, not a copy of plotly's look.
"""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go

WIDTH = 1000
FONT = "system-ui,'Noto Sans CJK JP',sans-serif"


def _txt(x, y, s, size=14, anchor="middle", rotate=None, weight="normal", fill="#222") -> str:
    rot = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
    # ``s`` is plotly text (``&``, ``<``, ``>`` escaped for plotly): back to its characters, then
    # escaped once for the SVG.
    s = html.escape(html.unescape(str(s).replace("<br>", " ")).replace("\u200b", ""))
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}"'
        f' fill="{fill}"{rot}>{s}</text>'
    )


def _title(fig: go.Figure) -> str:
    t = fig.layout.title.text if fig.layout.title else None
    return t or ""


def _axis_title(axis) -> str:
    return (axis.title.text if axis is not None and axis.title is not None else None) or ""


def _nums(vals) -> list[float | None]:
    out = []
    for v in vals if vals is not None else []:
        try:
            f = float(v)
            out.append(None if math.isnan(f) else f)
        except (TypeError, ValueError):
            out.append(None)
    return out


def _colour(c, i: int = 0) -> str:
    if isinstance(c, (list, tuple)):
        return str(c[i % len(c)]) if c else "#5e3c99"
    return str(c) if c else "#5e3c99"


def _heat_colour(z: float | None, scale, zmin: float, zmax: float) -> str:
    if z is None:
        return "#ffffff"
    f = 0.0 if zmax == zmin else min(1.0, max(0.0, (z - zmin) / (zmax - zmin)))
    stops = [(float(p), c) for p, c in scale]
    for (p0, c0), (p1, c1) in zip(stops, stops[1:]):
        if p0 <= f <= p1:
            u = 0.0 if p1 == p0 else (f - p0) / (p1 - p0)
            a = [int(c0[k : k + 2], 16) for k in (1, 3, 5)]
            b = [int(c1[k : k + 2], 16) for k in (1, 3, 5)]
            return "#" + "".join(f"{round(x + (y - x) * u):02x}" for x, y in zip(a, b))
    return stops[-1][1]


def _bars(fig: go.Figure, traces: list, x0: float, w: float, top: float, h: float) -> list[str]:
    out = []
    cats = [str(c) for c in traces[0].x]
    ys = [v for tr in traces for v in _nums(tr.y) if v is not None]
    ymax = max(100.0, max(ys, default=1.0))
    n, k = max(1, len(cats)), len(traces)
    slot = w / n
    bw = slot * 0.8 / k
    out.append(f'<line x1="{x0}" y1="{top + h}" x2="{x0 + w}" y2="{top + h}" stroke="#666"/>')
    for tick in range(0, int(ymax) + 1, 20 if ymax <= 120 else int(ymax // 5) or 1):
        y = top + h - h * tick / ymax
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        out.append(_txt(x0 - 6, y + 5, tick, anchor="end"))
    for j, tr in enumerate(traces):
        idx = {str(c): i for i, c in enumerate(tr.x)}
        vals = _nums(tr.y)
        for ci, cat in enumerate(cats):
            i = idx.get(cat)
            if i is None or vals[i] is None:
                continue
            v = vals[i]
            bx = x0 + ci * slot + slot * 0.1 + j * bw
            bh = h * v / ymax
            out.append(
                f'<rect x="{bx:.1f}" y="{top + h - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}"'
                f' fill="{_colour(tr.marker.color, i)}"/>'
            )
            out.append(
                _txt(
                    bx + bw / 2 + 5,
                    top + h - bh - 4,
                    f"{v:.0f}",
                    rotate=-90 if k > 1 else None,
                    anchor="start" if k > 1 else "middle",
                )
            )
    for ci, cat in enumerate(cats):
        cx = x0 + ci * slot + slot / 2
        out.append(_txt(cx, top + h + 16, cat, anchor="end", rotate=-45))
    return out


def _heatmap(tr, x0: float, w: float, top: float, h: float) -> list[str]:
    out = []
    xs, ys = [str(v) for v in tr.x], [str(v) for v in tr.y]
    cw, ch = w / max(1, len(xs)), h / max(1, len(ys))
    scale = tr.colorscale or [[0, "#ffffff"], [1, "#5e3c99"]]
    for i, row in enumerate(tr.z):
        for j, z in enumerate(row):
            z = _nums([z])[0]
            x, y = x0 + j * cw, top + i * ch
            fill = _heat_colour(
                z, scale, tr.zmin if tr.zmin is not None else 0, tr.zmax if tr.zmax is not None else 100
            )
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{cw:.1f}" height="{ch:.1f}" fill="{fill}" stroke="#fff"/>'
            )
            if z is not None:
                dark = z < 20 or z > 80
                out.append(_txt(x + cw / 2, y + ch / 2 + 5, f"{z:.0f}%", fill="#fff" if dark else "#111"))
    for j, name in enumerate(xs):
        out.append(_txt(x0 + j * cw + cw / 2, top + h + 20, name))
    for i, name in enumerate(ys):
        out.append(_txt(x0 - 8, top + i * ch + ch / 2 + 5, name, anchor="end"))
    return out


def _scatter(traces: list, x0: float, w: float, top: float, h: float) -> list[str]:
    out = []
    pts = [(x, y) for tr in traces for x, y in zip(_nums(tr.x), _nums(tr.y)) if x is not None and y is not None]
    if not pts:
        return out
    xmin, xmax = min(p[0] for p in pts), max(p[0] for p in pts)
    ymin, ymax = min(0.0, min(p[1] for p in pts)), max(p[1] for p in pts)
    xmax = xmax if xmax > xmin else xmin + 1
    ymax = ymax if ymax > ymin else ymin + 1

    def sx(v):
        return x0 + w * (v - xmin) / (xmax - xmin)

    def sy(v):
        return top + h - h * (v - ymin) / (ymax - ymin)

    out.append(f'<rect x="{x0}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    out.append(_txt(x0 - 6, top + h, f"{ymin:.3g}", anchor="end"))
    out.append(_txt(x0 - 6, top + 12, f"{ymax:.3g}", anchor="end"))
    out.append(_txt(x0, top + h + 18, f"{xmin:.3g}", anchor="start"))
    out.append(_txt(x0 + w, top + h + 18, f"{xmax:.3g}", anchor="end"))
    palette = ["#5e3c99", "#e66101", "#8c8c8c", "#222222"]
    for k, tr in enumerate(traces):
        colour = (tr.marker.color if tr.marker and isinstance(tr.marker.color, str) else None) or (
            tr.line.color if tr.line and tr.line.color else palette[k % len(palette)]
        )
        xy = [(x, y) for x, y in zip(_nums(tr.x), _nums(tr.y)) if x is not None and y is not None]
        labels = list(tr.text) if isinstance(tr.text, (list, tuple)) else [None] * len(xy)
        if tr.mode and "lines" in tr.mode or (tr.mode is None and len(xy) > 1):
            d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in xy)
            out.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if tr.mode and ("markers" in tr.mode or "text" in tr.mode):
            size = tr.marker.size if tr.marker and isinstance(tr.marker.size, (int, float)) else 10
            for (x, y), lab in zip(xy, labels + [None] * len(xy)):
                out.append(
                    f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{size / 2:.1f}" fill="{colour}" stroke="#222"/>'
                )
                if lab:
                    out.append(_txt(sx(x), sy(y) - size / 2 - 4, lab))
    return out


def figure_svg(fig: go.Figure) -> str:
    """The figure as one static ``<svg>`` element (a fallback picture; see the module docstring)."""
    traces = list(fig.data)
    panels: dict[str, list] = {}
    for tr in traces:
        panels.setdefault(getattr(tr, "xaxis", None) or "x", []).append(tr)
    heat = any(tr.type == "heatmap" for tr in traces)
    n_rows = len(traces[0].y) if heat and traces[0].y is not None else 0
    plot_h = 40 * n_rows if heat else 300
    left, top, bottom = (120 if heat else 110), 50, (60 if heat else 150)
    legend = [tr.name for tr in traces if tr.name]
    top += 26 if legend and not heat else 0
    height = top + plot_h + bottom + 30
    gap = 60
    w_each = (WIDTH - left - 20 - gap * (len(panels) - 1)) / max(1, len(panels))
    parts = [_txt(10, 26, _title(fig), size=18, anchor="start", weight="bold")]
    if legend and not heat:
        x = 10
        palette = ["#5e3c99", "#e66101", "#8c8c8c", "#222222"]
        for k, tr in enumerate(t for t in traces if t.name):
            c = tr.marker.color if tr.marker and isinstance(tr.marker.color, str) else None
            c = c or (tr.line.color if getattr(tr, "line", None) and tr.line.color else palette[k % len(palette)])
            parts.append(f'<rect x="{x}" y="{40}" width="16" height="16" fill="{c}"/>')
            parts.append(_txt(x + 22, 54, tr.name, anchor="start"))
            x += 40 + sum(16 if ord(ch) > 0x2000 else 9 for ch in tr.name)
    for p, (_axis, group) in enumerate(panels.items()):
        x0 = left + p * (w_each + gap)
        kind = group[0].type
        if kind == "bar":
            parts += _bars(fig, group, x0, w_each, top, plot_h)
        elif kind == "heatmap":
            parts += _heatmap(group[0], x0, w_each, top, plot_h)
        else:
            parts += _scatter(group, x0, w_each, top, plot_h)
    xt, yt = _axis_title(fig.layout.xaxis), _axis_title(fig.layout.yaxis)
    if xt:
        parts.append(_txt(left + (WIDTH - left) / 2, height - 8, xt))
    if yt:
        parts.append(_txt(16, top + plot_h / 2, yt, rotate=-90))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" width="100%"'
        f' role="img" aria-label="{html.escape(_title(fig))}" style="font-family:{FONT};background:#fff">'
        + "".join(parts)
        + "</svg>"
    )
