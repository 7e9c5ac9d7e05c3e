"""The repaired model as ONNX (docs/FORMATS.md): written at a stated opset, checked with onnxruntime against
PyTorch on the evaluation images, through ``python -m core export --format onnx`` and through the Review
page's core function (the task worker makes it)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import onnxruntime
import pytest
import torch

from core.app import decisions, jobs, projects, runs
from core.cli import main
from core.engine.onnx_check import OPSET, TOLERANCE, OnnxCheck
from core.engine.onnx_export import AveragingMatrices, check_onnx, export_checked
from core.errors import UserError
from core.formats.bundle import load_bundle
from tests import library_models as lm
from tests.run_fixtures import make_tradeoff_run
from tests.wb_helpers import ALICE, MIA

X = torch.randn(5, 3, 28, 28, generator=torch.Generator().manual_seed(3))


def _onnx_logits(path, x: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"pixel_values": x.numpy()})[0]


@pytest.mark.parametrize("kind", ["timm_vit", "hf_vit"])
def test_a_library_vit_exported_through_the_cli_answers_as_pytorch_does(tmp_path, demo_dir, capsys, kind):
    save = lm.save_timm if kind.startswith("timm") else lm.save_hf
    model_dir = save(getattr(lm, kind)(), tmp_path / "model")
    out = tmp_path / "onnx"
    args = ["export", "--run", str(model_dir), "--out", str(out), "--format", "onnx", "--data", str(demo_dir / "eval")]
    assert main([*args, "--user", "tester"]) == 0
    line = capsys.readouterr().out
    assert f"ONNX opset {OPSET}" in line and "largest logit difference" in line
    assert sorted(p.name for p in out.iterdir()) == ["made_by.json", "model.onnx", "onnx_check.json"]
    check = OnnxCheck.from_json(json.loads((out / "onnx_check.json").read_text()))
    n_eval = sum(1 for _ in open(demo_dir / "eval" / "manifest.csv")) - 1
    assert check.images and check.inputs == n_eval and check.passed and check.opset == OPSET
    want = load_bundle(model_dir).model(X).detach().numpy()
    assert np.abs(_onnx_logits(out / "model.onnx", X) - want).max() <= TOLERANCE
    assert main([*args, "--user", "tester"]) == 2  # the folder is not empty now: nothing is overwritten


def test_a_check_that_finds_a_difference_fails_and_the_graph_is_not_kept(tmp_path):
    model = lm.timm_resnet()
    path = tmp_path / "m.onnx"
    export_checked(model, [3, 28, 28], path, X, images=False)
    assert path.is_file()
    with torch.no_grad():  # the graph now stands for other weights than the model's
        next(model.parameters()).add_(1.0)
    check = check_onnx(path, model, X, OPSET, images=False)
    assert check.max_abs_diff > TOLERANCE and not check.passed
    assert "largest logit difference" in check.describe()


@pytest.mark.parametrize(("size_in", "size_out"), [((7, 9), (3, 4)), ((8, 8), (3, 3)), ((5, 6), (5, 6))])
def test_an_adaptive_pool_the_exporter_refuses_is_the_same_averages_as_matrices(size_in, size_out):
    x = torch.randn(2, 3, *size_in)
    want = torch.nn.AdaptiveAvgPool2d(size_out)(x)
    assert torch.allclose(AveragingMatrices(size_in, size_out)(x), want, atol=1e-6)


def test_the_review_pages_onnx_export_is_made_by_the_worker_checked_and_audited(home):
    store = projects.get_store(home)
    pid = projects.open_demo(store, ALICE)
    rid = make_tradeoff_run(store, pid)
    try:
        with pytest.raises(UserError) as refused:  # not approved: only an approver exports, after approving
            decisions.onnx_export_zip(store, rid, ALICE)
        assert refused.value.key == "forbidden"
        decisions.approve_run(store, rid, "fine", MIA)
        data, check = decisions.onnx_export_zip(store, rid, MIA)
    finally:
        jobs.stop_spawned_workers()
    assert check.passed and check.images and check.inputs == len(runs.prediction_rows(store, rid))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["README.md", "model.onnx", "onnx_check.json"]
        assert json.loads(zf.read("onnx_check.json")) == check.to_json()
        graph = zf.read("model.onnx")
    (home / "m.onnx").write_bytes(graph)
    repaired = load_bundle(store.model(store.run(rid)["repaired_model_id"])["path"])
    x = torch.randn(3, *repaired.meta.input_size)
    assert np.abs(_onnx_logits(home / "m.onnx", x) - repaired.model(x).detach().numpy()).max() <= TOLERANCE
    row = store.audit_events(pid)[-1]
    assert row["action"] == "exported" and row["actor"] == "mia" and row["detail"]["format"] == "onnx"
    assert row["detail"]["opset"] == OPSET and row["detail"]["max_abs_diff"] == check.max_abs_diff
