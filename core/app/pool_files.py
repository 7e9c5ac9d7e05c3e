"""Where a pool's files are kept in the store: its list of images and the model's answers on it.

Apart from :mod:`core.app.pool` so that modules below it (the demo sandboxes) can name the files too.
"""

from __future__ import annotations

from pathlib import Path

from core.app.store import Store


def items_file(store: Store, dataset_id: int) -> Path:
    """The list of a pool's images (path, attribute). It lives in the store, not next to the images,
    because the demo's images are shared read-only."""
    return store.artifact_dir("datasets", str(dataset_id)) / "items.csv"


def pool_predictions_path(store: Store, model_id: int, dataset_id: int, n_items: int) -> Path:
    """The model's answers on a pool of ``n_items`` images (the pool grows with single uploads)."""
    return store.artifact_dir("pool_predictions") / f"m{model_id}_d{dataset_id}_n{n_items}.npz"
