"""A model's numbers on the project's evaluation set, as the Model and Review pages show them.

Evaluations are computed once by the task worker (:func:`core.app.compute.evaluate`) and kept in
the store with their per-image predictions; this module reads them. Like
:func:`core.engine.repair.run_repair`, evaluation reports on the rows not marked ``split=val``, so
the numbers on the Model page and the "before" numbers of a repair are the same numbers.
"""

from __future__ import annotations

import functools
import io

import pandas as pd
from PIL import Image

from core.app import jobs
from core.app.store import Store
from core.engine.metrics import find_worst_finding, groups_frame
from core.formats.datasets import ImageDataset, load_dataset, split_eval
from core.formats.meta import ARCHITECTURE_NAMES


@functools.lru_cache(maxsize=16)
def dataset_at(path: str, class_names: tuple[str, ...]) -> ImageDataset:
    """A stored dataset (immutable once written), read once per process."""
    return load_dataset(path, list(class_names))


def reported_rows(path: str, class_names: tuple[str, ...]) -> ImageDataset:
    """The rows of a stored evaluation set that the reported numbers are computed on."""
    ds = dataset_at(path, class_names)
    reported, _ = split_eval(ds)
    return ds.subset(reported) if 0 < len(reported) < len(ds) else ds


def evaluate_model_on(store: Store, model_id: int, dataset_id: int, actor: str = "workbench") -> dict:
    """Metrics M of a model on a dataset: from the store, or computed by the task worker first."""
    cached = store.evaluation(model_id, dataset_id)
    if cached:
        return cached["metrics"]
    model = store.model(model_id)
    jobs.compute(store, "evaluate", {"model_id": model_id, "dataset_id": dataset_id}, actor, model["project_id"])
    return store.evaluation(model_id, dataset_id)["metrics"]


def evaluate_active(store: Store, project_id: int, actor: str = "workbench") -> dict | None:
    """Metrics of the project's active model on its evaluation set (None until both exist)."""
    p = store.project(project_id)
    if not p or not p["active_model_id"] or not p["eval_dataset_id"]:
        return None
    return evaluate_model_on(store, p["active_model_id"], p["eval_dataset_id"], actor)


def finding(metrics: dict) -> dict | None:
    """The plain-language finding: the worst group vs the same label elsewhere (percentages)."""
    f = find_worst_finding(metrics)
    if not f:
        return None
    return {**f, "accuracy_pct": round(100 * f["accuracy"]), "other_pct": round(100 * f["other_accuracy"])}


def groups_table(metrics: dict) -> pd.DataFrame:
    return groups_frame(metrics)


def architecture_names() -> list[str]:
    """The allow-listed architectures a weights upload may name."""
    return sorted(ARCHITECTURE_NAMES)


@functools.lru_cache(maxsize=4096)
def thumbnail(path: str, size: int) -> bytes:
    """An image scaled to ``size`` pixels wide with sharp (nearest) pixels, for galleries, as PNG bytes. Kept
    encoded: a cached decoded thumbnail of a demo digit 112 px wide held about 50 KB of the server's memory, its PNG
    about 1 KB (a 10-minute soak's server grew 204 → 296 MB while its galleries filled the cache)."""
    img = Image.open(path).convert("RGB")
    h = max(1, round(img.height * size / img.width))
    out = io.BytesIO()
    img.resize((size, h), Image.NEAREST).save(out, format="PNG")
    return out.getvalue()
