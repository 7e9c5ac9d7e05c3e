""" "More like this" on the Counterexamples page: the pool images nearest one image in the project's model's
own feature space (its penultimate features, :func:`core.engine.neighbours.penultimate_features`, compared by
cosine similarity, :func:`nearest`), so a curator who found one counterexample finds its look-alikes next.

The features are computed once per (model, pool, number of items) by the task worker
(:mod:`core.app.similar_task`) and kept on disk; this side only reads them. Page side: no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.app import jobs
from core.app.pool import items_file, pool_datasets, read_items
from core.app.store import Store

MORE_LIKE_THIS = 12  # images shown for "More like this"


def features_path(store: Store, model_id: int, dataset_id: int, n_items: int) -> Path:
    return store.artifact_dir("pool_features") / f"m{model_id}_d{dataset_id}_n{n_items}.npy"


def _features(store: Store, model_id: int, dataset_id: int, n_items: int, actor: str) -> np.ndarray:
    path = features_path(store, model_id, dataset_id, n_items)
    if not path.is_file():
        jobs.compute(store, "pool_features", {"model_id": model_id, "dataset_id": dataset_id}, actor)
    return np.load(path, mmap_mode="r")


def nearest(features: np.ndarray, index: int, k: int) -> list[int]:
    """The ``k`` rows of ``features`` most like row ``index`` by cosine similarity, most alike first, ``index``
    itself left out (ties broken by row order)."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit[index]
    sims[index] = -np.inf
    order = np.lexsort((np.arange(len(sims)), -sims))
    return [int(i) for i in order[: max(0, min(k, len(sims) - 1))]]


def more_like_this(store: Store, project_id: int, key: str, actor: str, k: int = MORE_LIKE_THIS) -> list[str]:
    """The keys (``"<pool id>:<path>"``, as :func:`core.app.pool.candidates` names them) of the ``k`` pool
    images the project's model sees as most like the image ``key``, most alike first; every pool of the
    project is searched together."""
    model_id = store.project(project_id)["base_model_id"]
    keys, blocks = [], []
    for d in pool_datasets(store, project_id):
        items = read_items(items_file(store, d["id"]))
        if items:
            blocks.append(np.asarray(_features(store, model_id, d["id"], len(items), actor), dtype=np.float32))
            keys.extend(f"{d['id']}:{i['path']}" for i in items)
    if key not in keys:
        return []
    return [keys[i] for i in nearest(np.concatenate(blocks), keys.index(key), k)]
