"""Side-by-side study of CPT's optimiser step, function-space anchor and stopping rule.

    python scripts/study_cpt.py --suites demo photo standard-resnet18 standard-mobilenet \
        --shots 1 4 16 --seeds 2 --out docs/study

Runs each variant in :data:`VARIANTS` on the benchmark's draws of counterexamples (the same draws
for every variant) and writes ``study.csv`` and ``study.txt`` (mean over seeds of the change in
unbiased accuracy, worst-group accuracy, kept decisions, steps, seconds). One thread, so one core
stays free on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.bench.benchmark import _row, draw_counterexamples  # noqa: E402
from core.bench.suites import (
    load_suite,  # noqa: E402
    prepare_suite_data,  # noqa: E402
)
from core.engine.repair import run_repair  # noqa: E402

VARIANTS = {
    "paper (Adam 1e-3, no anchor, paper stop)": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 1e-3,
        "anchor": 0.0,
        "stop_rule": "paper",
    },
    "Adam 1e-4, no anchor, paper stop": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 1e-4,
        "anchor": 0.0,
        "stop_rule": "paper",
    },
    "Adam 1e-4, anchor 1, paper stop": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 1e-4,
        "anchor": 1.0,
        "stop_rule": "paper",
    },
    "Adam 1e-4, anchor 10, paper stop": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 1e-4,
        "anchor": 10.0,
        "stop_rule": "paper",
    },
    "Adam 1e-4, no anchor, kept stop": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 1e-4,
        "anchor": 0.0,
        "stop_rule": "kept",
    },
    "Adam 1e-4, anchor 1, kept stop": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 1e-4,
        "anchor": 1.0,
        "stop_rule": "kept",
    },
    "Adam 1e-4, anchor 10, kept stop": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 1e-4,
        "anchor": 10.0,
        "stop_rule": "kept",
    },
    "Adam 1e-3, anchor 1, kept stop": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 1e-3,
        "anchor": 1.0,
        "stop_rule": "kept",
    },
    "Adam 3e-5, anchor 1, kept stop": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 3e-5,
        "anchor": 1.0,
        "stop_rule": "kept",
    },
    "Adam 3e-5, anchor 10, kept stop": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 3e-5,
        "anchor": 10.0,
        "stop_rule": "kept",
    },
    "Adam 1e-4, anchor 1, kept stop 0.99": {
        "lr_scale": "none",
        "lr": 1e-4,
        "anchor": 1.0,
        "stop_rule": "kept",
        "keep_floor": 0.99,
    },
    "Adam 3e-5, anchor 10, kept stop 0.99": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 3e-5,
        "anchor": 10.0,
        "stop_rule": "kept",
        "keep_floor": 0.99,
    },
    "Adam 1e-5, anchor 1, kept stop": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 1e-5,
        "anchor": 1.0,
        "stop_rule": "kept",
    },
    "Adam 3e-5, anchor 1, kept stop 0.99": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 3e-5,
        "anchor": 1.0,
        "stop_rule": "kept",
        "keep_floor": 0.99,
    },
    "Adam 1e-4, anchor 10, kept stop 0.99": {
        "lr_scale": "none",
        "lr": 1e-4,
        "anchor": 10.0,
        "stop_rule": "kept",
        "keep_floor": 0.99,
    },
    "Adam 3e-5, anchor 10, kept stop 0.99, ε=0": {
        "lr_scale": "none",
        "backtracks": 0,
        "lr": 3e-5,
        "anchor": 10.0,
        "stop_rule": "kept",
        "keep_floor": 0.99,
        "min_steps": 0,
    },
    "Adam 3e-5 size-scaled, anchor 10, kept stop 0.99": {"backtracks": 0},
    "Adam 3e-5 size-scaled, anchor 10, kept stop 0.97": {"keep_floor": 0.97, "backtracks": 0},
    "Adam 3e-5 size-scaled, anchor 10, kept 0.99 + 6 backtracks (default)": {},
    "Adam 3e-5, anchor 10, kept 0.99 + 6 backtracks": {"lr_scale": "none"},
    "Adam 3e-5 size-scaled, anchor 10, kept 0.98 + 6 backtracks": {"keep_floor": 0.98},
    "Adam 3e-5 size-scaled, anchor 10, kept 0.95 + 6 backtracks": {"keep_floor": 0.95},
    "Adam 3e-5 size-scaled, anchor 10, kept 0.90 + 6 backtracks": {"keep_floor": 0.90},
    "NGD 1e-3, anchor 10, kept 0.99 + 6 backtracks": {"optimizer": "ngd", "lr": 1e-3},
    "NGD 3e-3, anchor 10, kept 0.99 + 6 backtracks": {"optimizer": "ngd", "lr": 3e-3},
    "NGD 3e-4, anchor 10, kept 0.99 + 6 backtracks": {"optimizer": "ngd", "lr": 3e-4},
    "Adam 3e-5 size-scaled, anchor 30, kept 0.99 + 6 backtracks": {"anchor": 30.0},
    "Adam 3e-5 size-scaled, anchor 100, kept 0.99 + 6 backtracks": {"anchor": 100.0},
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--suites", nargs="+", default=["demo", "photo", "standard-resnet18", "standard-mobilenet"])
    p.add_argument("--shots", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--variants", nargs="*", help="subset of variant names (default: all)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = {k: v for k, v in VARIANTS.items() if not args.variants or k in args.variants}
    rows = []
    t0 = time.perf_counter()
    for name in args.suites:
        with tempfile.TemporaryDirectory() as tmp:
            suite = load_suite(name, tmp)
            suite.load_pixels()
            for seed in range(args.seeds):
                for k in args.shots:
                    idx = draw_counterexamples(suite, k, seed)
                    data = prepare_suite_data(suite, idx)
                    for vname, cfg in variants.items():
                        res = run_repair(
                            suite.bundle, suite.pool.subset(idx), config=cfg, device="cpu", seed=seed, data=data
                        )
                        row = _row(name, vname, k, seed, res.metrics)
                        row["reference_agreement"] = res.metrics.reference_agreement
                        rows.append(row)
                        print(
                            f"[{time.perf_counter() - t0:6.0f}s] {name} k={k} s={seed} {vname}: "
                            f"acc {row['accuracy_before']:.3f}->{row['accuracy']:.3f} wg {row['worst_group']:.3f} "
                            f"kept {row['kept_decisions']:.3f} steps {row['steps']} {row['seconds']:.1f}s "
                            f"{row['stop_reason']}",
                            file=sys.stderr,
                            flush=True,
                        )
                    pd.DataFrame(rows).to_csv(out / "study.csv", index=False)
    df = pd.DataFrame(rows)
    df["d_accuracy"] = df["accuracy"] - df["accuracy_before"]
    g = df.groupby(["suite", "shots", "method"], sort=False)[
        ["d_accuracy", "worst_group", "kept_decisions", "steps", "seconds"]
    ].mean()
    (out / "study.txt").write_text(g.round(3).to_string() + "\n", encoding="utf-8")
    print(g.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
