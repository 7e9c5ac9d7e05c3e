"""The model card that goes with every export (docs/FORMATS.md): the Hugging Face layout, and every number in it
equal to the run's metrics (core/engine/results.py RunMetrics); who started, labelled and approved it from the
audit rows; the hashes those of the stored files."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile

import pytest
import yaml

from core.app import decisions, projects, runs
from core.app.integrity import file_sha256, stored_model_sha256
from core.cli import main
from core.engine.runfolder import RunFolder
from core.formats.bundle import load_bundle
from tests.run_fixtures import make_tradeoff_run
from tests.wb_helpers import ALICE, MIA, open_demo_here


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _split(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    head, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def _check_numbers(card: str, m) -> None:
    """The YAML metrics and the per-group table equal the run's metrics."""
    header, body = _split(card)
    got = {x["name"]: x["value"] for x in header["model-index"][0]["results"][0]["metrics"]}
    for when, g in (("before", m.before), ("after", m.after)):
        assert got[f"accuracy {when}"] == pytest.approx(g.accuracy, abs=1e-6)
        assert got[f"worst-group accuracy {when}"] == pytest.approx(g.worst_group_accuracy, abs=1e-6)
        assert got[f"bias gap {when}"] == pytest.approx(g.bias_gap, abs=1e-6)
    assert got["kept decisions"] == pytest.approx(m.comparison.kept_decisions, abs=1e-6)
    rows = {tuple(c.strip() for c in line.strip("|").split("|")) for line in body.splitlines() if line.count("|") == 6}
    old = {(g.label, g.attribute): g for g in m.before.groups}
    assert len(m.after.groups) > 3
    for g in m.after.groups:
        b = old[(g.label, g.attribute)]
        want = (g.label, g.attribute, str(g.count), f"{_pct(b.accuracy)} [{_pct(b.ci_low)}, {_pct(b.ci_high)}]",
                f"{_pct(g.accuracy)} [{_pct(g.ci_low)}, {_pct(g.ci_high)}]")  # fmt: skip
        assert want in rows
    c = m.comparison
    assert f"kept decisions: {_pct(c.kept_decisions)}; answers changed: {c.changed_predictions}" in body
    assert f"fixed: {c.n_fixed}; broken: {c.n_broken}" in body


def test_the_workbench_export_carries_a_card_with_the_runs_numbers_and_its_approval(home):
    store = projects.get_store(home)
    pid = open_demo_here(store, ALICE)
    rid = make_tradeoff_run(store, pid)
    decisions.approve_run(store, rid, "fixes the red twos", MIA, override=True, reason="the loss is within reason")
    with zipfile.ZipFile(io.BytesIO(decisions.export_bytes(store, rid, MIA))) as zf:
        assert sorted(zf.namelist()) == ["README.md", "model.json", "model.safetensors"]
        card = zf.read("README.md").decode("utf-8")
    m = runs.run_result(store, rid)
    _check_numbers(card, m)
    header, body = _split(card)
    base = store.model(store.run(rid)["model_id"])
    assert header["base_model"] == base["name"] and "license" not in header and "# license: not set" in card
    approved = decisions.approval(store, rid)
    assert f"- approved by: mia, at {approved['ts']}" in body and "fixes the red twos" in body
    assert "four-eyes rule: kept" in body and f"method: {m.method}; strength: {m.strength:g}; steps: {m.steps}" in body
    assert f"- used: {m.counterexamples}" in body
    out_dir = RunFolder(store.run(rid)["out_dir"]).model_dir
    for name, digest in stored_model_sha256(out_dir).items():
        assert f"- merged · {name}: `{digest}`" in body
    for name, digest in base["sha256"].items():
        assert f"- base · {name}: `{digest}`" in body
    assert re.search(r"- torch: \d", body) and "## Known limits" in body


def test_the_card_is_written_in_the_workbench_language(home):
    """Exported from the Japanese workbench, the card's words are Japanese (its YAML header, which tools read,
    stays English) and its numbers are the same; the MLflow registry's copy stays English."""
    store = projects.get_store(home)
    pid = open_demo_here(store, ALICE)
    rid = make_tradeoff_run(store, pid)
    decisions.approve_run(store, rid, "赤い 2 を直した", MIA, override=True, reason="the loss is within reason")
    with zipfile.ZipFile(io.BytesIO(decisions.export_bytes(store, rid, MIA, "ja"))) as zf:
        card = zf.read("README.md").decode("utf-8")
    english = decisions.model_card(store, rid)
    header, body = _split(card)
    assert header == _split(english)[0]
    m = runs.run_result(store, rid)
    for title in (
        "## 想定する用途",
        "## 何をどう修復したか",
        "## グループごとの結果（修復前と修復後）",
        "## 承認",
        "## 既知の限界",
    ):
        assert title in body
    assert "## Intended use" not in card and "Known limits" not in card and "approved by" not in card
    assert "二者承認ルール：守られた" in body and "赤い 2 を直した" in body
    c = m.comparison
    assert f"保たれた判定：{100 * c.kept_decisions:.1f} %、変わった答え：{c.changed_predictions}" in body
    assert "| クラス | グループ | 画像数 | 修復前 | 修復後 |" in body
    # the per-group rows are the English card's rows
    rows = [line for line in body.splitlines() if line.count("|") == 6][2:]
    assert rows and rows == [line for line in _split(english)[1].splitlines() if line.count("|") == 6][2:]
    assert "## Intended use" in english


def test_the_cli_export_carries_a_card_with_the_runs_numbers(demo_dir, tmp_path):
    run = tmp_path / "run"
    args = ["repair", "--model", str(demo_dir / "model"), "--counterexamples", str(demo_dir / "counterexamples"),
            "--eval", str(demo_dir / "eval"), "--out", str(run), "--max-steps", "4", "--min-steps", "1", "--user", "ann", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "m.zip"), "--user", "mia"]) == 0
    with zipfile.ZipFile(tmp_path / "m.zip") as zf:
        card = zf.read("README.md").decode("utf-8")
    assert load_bundle(tmp_path / "m.zip").meta.architecture == "small_cnn"  # the card does not disturb a reload
    m = RunFolder(run).metrics()
    _check_numbers(card, m)
    assert "started by: ann" in card and "Not approved in a workbench." in card
    assert f"- delta · delta.safetensors: `{file_sha256(run / 'delta.safetensors')}`" in card
    out = tmp_path / "onnx"
    assert main(["export", "--run", str(run), "--out", str(out), "--format", "onnx", "--user", "mia"]) == 0
    assert (out / "README.md").read_text(encoding="utf-8") == card
    assert json.loads((out / "onnx_check.json").read_text())["images"] is False


def test_a_card_needs_no_torch_to_be_written():
    code = "import core.app.model_card, sys; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
