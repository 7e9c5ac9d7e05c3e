"""The task worker's prediction tasks: a stored model evaluated on a stored evaluation set, and its answers on a
pool. Each keeps what it computed (the store's evaluations table and an .npz of answers); the demo passes answers
it already has (:mod:`core.app.demo_answers`) instead of predicting again."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.app.evaluation import reported_rows
from core.app.pool import items_file, pool_predictions_path, read_items
from core.app.store import Store
from core.app.stored_models import stored_bundle
from core.engine import inference
from core.engine.backends import backend_name, get_backend
from core.engine.devices import select_device
from core.engine.inference import evaluate_bundle, predict_dataset, predict_sharded
from core.engine.metrics import DEFAULT_MIN_GROUP_COUNT, group_metrics
from core.formats.bundle import ModelBundle
from core.formats.datasets import ImageDataset, Record


def sharding_backend(images: int):
    """The Ray backend, for a set of ``images`` that spans two shards or more, when the workbench runs on an
    existing Ray cluster (``BIASREPAIR_BACKEND=ray`` with ``RAY_ADDRESS``): its workers predict the shards.
    Otherwise None: this process predicts the set (no private Ray instance is started for a task)."""
    if backend_name() != "ray" or not os.environ.get("RAY_ADDRESS") or images < 2 * inference.SHARD_IMAGES:
        return None
    return get_backend("ray")


def evaluate(store: Store, payload: dict, actor: str) -> dict:
    """Evaluate a stored model on the reported rows of a stored dataset; keep metrics and predictions."""
    model_id, dataset_id = int(payload["model_id"]), int(payload["dataset_id"])
    if store.evaluation(model_id, dataset_id):
        return {}
    bundle = stored_bundle(store, model_id)
    ds = reported_rows(store.dataset(dataset_id)["path"], tuple(bundle.meta.class_names))
    save_evaluation(store, bundle, ds, model_id, dataset_id)
    return {}


def save_evaluation(
    store: Store,
    bundle: ModelBundle,
    ds: ImageDataset,
    model_id: int,
    dataset_id: int,
    known: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Predict ``ds`` (or take the ``known`` predictions and confidences), compute the metrics and keep both."""
    if known is None:
        res = evaluate_bundle(bundle, ds, backend=sharding_backend(len(ds)))
        preds, conf, metrics = res.predictions, res.confidences, res.metrics
    else:
        preds, conf = known
        metrics = group_metrics(ds.labels, preds, ds.attributes, bundle.meta.class_names, DEFAULT_MIN_GROUP_COUNT)
    out = store.artifact_dir("evaluations") / f"m{model_id}_d{dataset_id}.npz"
    np.savez(out, predictions=preds, confidences=conf)
    store.save_evaluation(model_id, dataset_id, metrics, out)
    return out


def pool_predictions(store: Store, payload: dict, actor: str) -> dict:
    """Predicted class and confidence of a model for every pool item, saved as an .npz."""
    model_id, dataset_id = int(payload["model_id"]), int(payload["dataset_id"])
    bundle = stored_bundle(store, model_id)
    items = read_items(items_file(store, dataset_id))
    return {"path": str(save_pool_predictions(store, bundle, items, model_id, dataset_id))}


def save_pool_predictions(
    store: Store,
    bundle: ModelBundle,
    items: list[dict],
    model_id: int,
    dataset_id: int,
    known: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Predict the pool's ``items`` (or take the ``known`` answers) and save them as an .npz."""
    out = pool_predictions_path(store, model_id, dataset_id, len(items))
    if known is None:
        root = Path(store.dataset(dataset_id)["path"])
        ds = ImageDataset(root, [Record(i["path"], 0, i["attribute"] or None) for i in items], [])
        backend = sharding_backend(len(ds))
        if backend is not None:  # shards on the cluster's workers, gathered in order
            probs = predict_sharded(bundle.model, ds, bundle.meta, backend, "auto")
        else:
            probs = predict_dataset(bundle.model, ds, bundle.meta, select_device("auto"))  # streamed, bounded
        known = probs.argmax(axis=1), probs.max(axis=1)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, predictions=known[0], confidences=known[1])
    tmp.replace(out)  # readers never see a half-written file
    return out
