"""The guard's benchmark section of docs/BENCHMARKS.md, regenerated from the runs CSVs by one command.

    python scripts/guard_report.py                                 # print it
    python scripts/guard_report.py --write docs/BENCHMARKS.md      # replace the <!-- guard --> … <!-- /guard --> block

Reads ``docs/benchmarks/guard/<suite>_runs.csv`` (``python -m core benchmark --frontier`` writes them as
``runs.csv``) for every suite present, and writes per suite: the targets checked one by one (losses first), the
tables of :func:`core.bench.benchmark.markdown_report` (accuracy, worst group, kept, steps, seconds, the frontier at
kept ≥ 0.99 / 0.95 / 0.90, auto's time), and a link to the suite's frontier picture
(``docs/benchmarks/guard/<suite>_frontier.svg``, drawn here from the same rows). Every number is computed here.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.app.staticchart import figure_svg  # noqa: E402
from core.bench import standard_suite as ss  # noqa: E402
from core.bench.benchmark import AUTO, _method_order, auto_ratios, markdown_report  # noqa: E402
from core.bench.frontier import best_at, frontier_figure  # noqa: E402
from core.bench.suites import SHORTCUTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "docs" / "benchmarks" / "guard"
ORDER = ("demo", "photo", "standard-resnet18", "standard-mobilenet", "mark-resnet18", "shape-mobilenet", "standard-vit")
# suite: (shots, worst group at least, at kept at least) for the worst-group targets
WORST_GROUP_TARGETS = {
    "standard-resnet18": {16: (0.40, 0.95), 32: (0.40, 0.95)},
    "standard-mobilenet": {16: (0.50, 0.97), 32: (0.75, 0.97)},
}
NON_COLOUR = ("mark-resnet18", "shape-mobilenet")


def _mean(df: pd.DataFrame, method: str, shots: int, col: str) -> float | None:
    d = df[(df["method"] == method) & (df["shots"] == shots)]
    return None if d.empty else float(d[col].mean())


def _harm(suite: str, df: pd.DataFrame) -> list[tuple[bool, str]]:
    out = []
    base = float(df["accuracy_before"].iloc[0])
    for m in ("cpt", AUTO):
        for s in sorted(df[df["method"] == m]["shots"].unique()):
            acc = _mean(df, m, s, "accuracy")
            ok = acc >= base - 0.01
            out.append((ok, f"{m} @ {s}: unbiased accuracy {base:.3f} → {acc:.3f} ({acc - base:+.3f}; loss ≤ 0.01)"))
    return out


def _worst_group(suite: str, df: pd.DataFrame) -> list[tuple[bool, str]]:
    out = []
    for s, (wg_min, kept_min) in WORST_GROUP_TARGETS.get(suite, {}).items():
        wg, kept = _mean(df, "cpt", s, "worst_group"), _mean(df, "cpt", s, "kept_decisions")
        if wg is None:
            continue
        ok = wg >= wg_min and kept >= kept_min
        out.append((ok, f"cpt @ {s}: worst group {wg:.3f} at kept {kept:.3f} (target ≥ {wg_min} at ≥ {kept_min})"))
    if suite == "photo":
        base = float(df["accuracy_before"].iloc[0])
        for s in (16, 32):
            acc, kept = _mean(df, "cpt", s, "accuracy"), _mean(df, "cpt", s, "kept_decisions")
            if acc is not None:
                ok = acc - base >= 0.15 and kept >= 0.90
                out.append((ok, f"cpt @ {s}: unbiased accuracy {acc - base:+.3f} at kept {kept:.3f} (target ≥ +0.15 "
                                f"at ≥ 0.90)"))  # fmt: skip
    if suite in NON_COLOUR:
        base = float(df["accuracy_before"].iloc[0])
        for s in (16, 32):
            acc, kept = _mean(df, "cpt", s, "accuracy"), _mean(df, "cpt", s, "kept_decisions")
            if acc is not None:
                ok = acc > base and kept >= 0.95
                out.append((ok, f"cpt @ {s}: unbiased accuracy {acc - base:+.3f} at kept {kept:.3f} (target: a gain at "
                                f"≥ 0.95)"))  # fmt: skip
    return out


def _curves(suite: str, df: pd.DataFrame) -> list[tuple[bool, str]]:
    """The default's curve at or above every baseline's, per shots, at each kept level it is asked at."""
    if "frontier" not in df or df["frontier"].isna().all():
        return []
    out = []
    levels = (0.95,) if suite in NON_COLOUR else ()
    for t in sorted({0.90, 0.95, 0.99, *levels}):
        b = best_at(df, t)
        for s in sorted(b["shots"].unique()):
            here = b[b["shots"] == s].set_index("method")["worst_group"]
            if "cpt" not in here:
                continue
            rivals = here.drop([m for m in here.index if m.startswith("cpt")], errors="ignore")
            if rivals.empty:
                continue
            top = rivals.idxmax()
            ok = here["cpt"] >= rivals[top] - 1e-9
            out.append((ok, f"kept ≥ {t:.2f} @ {s}: cpt's curve reaches worst group {here['cpt']:.3f}, best baseline "
                            f"{top} {rivals[top]:.3f}"))  # fmt: skip
    return out


def _auto(df: pd.DataFrame) -> list[tuple[bool, str]]:
    r = auto_ratios(df)
    out = []
    if not r.empty:
        out.append((r.median() <= 4.0, f"auto ÷ cpt time: median {r.median():.2f} (max {r.max():.2f}; target ≤ 4)"))
    for s in sorted(df[df["method"] == AUTO]["shots"].unique()):
        a, c = _mean(df, AUTO, s, "accuracy"), _mean(df, "cpt", s, "accuracy")
        if c is not None:
            out.append((a >= c - 0.01, f"auto @ {s}: accuracy {a:.3f} vs cpt {c:.3f} (at most 1 point worse)"))
    return out


def checks(suite: str, df: pd.DataFrame) -> list[str]:
    """Every target for ``suite``, misses first."""
    rows = _harm(suite, df) + _worst_group(suite, df) + _curves(suite, df) + _auto(df)
    misses = [f"- **missed**: {t}" for ok, t in rows if not ok]
    met = [f"- met: {t}" for ok, t in rows if ok]
    return misses + met


def describe(suite: str) -> SimpleNamespace:
    """The suite's title and shortcut in words, without building its files."""
    if suite in ss.PARTS:
        arch, source, _, _ = ss.PARTS[suite]
        _, data, shortcut = SHORTCUTS[source]
        library = "timm" if arch.startswith("timm:") else "torchvision"
        return SimpleNamespace(
            title=f"{library} {arch.removeprefix('timm:')} from scratch on {data}", shortcut=shortcut
        )
    if suite == "photo":
        return SimpleNamespace(title="Tinted CIFAR-10 photos (small CNN)", shortcut=SHORTCUTS["photo"][2])
    return SimpleNamespace(title="Tagged MNIST (the demo's small CNN)", shortcut=SHORTCUTS["demo"][2])


