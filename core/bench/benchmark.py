"""``python -m core benchmark``: every method on counterexample sets of several sizes, paper-style.

Penzel et al. (VISAPP 2024, arXiv 2404.12292) compare change-penalized tuning with fine-tuning and
other baselines as a function of the number of counterexamples ("shots"). This command does the
same on a suite (:mod:`core.bench.suites`): for each seed it orders the pool's shortcut-contradicting
images once (round-robin over classes, random within a class) and takes the first k for every k in
``--shots``, so the sets are nested and **every method sees exactly the same counterexamples**.

Each method runs with its default settings and its own stopping rule, through the same
:func:`core.engine.repair.run_repair` the CLI and the workbench use. Every method may use the pool's
images *without* labels (MAS importance, last-layer typical images, auto strength). The evaluation
set's labels are used only to score: no method and no stopping rule sees them (the held-out
rule is not used here; the validation rows are left out).

Automatic strength (``cpt_auto``, :mod:`core.engine.strength`) is run beside change-penalized tuning at
each fixed candidate strength, and the report says how far auto lands from the best fixed strength
chosen in hindsight on the evaluation set.

Outputs in ``--out``: ``runs.csv`` (one row per run), ``table.md`` (mean ± std per method × shots
of unbiased accuracy, worst-group accuracy, kept decisions, steps and seconds, plus the auto gap),
and ``figure.html`` (interactive, self-contained: accuracy vs shots, worst-group vs kept
decisions).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.app.staticchart import figure_svg
from core.bench import frontier as fr
from core.bench.group_recovery import discovery_table
from core.bench.suites import SUITE_GROUPS, SUITES, Suite, load_suite, prepare_suite_data
from core.bench.variants import parse_variant
from core.engine.backends import LocalBackend, add_backend_argument, get_backend
from core.engine.configs import PAPER_FORM
from core.engine.devices import select_device
from core.engine.methods import METHODS, get_method
from core.engine.repair import run_repair
from core.engine.results import RunMetrics
from core.engine.strength import CANDIDATES
from core.errors import UserError

AUTO = "cpt_auto"
PAPER = "cpt_paper"  # CPT in the paper's exact form (Adam 1e-3, no anchor, the paper's stopping rule)
DEFAULT_STRENGTH = 1000.0


def fixed_name(strength: float) -> str:
    return f"cpt@{strength:g}"


def add_arguments(p) -> None:

    p.add_argument("--suite", default="demo", choices=list(SUITES) + list(SUITE_GROUPS))
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--seeds", type=int, default=3, help="number of draws (seeds 0..N-1) per size")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"subset of: {', '.join(METHODS)}")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=METHOD:KEY=VALUE …",
        help="also run METHOD with these settings (separated by spaces) under NAME, e.g. "
        "'cpt_tag=cpt:invariance=region invariance_region=0,0,0.2,0.2' (repeatable)",
    )
    p.add_argument("--no-auto", action="store_true", help="skip automatic strength and the fixed-strength sweep")
    p.add_argument("--no-sweep", action="store_true", help="run automatic strength but not the fixed-strength sweep")
    p.add_argument(
        "--no-paper", action="store_true", help="skip cpt_paper (CPT in the paper's exact form beside the defaults)"
    )
    p.add_argument(
        "--discovery",
        action="store_true",
        help="also measure bias discovery with the attribute hidden (planted-group recovery and an "
        "8-counterexample repair from discovery-ranked suggestions); adds a discovery table to table.md",
    )
    p.add_argument(
        "--frontier",
        action="store_true",
        help="also trace each run's trade-off curve θ + α·δ (α = 0, 0.25, 0.5, 0.75, 1) on the reported rows and add "
        "the best worst group at kept ≥ 0.99 / 0.95 / 0.90 per method to table.md, the curves to figure.html and "
        "frontier.svg",
    )
    p.add_argument("--max-steps", type=int, help="override every method's max_steps (for smoke runs)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_backend_argument(p)
    p.add_argument("--workdir", help="where to build the suite's files (default: a temporary folder)")
    p.add_argument("--out", required=True, help="folder for runs.csv, table.md and figure.html")
    p.add_argument(
        "--from-runs",
        nargs="+",
        metavar="CSV",
        help="run nothing: merge these runs.csv files (a later file's rows replace an earlier one's for the same "
        "method, shots and seed) and write runs.csv, table.md and figure.html for --suite",
    )


def draw_order(suite: Suite, seed: int) -> np.ndarray:
    """The pool's contradicting images in draw order for ``seed``: round-robin over classes."""
    rng = np.random.default_rng(10_000 + seed)
    labels = suite.pool.labels
    per_class = []
    for c in rng.permutation(len(suite.bundle.meta.class_names)):
        idx = np.flatnonzero(suite.pool_conflicting & (labels == c))
        if len(idx):
            per_class.append(list(rng.permutation(idx)))
    order = []
    while any(per_class):
        for lst in per_class:
            if lst:
                order.append(int(lst.pop(0)))
    return np.array(order, dtype=np.int64)


