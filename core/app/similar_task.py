"""The task worker's side of "More like this" (:mod:`core.app.similar`): the penultimate features of a model
for every image of a pool (:func:`core.engine.neighbours.penultimate_features`), computed once per (model,
pool, number of items) and kept on disk as ``artifacts/pool_features/m<model>_d<pool>_n<items>.npy``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.app.budget import check_budget
from core.app.pool import items_file, read_items
from core.app.similar import features_path
from core.app.store import Store
from core.app.stored_models import stored_bundle
from core.engine.devices import select_device
from core.engine.neighbours import penultimate_features
from core.formats.datasets import ImageDataset, Record


def pool_features(store: Store, payload: dict, actor: str) -> dict:
    """Penultimate features of model ``model_id`` for every item of pool ``dataset_id``, saved as a .npy."""
    model_id, dataset_id = int(payload["model_id"]), int(payload["dataset_id"])
    items = read_items(items_file(store, dataset_id))
    out = features_path(store, model_id, dataset_id, len(items))
    if out.is_file():
        return {"path": str(out)}
    bundle = stored_bundle(store, model_id)
    root = Path(store.dataset(dataset_id)["path"])
    ds = ImageDataset(root, [Record(i["path"], 0, None) for i in items], [])
    feats = penultimate_features(bundle, ds, select_device("auto"))
    check_budget(store, feats.nbytes, "pool features")
    tmp = out.with_suffix(".tmp.npy")
    np.save(tmp, feats)
    tmp.replace(out)  # readers never see a half-written file
    return {"path": str(out)}


SIMILAR_TASKS: dict[str, Callable[[Store, dict, str], dict]] = {"pool_features": pool_features}
