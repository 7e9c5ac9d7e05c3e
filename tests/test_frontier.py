"""The whole trade-off in the benchmark: θ + α·δ curves and the best worst group at each kept level."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from core.bench.frontier import ALPHAS, alpha_points, best_at, frontier_figure, frontier_table
from core.engine.loop import PreparedData
from core.engine.repair import run_repair
from core.formats.architectures import SmallCNN
from core.formats.bundle import BundleMeta, ModelBundle


def _inputs():
    torch.manual_seed(0)
    meta = BundleMeta("small_cnn", 3, ["a", "b", "c"], [3, 12, 12], [0.0] * 3, [1.0] * 3)
    g = torch.Generator().manual_seed(1)
    d = PreparedData(
        torch.randn(6, 3, 12, 12, generator=g),
        torch.randint(0, 3, (6,), generator=g),
        torch.randn(40, 3, 12, 12, generator=g),
        torch.randint(0, 3, (40,), generator=g).numpy(),
        ["x", "y"] * 20,
        np.arange(40),
    )
    return ModelBundle(meta, SmallCNN(3, 3, width=8).eval()), d


def test_curve_runs_from_the_old_model_to_the_result():
    bundle, d = _inputs()
    res = run_repair(bundle, None, config={"lr": 0.05, "max_steps": 5, "min_steps": 0, "anchor": 0}, data=d)
    pts = alpha_points(bundle, res, d, torch.device("cpu"))
    assert [p[0] for p in pts] == [0.0, *ALPHAS, 1.0]
    assert pts[0][3] == 1.0 and abs(pts[0][1] - res.metrics.before.accuracy) < 1e-12  # α = 0: the old model
    assert abs(pts[-1][1] - res.metrics.after.accuracy) < 1e-12  # α = 1: the result
    assert abs(pts[-1][3] - res.metrics.comparison.kept_decisions) < 1e-12


def _df(points_by_method: dict[str, list[list[list[float]]]]) -> pd.DataFrame:
    rows = []
    for m, draws in points_by_method.items():
        for seed, pts in enumerate(draws):
            rows.append({"method": m, "shots": 16, "seed": seed, "frontier": json.dumps(pts)})
    return pd.DataFrame(rows)


def test_best_at_takes_the_best_worst_group_per_draw_above_the_kept_level_then_the_mean():
    base = [0.0, 0.50, 0.10, 1.00]
    df = _df(
        {
            "cpt": [
                [base, [0.5, 0.60, 0.30, 0.99], [1.0, 0.70, 0.50, 0.93]],
                [base, [0.5, 0.62, 0.40, 0.96], [1.0, 0.72, 0.60, 0.91]],
            ],
            "lora": [[base, [1.0, 0.80, 0.90, 0.80]], [base, [1.0, 0.80, 0.90, 0.80]]],
        }
    )
    b99 = best_at(df, 0.99).set_index("method")
    assert abs(b99.loc["cpt", "worst_group"] - (0.30 + 0.10) / 2) < 1e-12  # draw 2 reaches 0.99 only at α = 0
    assert b99.loc["lora", "worst_group"] == 0.10  # never above 0.99 kept but at α = 0
    b90 = best_at(df, 0.90).set_index("method")
    assert abs(b90.loc["cpt", "worst_group"] - 0.55) < 1e-12 and b90.loc["lora", "worst_group"] == 0.10
    table = frontier_table(df, ["cpt", "lora"])
    assert "kept decisions ≥ 0.90" in table and "**0.550 / 0.710**" in table
    fig = frontier_figure(df, ["cpt", "lora"], "t")
    assert len(fig.data) == 2 and list(fig.data[0].x) == [1.0, 0.975, 0.92]  # mean kept per α, α = 0 first


def test_no_frontier_column_gives_no_table():
    assert frontier_table(pd.DataFrame({"method": ["cpt"], "shots": [1], "seed": [0]}), ["cpt"]) == ""


def test_a_result_kept_at_alpha_below_one_is_traced_through_the_change_it_trained():
    import dataclasses

    from core.engine.check_results import CheckReport, CheckScore
    from core.engine.inference import predict_logits
    from core.engine.weight_interpolation import interpolated_model

    bundle, d = _inputs()
    res = run_repair(bundle, None, config={"lr": 0.05, "max_steps": 5, "min_steps": 0, "anchor": 0}, data=d)
    dev = torch.device("cpu")
    half = interpolated_model(bundle.model, res.merged_state, 0.5)
    halved = dataclasses.replace(
        res,
        merged_state=half.state_dict(),
        after_pred=predict_logits(half, d.x_eval, dev).argmax(1).numpy(),
        metrics=dataclasses.replace(
            res.metrics, check=CheckReport(5, 0.5, CheckScore(1, 1, 1, 1, 0, 0), CheckScore(1, 1, 1, 1, 0, 0), [])
        ),
    )
    full = dict((p[0], p) for p in alpha_points(bundle, res, d, dev))
    traced = dict((p[0], p) for p in alpha_points(bundle, halved, d, dev))
    assert sorted(traced) == [0.0, 0.25, 0.5, 0.75, 1.0]
    for a in (0.5, 1.0):  # the same curve: α = 1 is the change the run trained, not the halved result
        assert abs(traced[a][1] - full[a][1]) < 0.03 and abs(traced[a][3] - full[a][3]) < 0.03


def test_benchmark_frontier_and_variant_through_the_cli(tmp_path):
    from core.cli import main

    out = tmp_path / "bench"
    argv = ["benchmark", "--suite", "photo", "--shots", "2", "--seeds", "1", "--methods", "cpt", "last_layer",
            "--no-auto", "--no-paper", "--frontier", "--max-steps", "3", "--out", str(out),
            "--variant", "cpt_colour=cpt:invariance=colour invariance_weight=5"]  # fmt: skip
    assert main(argv) == 0
    df = pd.read_csv(out / "runs.csv")
    assert set(df["method"]) == {"cpt", "last_layer", "cpt_colour"}
    assert (df["check_rows"] == 200).all() and (df["reported_rows"] == 1200).all()  # the photo suite's val rows
    for pts in df["frontier"]:
        alphas = [p[0] for p in json.loads(pts)]
        assert alphas[0] == 0.0 and alphas[-1] == 1.0 and len(alphas) == 5
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "The whole trade-off" in table and "kept decisions ≥ 0.95" in table and "cpt_colour" in table
    assert (out / "frontier.svg").read_text(encoding="utf-8").startswith("<svg")
    assert (out / "figure.html").read_text(encoding="utf-8").count("plotly-graph-div") >= 2