def draw_counterexamples(suite: Suite, shots: int, seed: int) -> np.ndarray:
    order = draw_order(suite, seed)
    if shots > len(order):
        raise UserError(f"suite {suite.name} has only {len(order)} contradicting pool images, asked for {shots}")
    return order[:shots]


def _row(suite: str, name: str, shots: int, seed: int, m: RunMetrics) -> dict:
    head = {"suite": suite, "method": name, "shots": shots, "seed": seed, "strength": m.strength}
    return head | {
        "accuracy_before": m.before.accuracy,
        "accuracy": m.after.accuracy,
        "worst_group_before": m.before.worst_group_accuracy,
        "worst_group": m.after.worst_group_accuracy,
        "kept_decisions": m.comparison.kept_decisions,
        "errors_corrected": m.comparison.errors_corrected,
        "changed_predictions": m.comparison.changed_predictions,
        "steps": m.steps,
        "seconds": m.seconds,
        "stop_reason": m.stop_reason,
        "reported_rows": m.split.reported if m.split is not None else None,
        "check_rows": m.split.check if m.split is not None else None,
        "check_step": m.check.step if m.check is not None else None,
        "check_alpha": m.check.alpha if m.check is not None else None,
    }


def run_benchmark(
    suite: Suite,
    shots: list[int],
    seeds: int,
    methods: list[str],
    *,
    auto: bool,
    device: str,
    max_steps: int | None = None,
    log=print,
    sweep: bool = True,
    paper: bool = True,
    checkpoint: Path | None = None,
    backend=None,
    frontier: bool = False,
    variants: list[tuple[str, str, dict]] | None = None,
) -> pd.DataFrame:
    """Every (method, shots, seed) run as one DataFrame row.

    Each run is one task of ``backend`` (:mod:`core.engine.backends`; default: this process, a draw at a
    time, writing ``checkpoint`` after each). A parallel backend gets the whole grid at once, the suite
    sent to its workers once; the rows come back in the same order either way."""
    backend = backend or LocalBackend()
    base_cfg = {"max_steps": max_steps, "min_steps": min(10, max_steps)} if max_steps else {}

    jobs: list[tuple[str, str, dict]] = [(m, m, dict(base_cfg)) for m in methods]
    jobs += [(name, method, {**base_cfg, **cfg}) for name, method, cfg in variants or []]
    if paper and "cpt" in methods:
        jobs.insert(methods.index("cpt") + 1, (PAPER, "cpt", {**PAPER_FORM, **base_cfg}))
    if auto and sweep:
        jobs += [(fixed_name(s), "cpt", {**base_cfg, "strength": s}) for s in CANDIDATES if s != DEFAULT_STRENGTH]
    if auto:
        jobs.append((AUTO, "cpt", {**base_cfg, "strength": "auto"}))
    draws = [(seed, k) for seed in range(seeds) for k in shots]
    grid = _Grid(suite, jobs, device, frontier=frontier)
    groups = [[(d, j) for d in draws for j in jobs]] if backend.parallel else [[(d, j) for j in jobs] for d in draws]
    gpus = 1 if backend.parallel and backend.cluster_gpus() >= 1 else 0
    rows = []
    t_start = time.perf_counter()
    for group in groups:
        for ((_, _), (name, _, _)), row in zip(group, backend.map(_grid_cell, group, grid, gpus), strict=True):
            if name == "cpt" and auto and sweep:
                rows.append({**row, "method": fixed_name(DEFAULT_STRENGTH)})
            rows.append(row)
        (seed, k), _ = group[-1]
        what = f"seed {seed} shots {k}: {len(jobs)} runs" if len(group) == len(jobs) else f"{len(group)} runs"
        log(f"[{time.perf_counter() - t_start:7.1f} s] {what} done on {backend.describe()}")
        if checkpoint is not None:  # partial results survive an interrupted run
            pd.DataFrame(rows).to_csv(checkpoint, index=False)
    return pd.DataFrame(rows)


