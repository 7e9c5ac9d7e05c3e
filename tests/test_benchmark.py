"""Smoke runs of ``python -m core benchmark`` and ``python -m core perf`` through the CLI.

Tiny settings (few shots, few steps, one seed); the checks are on the files and their structure,
never on wall-clock times (docs/DESIGN.md §8).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.cli import main


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from core.bench.suites import load_suite

    return load_suite("photo", tmp_path_factory.mktemp("suite"))


def test_draws_are_nested_balanced_and_contradicting(photo):
    from core.bench.benchmark import draw_counterexamples

    d8 = draw_counterexamples(photo, 8, seed=0)
    d4 = draw_counterexamples(photo, 4, seed=0)
    assert list(d8[:4]) == list(d4)  # nested: the 4-shot set is inside the 8-shot set
    assert photo.pool_conflicting[d8].all()
    assert sorted(np.bincount(photo.pool.labels[d8], minlength=4)) == [2, 2, 2, 2]
    assert list(draw_counterexamples(photo, 8, seed=1)) != list(d8)
    assert list(draw_counterexamples(photo, 8, seed=0)) == list(d8)  # same draw for every method


def test_benchmark_cli_smoke(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(
        [
            "benchmark",
            "--suite",
            "photo",
            "--shots",
            "1",
            "4",
            "--seeds",
            "1",
            "--methods",
            "cpt",
            "finetune_es",
            "side_tuning",
            "last_layer",
            "--max-steps",
            "3",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    df = pd.read_csv(out / "runs.csv")
    # 4 methods + CPT in the paper's form + 3 other fixed strengths + auto + the cpt@1000 alias, per shots
    assert len(df) == 2 * 10
    assert set(df["method"]) >= {
        "cpt", "cpt_paper", "finetune_es", "side_tuning", "last_layer", "cpt_auto", "cpt@100", "cpt@1e+06"
    }  # fmt: skip
    assert "Time of automatic strength ÷ one default repair" in (out / "table.md").read_text()
    assert (df["steps"] <= 3).all()
    assert df["accuracy"].between(0, 1).all() and df["kept_decisions"].between(0, 1).all()
    # every method saw the same draws: same "before" numbers
    assert df["accuracy_before"].nunique() == 1
    table = (out / "table.md").read_text()
    for heading in ("Unbiased accuracy", "Worst-group accuracy", "Kept decisions", "Steps", "Seconds"):
        assert f"### {heading}" in table
    assert "Automatic strength vs the best fixed strength" in table
    assert "| side_tuning |" in table and "±" in table
    html = (out / "figure.html").read_text()
    # self-contained: plotly.js is inlined (no <script src=...>), so it opens offline
    assert "Plotly.newPlot" in html and '<script src="http' not in html and len(html) > 1_000_000


def test_benchmark_discovery_table(tmp_path):
    """--discovery adds the planted-group recovery (attribute hidden) and the 8-counterexample
    comparison of pool rankings to the benchmark's table."""
    out = tmp_path / "bench"
    args = ["benchmark", "--suite", "demo", "--shots", "2", "--seeds", "1", "--methods", "cpt", "--no-auto"]
    rc = main([*args, "--no-paper", "--max-steps", "3", "--discovery", "--out", str(out)])
    assert rc == 0
    table = (out / "table.md").read_text()
    assert "Discovery without attributes" in table and "Planted-group recovery" in table
    assert (out / "discovery.md").read_text() in table
    for ranking in ("discovery", "attribute known", "random"):
        assert f"| {ranking} |" in table


def test_benchmark_rejects_unknown_method(tmp_path, capsys):
    rc = main(["benchmark", "--methods", "nope", "--out", str(tmp_path)])
    assert rc == 2
    assert "unknown method" in capsys.readouterr().err


def test_perf_cli_smoke(tmp_path, capsys):
    out = tmp_path / "perf.json"
    rc = main(
        [
            "perf",
            "--device",
            "cpu",
            "--repeats",
            "1",
            "--steps",
            "1",
            "--eval-images",
            "64",
            "--suites",
            "none",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    for line in (
        "| CPT step ÷ plain fine-tuning step |",
        "| anchored CPT step ÷ plain step on the same 80 images |",
        "| CPT peak memory ÷ plain fine-tuning |",
        "| evaluation streamed from disk",
    ):
        assert line in printed
    sec = json.loads(out.read_text())["sections"][0]
    keys = ("cpt_ratio", "anchored_ratio", "cpt_delta_ratio", "evaluate_ratio", "predict_logits_ratio")
    for key in (*keys, "streamed_ratio", "memory_ratio", "memory_ratio_delta_form"):
        assert sec[key] > 0
    # CPT keeps the frozen θ beside θ' (the δ form also saves θ + δ for backward): it cannot use less memory.
    assert sec["cpt_delta_peak_bytes"] > sec["cpt_peak_bytes"] > sec["plain_peak_bytes"]


@pytest.mark.parametrize("method", ["side_tuning", "last_layer", "lora"])
def test_tune_cli_runs_every_kind_of_method(method, tmp_path, capsys):
    """`tune --method NAME` end to end: non-mergeable (no model/), pool-needing, and mergeable methods."""
    from core.bench.photo_suite import build_photo

    paths = build_photo(tmp_path / "p")
    out = tmp_path / "run"
    args = ["tune", "--model", str(paths["model"]), "--counterexamples", str(paths["counterexamples"])]
    args += ["--eval", str(paths["eval"]), "--unlabeled", str(paths["pool"]), "--out", str(out)]
    args += ["--method", method, "--max-steps", "3", "--min-steps", "1", "--quiet"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and 1 <= metrics["steps"] <= 3
    assert (out / "model" / "model.safetensors").exists() == (method != "side_tuning")
    assert f"method {method}" in capsys.readouterr().out
