"""Does suspected-group discovery find the planted groups on base models it was not tuned on? Each suite's base
model is trained again from scratch with other seeds (the suite's own recipe and data, only the seed differs), and
discovery runs on each with the attribute column hidden, as in ``python -m core benchmark --discovery``.

    python scripts/discovery_transfer.py --suites demo photo --seeds 1 2 3 --workdir /tmp/transfer \
        --out docs/benchmarks/discovery_transfer_runs.csv

One row per (suite, seed): the planted-group recovery (the share of shortcut-conflicting (label, attribute) cells with a
top-3 suspected group of their label at precision ≥ 0.6 and recall ≥ 0.5), the cells found, the retrained model's
accuracy and worst group on the evaluation set, and the seconds taken. Seed 0 is the suite's own base model. Retrained
models are kept under ``--workdir`` and reused. One thread, one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.bench.group_recovery import conflicting_cells_of, recovery  # noqa: E402
from core.bench.suites import load_suite  # noqa: E402
from core.engine.group_discovery import analyse  # noqa: E402
from core.engine.metrics import group_metrics  # noqa: E402
from core.formats.bundle import load_model_file  # noqa: E402


def base_model(suite, seed: int, workdir: Path):
    """The suite's base model trained with ``seed`` (seed 0: the suite's own), kept under ``workdir``."""
    if seed == 0:
        return suite.bundle
    folder = workdir / f"{suite.name}_seed{seed}"
    if not (folder / "train_info.json").exists():
        suite.retrain(folder, seed=seed)
    return load_model_file(str(folder))


def transfer_row(suite, seed: int, workdir: Path) -> dict:
    t0 = time.perf_counter()
    bundle = base_model(suite, seed, workdir)
    trained_s = time.perf_counter() - t0
    retrained = dataclasses.replace(suite, bundle=bundle)
    retrained.load_pixels()
    found = analyse(bundle, suite.eval_set, pixels=retrained.eval_pixels)
    rec = recovery(found.groups, suite.eval_set, conflicting_cells_of(suite))
    ds = suite.eval_set
    m = group_metrics(ds.labels, found.predictions, ds.attributes, bundle.meta.class_names, bootstrap=0)
    cells = rec["cells"]
    return {
        "suite": suite.name,
        "seed": seed,
        "recovery": rec["recovery"],
        "cells_found": sum(c["recovered"] for c in cells),
        "cells": len(cells),
        "missed": "; ".join(f"{c['label']}/{c['attribute']}" for c in cells if not c["recovered"]),
        "accuracy": m["accuracy"],
        "worst_group": m["worst_group_accuracy"],
        "train_s": round(trained_s, 1),
        "discover_s": round(time.perf_counter() - t0 - trained_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suites", nargs="+", default=["demo", "photo"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in args.suites:
        suite = load_suite(name, args.workdir / "suites")
        for seed in args.seeds:
            rows.append(transfer_row(suite, seed, args.workdir))
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_csv(args.out, index=False)
    df = pd.DataFrame(rows)
    print(df.groupby("suite")["recovery"].agg(["min", "mean", "count"]).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