@dataclass
class _Grid:
    """What every cell of the benchmark grid needs; sent once to a parallel backend's workers."""

    suite: Suite
    jobs: list
    device: str
    prepared: tuple | None = None  # ((seed, shots), PreparedData) of the last draw, reused by the next cell
    frontier: bool = False  # also trace θ + α·δ on the reported rows (core.bench.frontier)


def _grid_cell(grid: _Grid, cell) -> dict:
    """One run of the grid: method ``job`` on draw ``(seed, shots)``, as a runs.csv row."""
    (seed, k), (name, method, cfg) = cell
    idx = draw_counterexamples(grid.suite, k, seed)
    if grid.prepared is None or grid.prepared[0] != (seed, k):
        grid.prepared = ((seed, k), prepare_suite_data(grid.suite, idx))
    res = run_repair(
        grid.suite.bundle,
        grid.suite.pool.subset(idx),
        method=method,
        config=cfg,
        device=grid.device,
        seed=seed,
        data=grid.prepared[1],
    )
    row = _row(grid.suite.name, name, k, seed, res.metrics)
    if grid.frontier:
        dev = select_device(grid.device)
        row["frontier"] = json.dumps(fr.alpha_points(grid.suite.bundle, res, grid.prepared[1], dev))
    return row


# -- report -----------------------------------------------------------------------------------
METRICS = [
    ("accuracy", "Unbiased accuracy", 3),
    ("worst_group", "Worst-group accuracy", 3),
    ("kept_decisions", "Kept decisions", 3),
    ("steps", "Steps", 1),
    ("seconds", "Seconds", 2),
]


def _method_order(df: pd.DataFrame) -> list[str]:

    present = list(dict.fromkeys(df["method"]))
    main = [m for m in METHODS if m in present]
    return main + [m for m in present if m not in main]


