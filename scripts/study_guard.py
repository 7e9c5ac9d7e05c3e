"""Trajectories of a repair on the check split and the reported rows, to choose the guard's rule and CPT's settings.

    python scripts/study_guard.py --suites demo standard-resnet18 --shots 4 16 32 --seeds 2 \
        --variants "lr1e-4" "lr1e-4 crop" --max-steps 300 --every 10 --out study-guard

Each variant runs on the benchmark's draws (the same for every variant) with no stopping rule for ``--max-steps``;
every ``--every`` steps (and at step 0) it scores the model on the suite's check split (its ``split=val`` rows) and on
the reported rows, and at the end θ + α·δ for a few α. One row per (suite, shots, seed, variant, step, α) goes to
``trajectories.csv``: any guard rule can then be replayed offline (``scripts/replay_guard.py``) on what a real run
would have seen on the check split, and scored on the reported rows it never saw. One thread, one process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.bench.benchmark import draw_counterexamples  # noqa: E402
from core.bench.suites import load_suite, prepare_suite_data  # noqa: E402
from core.engine.checksplit import CheckSet  # noqa: E402
from core.engine.configs import make_config  # noqa: E402
from core.engine.inference import normalize, predict_logits  # noqa: E402
from core.engine.loop import PredictAdapter, train_method  # noqa: E402
from core.engine.methods import get_method  # noqa: E402
from core.engine.metrics import compare_predictions, group_metrics  # noqa: E402
from core.formats.datasets import split_eval  # noqa: E402

BASE = {"stop_rule": "none", "min_steps": 0, "backtracks": 0}
VARIANTS = {
    "lr3e-5": {"lr": 3e-5},
    "lr1e-4": {"lr": 1e-4},
    "lr3e-4": {"lr": 3e-4},
    "lr1e-4 crop": {"lr": 1e-4, "augment": "crop"},
    "lr3e-4 crop": {"lr": 3e-4, "augment": "crop"},
    "lr1e-4 a1": {"lr": 1e-4, "anchor": 1.0},
    "lr1e-4 a1 crop": {"lr": 1e-4, "anchor": 1.0, "augment": "crop"},
    "lr1e-4 a0": {"lr": 1e-4, "anchor": 0.0},
    "lr1e-4 crop+erase": {"lr": 1e-4, "augment": "crop+erase"},
    "lr1e-4 erase": {"lr": 1e-4, "augment": "erase"},
    "lr3e-4 a1 crop": {"lr": 3e-4, "anchor": 1.0, "augment": "crop"},
    "lr3e-5 hint-colour": {"lr": 3e-5, "invariance": "colour"},
    "lr1e-4 hint-colour": {"lr": 1e-4, "invariance": "colour"},
    "lr1e-4 hint-flip": {"lr": 1e-4, "invariance": "flip"},
    "lr1e-4 hint-corners": {
        "lr": 1e-4,
        "invariance": "region",
        "invariance_region": "0,0,0.25,0.25;0.75,0,1,0.25;0,0.75,0.25,1;0.75,0.75,1,1",
    },
    "lr3e-5 mix1": {"lr": 3e-5, "mix": 1.0},
    "lr3e-5 mix3": {"lr": 3e-5, "mix": 3.0},
    "lr1e-4 mix1": {"lr": 1e-4, "mix": 1.0},
    "lr3e-5 hint-tag": {"lr": 3e-5, "invariance": "region", "invariance_region": "0,0,0.25,0.25"},
    "lr3e-5 hint-flip": {"lr": 3e-5, "invariance": "flip"},
    "lr1e-4 hint-tag": {"lr": 1e-4, "invariance": "region", "invariance_region": "0,0,0.25,0.25"},
}
ALPHAS = (0.25, 0.5, 0.75)


class Recorder:
    """Scores a method on the check split and on the reported rows."""

    def __init__(self, suite, data, check: CheckSet, base_rep: np.ndarray, device):
        self.suite, self.data, self.check, self.base_rep, self.device = suite, data, check, base_rep, device
        self.names = suite.bundle.meta.class_names

    def row(self, impl, step: int, alpha: float) -> dict:
        c = self.check.score(impl.predict)
        pred = predict_logits(PredictAdapter(impl), self.data.x_eval, self.device).argmax(1).numpy()
        m = group_metrics(self.data.y_eval, pred, self.data.attr_eval, self.names, bootstrap=0)
        cmp = compare_predictions(self.data.y_eval, self.base_rep, pred)
        fixed = int((impl.predict(self.data.x_ce.to(self.device)).argmax(1).cpu() == self.data.y_ce).sum())
        return {
            "step": step,
            "alpha": alpha,
            "fixed": fixed,
            **{f"check_{k}": v for k, v in c.to_json().items()},
            "accuracy": m["accuracy"],
            "worst_group": m["worst_group_accuracy"],
            "kept": cmp["kept_decisions"],
            "corrected": cmp["errors_corrected"],
        }


def run_variant(rec: Recorder, name: str, settings: dict, seed: int, max_steps: int, every: int) -> list[dict]:
    suite, data, device = rec.suite, rec.data, rec.device
    cfg = make_config("cpt", {**BASE, **settings, "max_steps": max_steps})
    torch.manual_seed(seed)
    impl = get_method("cpt")(suite.bundle.model, cfg, device, unlabeled=data.unlabeled)
    impl.use_reference(data.reference, seed)
    rows = [rec.row(impl, 0, 1.0)]

    def progress(e: dict) -> None:
        if e["step"] % every == 0:
            rows.append(rec.row(impl, e["step"], 1.0))

    train_method(impl, data, device, rec.names, seed=seed, progress=progress)
    final = impl.snapshot()
    for a in ALPHAS:
        impl.restore([a * d for d in final])
        rows.append(rec.row(impl, max_steps, a))
    return [{"variant": name, **r} for r in rows]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suites", nargs="+", default=["demo"])
    p.add_argument("--shots", type=int, nargs="+", default=[4, 16, 32])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["lr1e-4"], help=f"of: {', '.join(VARIANTS)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="added to every variant")
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    extra = dict(kv.split("=", 1) for kv in args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "trajectories.csv"
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    device = torch.device("cpu")
    t0 = time.perf_counter()
    for suite_name in args.suites:
        with tempfile.TemporaryDirectory() as tmp:
            suite = load_suite(suite_name, tmp)
            suite.load_pixels()
        meta = suite.bundle.meta
        _, val = split_eval(suite.eval_set)
        attributes = suite.eval_set.attributes
        x_val = normalize(suite.eval_pixels[val], meta.mean, meta.std)
        base_val = predict_logits(suite.bundle.model, x_val, device).argmax(1).numpy()
        check = CheckSet(x_val, suite.eval_set.labels[val], [attributes[i] for i in val], base_val, device)
        base_rep = None
        for seed in range(args.seeds):
            for shots in args.shots:
                data = prepare_suite_data(suite, draw_counterexamples(suite, shots, seed))
                if base_rep is None:
                    base_rep = predict_logits(suite.bundle.model, data.x_eval, device).argmax(1).numpy()
                rec = Recorder(suite, data, check, base_rep, device)
                for name in args.variants:
                    if (
                        not done.empty
                        and (
                            (done["suite"] == suite_name)
                            & (done["shots"] == shots)
                            & (done["seed"] == seed)
                            & (done["variant"] == name)
                        ).any()
                    ):
                        continue
                    rows = run_variant(rec, name, {**VARIANTS[name], **extra}, seed, args.max_steps, args.every)
                    df = pd.DataFrame([{"suite": suite_name, "shots": shots, "seed": seed, **r} for r in rows])
                    done = pd.concat([done, df], ignore_index=True)
                    done.to_csv(path, index=False)
                    best = df[df["check_kept"] >= 0.97].sort_values("check_worst_group").iloc[-1]
                    print(
                        f"[{time.perf_counter() - t0:7.0f} s] {suite_name} {shots} shots seed {seed} {name}: "
                        f"base acc {df.iloc[0]['accuracy']:.3f} wg {df.iloc[0]['worst_group']:.3f}; "
                        f"check-best step {best['step']} α {best['alpha']}: acc {best['accuracy']:.3f} "
                        f"wg {best['worst_group']:.3f} kept {best['kept']:.3f}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