def section(suite: str, df: pd.DataFrame) -> str:
    s = describe(suite)
    seeds = int(df["seed"].nunique())
    methods = [m for m in _method_order(df) if not m.startswith("cpt@")]
    svg = FOLDER / f"{suite}_frontier.svg"
    if "frontier" in df and not df["frontier"].isna().all():
        svg.write_text(figure_svg(frontier_figure(df, methods, f"{suite}: kept decisions vs worst group")), "utf-8")
    report = markdown_report(df, s, seeds).replace("## Benchmark:", "### Benchmark:")
    report = re.sub(r"^### (?!Benchmark)", "#### ", report, flags=re.M)
    return "\n".join(
        [
            f"#### Targets ({suite})",
            "",
            *checks(suite, df),
            "",
            report,
            f"![{suite} frontier](benchmarks/guard/{svg.name})" if svg.exists() else "",
        ]  # fmt: skip
    )


def build() -> str:
    parts = []
    for suite in ORDER:
        path = FOLDER / f"{suite}_runs.csv"
        if path.is_file():
            parts.append(section(suite, pd.read_csv(path)))
    return "\n\n".join(parts) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", help="a Markdown file whose <!-- guard --> … <!-- /guard --> block is replaced")
    args = p.parse_args()
    text = build()
    if not args.write:
        sys.stdout.write(text)
        return 0
    path = Path(args.write)
    old = path.read_text(encoding="utf-8")
    new, n = re.subn(r"<!-- guard -->.*?<!-- /guard -->", lambda _: f"<!-- guard -->\n\n{text}\n<!-- /guard -->",
                     old, flags=re.S)  # fmt: skip
    if n != 1:
        raise SystemExit(f"{path} has no <!-- guard --> … <!-- /guard --> block")
    path.write_text(new, encoding="utf-8")
    print(f"wrote the guard section of {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