def metric_table(df: pd.DataFrame, col: str, digits: int, methods: list[str] | None = None) -> str:
    shots = sorted(df["shots"].unique())
    methods = methods or [m for m in _method_order(df) if not m.startswith("cpt@")]
    head = "| method | " + " | ".join(f"{s} shot{'s' if s > 1 else ''}" for s in shots) + " |"
    lines = [head, "|---" * (len(shots) + 1) + "|"]
    best = {}
    if col in ("accuracy", "worst_group", "kept_decisions"):
        means = df[df["method"].isin(methods)].groupby(["shots", "method"])[col].mean()
        best = {s: means[s].max() for s in shots}
    for m in methods:
        cells = []
        for s in shots:
            v = df[(df["method"] == m) & (df["shots"] == s)][col].astype(float)
            if v.empty:
                cells.append("—")
                continue
            sd = v.std(ddof=1) if len(v) > 1 else 0.0
            txt = f"{v.mean():.{digits}f} ± {sd:.{digits}f}"
            if s in best and abs(v.mean() - best[s]) < 1e-12:
                txt = f"**{txt}**"
            cells.append(txt)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def auto_gap_table(df: pd.DataFrame) -> str:
    """Auto vs the best fixed strength in hindsight (best mean eval accuracy per shots)."""
    fixed = df[df["method"].str.startswith("cpt@")]
    auto = df[df["method"] == AUTO]
    if fixed.empty or auto.empty:
        return ""
    lines = [
        "| shots | auto accuracy | best fixed λ (hindsight) | its accuracy | gap | auto kept | best-λ kept | λ auto chose |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(df["shots"].unique()):
        f = fixed[fixed["shots"] == s].groupby("method")[["accuracy", "kept_decisions"]].mean()
        best = f["accuracy"].idxmax()
        a = auto[auto["shots"] == s]
        chosen = ", ".join("none" if pd.isna(x) else f"{x:g}" for x in a.sort_values("seed")["strength"])
        lines.append(
            f"| {s} | {a['accuracy'].mean():.3f} | {best.split('@')[1]} | {f.loc[best, 'accuracy']:.3f} | "
            f"{a['accuracy'].mean() - f.loc[best, 'accuracy']:+.3f} | {a['kept_decisions'].mean():.3f} | "
            f"{f.loc[best, 'kept_decisions']:.3f} | {chosen} |"
        )
    return "\n".join(lines)


def auto_ratios(df: pd.DataFrame) -> pd.Series:
    """Auto's seconds ÷ default CPT's seconds on the same draw, indexed by (shots, seed)."""
    a = df[df["method"] == AUTO].set_index(["shots", "seed"])["seconds"]
    c = df[df["method"] == "cpt"].drop_duplicates(["shots", "seed"]).set_index(["shots", "seed"])["seconds"]
    return (a / c).dropna()


def auto_time_table(df: pd.DataFrame) -> str:
    """Per shots: auto's seconds ÷ default CPT's seconds on the same draw (median over draws)."""
    r = auto_ratios(df)
    if r.empty:
        return ""
    lines = ["| shots | " + " | ".join(str(s) for s in sorted(r.index.get_level_values(0).unique())) + " |"]
    lines.append("|---" * (len(lines[0].split("|")) - 2) + "|")
    lines.append(
        "| auto ÷ cpt | "
        + " | ".join(f"{r.xs(s, level=0).median():.2f}" for s in sorted(r.index.get_level_values(0).unique()))
        + " |"
    )
    return "\n".join(lines)


def markdown_report(df: pd.DataFrame, suite: Suite, seeds: int) -> str:
    before = df.iloc[0]
    parts = [
        f"## Benchmark: {suite.title}",
        "",
        f"Shortcut: {suite.shortcut}. Base model before repair: unbiased accuracy {before['accuracy_before']:.3f}, "
        f"worst-group accuracy {before['worst_group_before']:.3f}. Mean ± std over {seeds} draws of counterexamples "
        "per size (the same draws for every method). Bold: best mean in the column.",
    ]
    for col, title, digits in METRICS:
        parts += ["", f"### {title}", "", metric_table(df, col, digits)]
    ratio = auto_time_table(df)
    if ratio:
        parts += [
            "",
            "### Time of automatic strength ÷ one default repair",
            "",
            "Both measured in the same process on the same prepared tensors (median over draws of the per-draw "
            "ratio of seconds, evaluation before/after included on both sides). Target: at most 4.",
            "",
            ratio,
        ]
    front = fr.frontier_table(df, [m for m in _method_order(df) if not m.startswith("cpt@")])
    if front:
        parts += [
            "",
            "### The whole trade-off: best worst group at a kept level",
            "",
            "Each run's curve θ + α·δ (α = 0, 0.25, 0.5, 0.75, 1) on the reported rows; per draw the best point at "
            "the kept level (α = 0, the old model, always qualifies), then the mean over draws. A curve property, "
            "chosen with the reported labels: what each method can reach, not what its default picks.",
            "",
            front,
        ]
    gap = auto_gap_table(df)
    if gap:
        parts += [
            "",
            "### Automatic strength vs the best fixed strength in hindsight",
            "",
            "Fixed strengths tried: " + ", ".join(f"{s:g}" for s in CANDIDATES) + ". 'Best' is chosen on the "
            "evaluation set (which auto never sees); the gap is auto's mean accuracy minus the best's.",
            "",
            gap,
            "",
            "Change-penalized tuning at each fixed strength (unbiased accuracy):",
            "",
            metric_table(df, "accuracy", 3, [fixed_name(s) for s in CANDIDATES] + [AUTO]),
        ]
    return "\n".join(parts) + "\n"


def figure_html(df: pd.DataFrame, title: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Unbiased accuracy vs counterexamples", "Worst-group accuracy vs kept decisions"),
    )
    methods = [m for m in _method_order(df) if not m.startswith("cpt@")]
    palette = [
        "#1f77b4", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd",
        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000",
    ]  # fmt: skip
    for i, m in enumerate(methods):
        g = df[df["method"] == m].groupby("shots")
        mean, std = g["accuracy"].mean(), g["accuracy"].std(ddof=1).fillna(0)
        colour = palette[i % len(palette)]
        width = 4 if m in ("cpt", AUTO) else 2
        fig.add_trace(
            go.Scatter(
                x=mean.index, y=mean.values, error_y={"type": "data", "array": std.values, "visible": True},
                mode="lines+markers", name=m, legendgroup=m, line={"color": colour, "width": width},
            ),
            row=1, col=1,
        )  # fmt: skip
        pts = g[["worst_group", "kept_decisions"]].mean()
        fig.add_trace(
            go.Scatter(
                x=pts["kept_decisions"], y=pts["worst_group"], mode="markers+text", name=m, legendgroup=m,
                showlegend=False, marker={"color": colour, "size": 9}, text=[str(s) for s in pts.index],
                textposition="top center", hovertemplate=m + "<br>shots %{text}<br>kept %{x:.3f}<br>worst %{y:.3f}",
            ),
            row=1, col=2,
        )  # fmt: skip
    base_acc = float(df["accuracy_before"].iloc[0])
    fig.add_hline(y=base_acc, line_dash="dot", annotation_text="before repair", row=1, col=1)
    fig.update_xaxes(type="log", title_text="counterexamples (shots)", row=1, col=1)
    fig.update_yaxes(title_text="unbiased accuracy", row=1, col=1)
    fig.update_xaxes(title_text="kept decisions (higher: less broken)", row=1, col=2)
    fig.update_yaxes(title_text="worst-group accuracy", row=1, col=2)
    fig.update_layout(title=title, height=560, width=1250, template="plotly_white")
    html = fig.to_html(include_plotlyjs="inline", full_html=True)
    if "frontier" in df and not df["frontier"].isna().all():  # the whole trade-off, below the first figure
        curves = fr.frontier_figure(df, methods, f"{title}: kept decisions vs worst group, θ + α·δ")
        html = html.replace("</body>", curves.to_html(include_plotlyjs=False, full_html=False) + "</body>")
    return html


def write_report(df: pd.DataFrame, suite: Suite, seeds: int, out: Path, extra: str = "") -> None:
    """table.md, figure.html and, with frontier points, frontier.svg (the curves as a static picture for docs)."""
    (out / "table.md").write_text(markdown_report(df, suite, seeds) + ("\n" + extra if extra else ""), encoding="utf-8")
    (out / "figure.html").write_text(figure_html(df, suite.title), encoding="utf-8")
    if "frontier" in df and not df["frontier"].isna().all():
        methods = [m for m in _method_order(df) if not m.startswith("cpt@")]
        fig = fr.frontier_figure(df, methods, f"{suite.name}: kept decisions vs worst group")
        (out / "frontier.svg").write_text(figure_svg(fig), encoding="utf-8")


def run(args) -> int:

    for m in args.methods:
        get_method(m)
    if any(s < 1 for s in args.shots):
        raise UserError("--shots must be positive")
    if args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if args.from_runs:
        return _from_runs(args)
    device = select_device(args.device).type
    backend = get_backend(args.backend)
    names = SUITE_GROUPS.get(args.suite, [args.suite])
    for name in names:
        out = Path(args.out) / name if len(names) > 1 else Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            suite = load_suite(name, args.workdir or tmp)
            suite.load_pixels()
            df = run_benchmark(
                suite,
                sorted(set(args.shots)),
                args.seeds,
                args.methods,
                auto=not args.no_auto,
                device=args.device if backend.parallel else device,  # a Ray worker picks its own device
                max_steps=args.max_steps,
                log=lambda s: print(s, file=sys.stderr, flush=True),
                sweep=not args.no_sweep,
                paper=not args.no_paper,
                checkpoint=out / "runs.partial.csv",
                backend=backend,
                frontier=args.frontier,
                variants=[parse_variant(v) for v in args.variant],
            )
            discovery = ""
            if args.discovery:
                discovery, _ = discovery_table(
                    suite,
                    seeds=args.seeds,
                    device=device,
                    log=lambda s: print(s, file=sys.stderr, flush=True),
                    config={"max_steps": args.max_steps, "min_steps": min(10, args.max_steps)}
                    if args.max_steps
                    else None,
                )
                (out / "discovery.md").write_text(discovery, encoding="utf-8")
        df.to_csv(out / "runs.csv", index=False)
        (out / "runs.partial.csv").unlink(missing_ok=True)
        write_report(df, suite, args.seeds, out, discovery)
        print(f"{len(df)} runs → {out / 'runs.csv'}, {out / 'table.md'}, {out / 'figure.html'}")
    return 0


def _from_runs(args) -> int:
    """Merge existing runs.csv files and render the report (for adding methods to a finished benchmark)."""
    frames = [pd.read_csv(p) for p in args.from_runs]
    df = pd.concat(frames, ignore_index=True).drop_duplicates(["method", "shots", "seed"], keep="last")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        suite = load_suite(args.suite, args.workdir or tmp)
    seeds = int(df["seed"].nunique())
    df.to_csv(out / "runs.csv", index=False)
    write_report(df, suite, seeds, out)
    print(f"{len(df)} runs (merged from {len(frames)} files) → {out / 'table.md'}")
    return 0
