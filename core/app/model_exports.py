"""Worker side of handing a model out (run by the task worker, :mod:`core.app.compute`): the repaired model as
ONNX, checked with onnxruntime against PyTorch on the run's evaluation images (:mod:`core.engine.onnx_export`; the
page side is :func:`core.app.decisions.onnx_export_zip`), and the MLflow registry's update
(:mod:`core.app.mlflow_registry`; the page side is :mod:`core.app.registry`)."""

from __future__ import annotations

import json
from collections.abc import Callable

from core.app.mlflow_registry import mlflow_sync
from core.app.registry import TASK as REGISTRY_TASK
from core.app.runs import eval_root, prediction_rows
from core.app.store import Store
from core.engine.inference import DiskImages
from core.engine.onnx_check import CHECK_FILE, ONNX_FILE
from core.engine.onnx_export import export_checked
from core.engine.runfolder import RunFolder
from core.formats.bundle import load_bundle
from core.formats.datasets import ImageDataset, Record


def export_onnx(store: Store, payload: dict, actor: str) -> dict:
    """Write the run's repaired model as ``model.onnx`` under the store's ``exports/run<id>/`` with its check
    (``onnx_check.json``); a graph that does not answer as the model does is refused and not kept."""
    run_id = int(payload["run_id"])
    run = store.run(run_id)
    bundle = load_bundle(RunFolder(run["out_dir"]).model_dir)
    rows = prediction_rows(store, run_id)
    records = [Record(r["path"], r["label"], r["attribute"] or None) for r in rows]
    ds = ImageDataset(eval_root(store, run), records, list(bundle.meta.class_names))
    out = store.artifact_dir("exports", f"run{run_id}")
    x = DiskImages.decode(ds, bundle.meta)
    check = export_checked(bundle.model, list(bundle.meta.input_size), out / ONNX_FILE, x, True)
    (out / CHECK_FILE).write_text(json.dumps(check.to_json(), indent=1) + "\n", encoding="utf-8")
    return {"path": str(out / ONNX_FILE), "check": check.to_json()}


EXPORT_TASKS: dict[str, Callable[[Store, dict, str], dict]] = {"export_onnx": export_onnx, REGISTRY_TASK: mlflow_sync}
