"""Replay guard rules on recorded trajectories (``scripts/study_guard.py``) and score them on the reported rows.

    python scripts/replay_guard.py study-guard/trajectories.csv --floors 0.95 0.97 --objectives wg+bal acc

A rule sees only what a run would see: the check split's numbers at the checkpoints (patience is not replayed: every
recorded checkpoint up to ``--max-step`` is a candidate). It picks, per run, the qualifying checkpoint (check kept ≥
floor) with the best objective, the earliest on ties, or step 0. With ``--alpha`` the final state's θ + α·δ rows are
candidates too. Printed: mean over seeds of the reported accuracy change, worst group and kept decisions per suite,
shots, variant and rule; then the same for an oracle that picks on the *reported* rows (the curve's best point at
the same kept level), to show how much the check split's noise costs.
"""

from __future__ import annotations

import argparse

import pandas as pd

OBJECTIVES = {
    "wg": lambda r: r["check_worst_group"],
    "bal": lambda r: r["check_balanced"],
    "acc": lambda r: r["check_accuracy"],
    "wg+bal": lambda r: r["check_worst_group"] + r["check_balanced"],
    "wg+acc": lambda r: r["check_worst_group"] + r["check_accuracy"],
}


def pick(run: pd.DataFrame, floor: float, objective: str, alpha: bool, max_step: int | None) -> pd.Series:
    cand = run if alpha else run[run["alpha"] == 1.0]
    if max_step is not None:
        cand = cand[cand["step"] <= max_step]
    ok = cand[(cand["check_kept"] >= floor) | (cand["step"] == 0)].copy()
    ok["score"] = OBJECTIVES[objective](ok)
    ok = ok.sort_values(["score", "step", "alpha"], ascending=[False, True, True])
    return ok.iloc[0]


def replay(df: pd.DataFrame, floors, objectives, alpha: bool, max_step: int | None) -> pd.DataFrame:
    rows = []
    keys = ["suite", "shots", "seed", "variant"]
    for key, run in df.groupby(keys):
        base = run[run["step"] == 0].iloc[0]
        for f in floors:
            for obj in objectives:
                r = pick(run, f, obj, alpha, max_step)
                rows.append({**dict(zip(keys, key)), "rule": f"{obj}@{f}", "d_acc": r["accuracy"] - base["accuracy"],
                             "worst_group": r["worst_group"], "kept": r["kept"], "step": r["step"],
                             "alpha": r["alpha"]})  # fmt: skip
            cand = run if alpha else run[run["alpha"] == 1.0]
            ok = cand[cand["kept"] >= f].sort_values(["worst_group", "accuracy"]).iloc[-1]
            rows.append({**dict(zip(keys, key)), "rule": f"oracle@{f}", "d_acc": ok["accuracy"] - base["accuracy"],
                         "worst_group": ok["worst_group"], "kept": ok["kept"], "step": ok["step"],
                         "alpha": ok["alpha"]})  # fmt: skip
    return pd.DataFrame(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", nargs="+")
    p.add_argument("--floors", type=float, nargs="+", default=[0.95, 0.97])
    p.add_argument("--objectives", nargs="+", default=["wg+bal"], choices=list(OBJECTIVES))
    p.add_argument("--alpha", action="store_true", help="the final state's θ + α·δ rows are candidates too")
    p.add_argument("--max-step", type=int)
    args = p.parse_args()
    df = pd.concat([pd.read_csv(c) for c in args.csv], ignore_index=True)
    out = replay(df, args.floors, args.objectives, args.alpha, args.max_step)
    table = out.groupby(["suite", "shots", "variant", "rule"])[["d_acc", "worst_group", "kept", "step"]].mean()
    n = out.groupby(["suite", "shots", "variant", "rule"])["seed"].nunique().rename("draws")
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 2000)
    print(table.join(n).round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
