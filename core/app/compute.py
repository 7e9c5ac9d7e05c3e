"""The workbench's model computations, run by the task worker (:mod:`core.app.worker`) only.

Each entry of :data:`TASKS` takes the store, the task's JSON payload and the acting user, does one
piece of work that needs torch, writes its result to the store or the artifacts folder, and
returns a small JSON-able dict. Pages reach these through :func:`core.app.jobs.compute`; a
:class:`UserError` raised here reaches the page with the same message.
"""

from __future__ import annotations

import csv
import fcntl
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from core.app.demo import build_demo
from core.app.evaluation import reported_rows
from core.app.integrity import check_stored_model, stored_model_sha256
from core.app.pool import items_file, pool_predictions_path, read_items
from core.app.store import Store
from core.app.uploads import register_eval, register_pool
from core.engine.devices import select_device
from core.engine.inference import evaluate_bundle, normalize, predict_logits
from core.formats.bundle import ModelBundle, bundle_from_files, bundle_from_state_file, load_bundle, save_bundle
from core.formats.datasets import ImageDataset, Record, load_dataset, load_pixels
from core.formats.meta import parse_meta_json, sha256_bytes


def _register_model(store: Store, project_id: int, bundle: ModelBundle, name: str, actor: str) -> int:
    staging = store.artifact_dir("models", "incoming")
    tmp = Path(staging) / f"p{project_id}_{sha256_bytes(name.encode())[:8]}"
    save_bundle(bundle.state_dict(), bundle.meta, tmp)
    mid = store.add_model(project_id, "base", name, tmp, bundle.meta.to_dict(), bundle.sha256)
    final = store.artifact_dir("models", str(mid))
    for f in tmp.iterdir():
        shutil.move(str(f), final / f.name)
    tmp.rmdir()
    store.set_model_path(mid, final)
    # The files are re-serialised on save, so record the hashes of what is stored (checked later) and
    # keep the upload's hashes in the audit row.
    stored = stored_model_sha256(final)
    store.set_model_sha256(mid, stored)
    store.set_project(project_id, base_model_id=mid, active_model_id=mid)
    store.audit(
        actor,
        "upload_model",
        project_id,
        model_id=mid,
        name=name,
        architecture=bundle.meta.architecture,
        num_classes=bundle.meta.num_classes,
        sha256=stored,
        upload_sha256=bundle.sha256,
        notes=bundle.notes,
    )
    return mid


def register_model(store: Store, payload: dict, actor: str) -> dict:
    """Check a staged upload's weights (they must load into the named architecture and give finite
    logits) and make it a new project. The staging folder is removed either way."""
    staged, filename, weights = Path(payload["staged"]), payload["filename"], payload["weights"]
    try:
        raw = (staged / weights).read_bytes()
        if weights == "model.safetensors":
            meta_raw = (staged / "model.json").read_bytes()
            bundle = bundle_from_files({"model.json": meta_raw, "model.safetensors": raw}, source=filename)
        else:
            meta = parse_meta_json((staged / "model.json").read_bytes())
            bundle = bundle_from_state_file(raw, filename, meta)
        pid = store.create_project(Path(filename).stem, actor)
        _register_model(store, pid, bundle, filename, actor)
        return {"project_id": pid}
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _pool_items_from_manifest(root: Path) -> list[dict]:
    """Pool items (path, attribute) from a manifest; any label column is deliberately dropped, because
    the curator decides the labels."""
    with open(Path(root) / "manifest.csv", encoding="utf-8-sig", newline="") as fh:
        return [
            {"path": r["path"].strip(), "attribute": (r.get("attribute") or "").strip()} for r in csv.DictReader(fh)
        ]


def open_demo(store: Store, payload: dict, actor: str) -> dict:
    """Build the demo once (cached under the store home), make the demo project the first time and
    evaluate its model. The same project is reused afterwards. A file lock makes the whole step
    atomic even if two workers ever ran at once."""
    with open(store.home / "demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for p in store.projects():
            if p["is_demo"]:
                store.audit(actor, "open_demo", p["id"], reused=True)
                return {"project_id": p["id"]}
        cache = store.home / "demo_cache"
        if not (cache / "BUILT").is_file():
            if cache.exists():
                shutil.rmtree(cache)
            paths = build_demo(cache)
            (cache / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))
            (cache / "BUILT").write_text("ok")
        paths = {k: Path(v) for k, v in json.loads((cache / "paths.json").read_text()).items()}
        pid = store.create_project("Demo", actor, is_demo=True)
        store.audit(actor, "open_demo", pid, reused=False)
        bundle = load_bundle(paths["model"])
        mid = _register_model(store, pid, bundle, "demo model", actor)
        eval_ds = load_dataset(paths["eval"], bundle.meta.class_names)
        did = register_eval(store, pid, eval_ds.root, "demo evaluation set", eval_ds, actor, copy=False)
        pool_items = _pool_items_from_manifest(paths["pool"])
        register_pool(store, pid, paths["pool"], "demo pool", pool_items, actor, copy=False)
    evaluate(store, {"model_id": mid, "dataset_id": did}, actor)
    return {"project_id": pid}


def evaluate(store: Store, payload: dict, actor: str) -> dict:
    """Evaluate a stored model on the reported rows of a stored dataset; keep metrics and predictions."""
    model_id, dataset_id = int(payload["model_id"]), int(payload["dataset_id"])
    if store.evaluation(model_id, dataset_id):
        return {}
    model = store.model(model_id)
    check_stored_model(model)
    bundle = load_bundle(model["path"])
    ds = reported_rows(store.dataset(dataset_id)["path"], tuple(bundle.meta.class_names))
    res = evaluate_bundle(bundle, ds)
    out = store.artifact_dir("evaluations") / f"m{model_id}_d{dataset_id}.npz"
    np.savez(out, predictions=res.predictions, confidences=res.confidences)
    store.save_evaluation(model_id, dataset_id, res.metrics, out)
    return {}


def pool_predictions(store: Store, payload: dict, actor: str) -> dict:
    """Predicted class and confidence of a model for every pool item, saved as an .npz."""
    model_id, dataset_id = int(payload["model_id"]), int(payload["dataset_id"])
    model = store.model(model_id)
    check_stored_model(model)
    bundle = load_bundle(model["path"])
    items = read_items(items_file(store, dataset_id))
    out = pool_predictions_path(store, model_id, dataset_id, len(items))
    root = Path(store.dataset(dataset_id)["path"])
    ds = ImageDataset(root, [Record(i["path"], 0, i["attribute"] or None) for i in items], [])
    x = normalize(load_pixels(ds, bundle.meta.input_size), bundle.meta.mean, bundle.meta.std)
    device = select_device("auto")
    probs = torch.softmax(predict_logits(bundle.model.to(device), x, device), dim=1).numpy()
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, predictions=probs.argmax(axis=1), confidences=probs.max(axis=1))
    tmp.replace(out)  # readers never see a half-written file
    return {"path": str(out)}


TASKS: dict[str, Callable[[Store, dict, str], dict]] = {
    "register_model": register_model,
    "open_demo": open_demo,
    "evaluate": evaluate,
    "pool_predictions": pool_predictions,
}
