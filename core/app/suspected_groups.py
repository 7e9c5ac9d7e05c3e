"""Suspected groups in the workbench: the service the pages call (docs/DISCOVERY.md), torch-free.

When the evaluation set has no ``attribute`` column, the bias views can only show per-class
accuracy. The task worker (:func:`core.app.compute.discover`, with the algorithm of
:mod:`core.engine.group_discovery`) clusters the base model's own features (every stage's channel
statistics and the penultimate layer) on the reported evaluation rows and keeps the clusters where it
does clearly worse than on the rest of the class. It writes plain files under
``artifacts/discovery/m<model>_d<dataset>_f<FEATURES_VERSION>/``:

* ``groups.json``: every suspected group with its numbers, its members' manifest paths and up to
  :data:`STRIP_SIZE` representative paths (nearest the group's centroid first);
* ``arrays.npz``: the per-image features and predictions that pool suggestions need;
* ``pool_<pools>.json``: the pool images in suggestion order (in a suspected group and probably
  wrong first), written by :func:`core.app.compute.discover_pool`.

This module says where they are and reads them, asking the worker to compute them first when they
are missing, exactly as :func:`core.app.evaluation.evaluate_model_on` does for evaluations. Naming a
group (a new version of the evaluation set) is :mod:`core.app.naming`.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.app import jobs
from core.app.store import Store
from core.formats.datasets import dataset_root
from core.formats.manifest import has_reported_attributes

STRIP_SIZE = 12  # representative thumbnails kept per group
GROUPS_FILE = "groups.json"
ARRAYS_FILE = "arrays.npz"
# Which features core.engine.group_features gives core.engine.group_discovery to cluster. Bump it when they change: a discovery saved with other
# features is then computed again, instead of pool images (embedded the new way) meeting saved
# features of another width. 2: every stage's channel means and spreads, plus the penultimate layer.
FEATURES_VERSION = 2


def discovery_dir(store: Store, model_id: int, dataset_id: int) -> Path:
    """Where the discovery of a model on an evaluation set is kept (not created here)."""
    return store.artifacts / "discovery" / f"m{model_id}_d{dataset_id}_f{FEATURES_VERSION}"


def pool_signature(pools: list[tuple[int, int]]) -> str:
    """A file name part for a list of (pool dataset id, number of items): a pool that grows (single
    uploads) gets new suggestions."""
    return "_".join(f"p{did}n{n}" for did, n in pools)


def pool_suggestions_path(store: Store, model_id: int, dataset_id: int, pools: list[tuple[int, int]]) -> Path:
    return discovery_dir(store, model_id, dataset_id) / f"pool_{pool_signature(pools)}.json"


def read_discovery(store: Store, model_id: int, dataset_id: int) -> dict | None:
    """The saved discovery of a model on a dataset, or None if it was not computed yet."""
    f = discovery_dir(store, model_id, dataset_id) / GROUPS_FILE
    if not f.is_file():
        return None
    return json.loads(f.read_text(encoding="utf-8"))


def discover(
    store: Store, model_id: int, dataset_id: int, actor: str = "workbench", compute: bool = True
) -> dict | None:
    """Suspected groups of a model on a dataset: from the artifacts, or computed by the task worker
    first (unless ``compute`` is False, when None is returned instead)."""
    found = read_discovery(store, model_id, dataset_id)
    if found is not None or not compute:
        return found
    project_id = store.model(model_id)["project_id"]
    jobs.compute(store, "discover", {"model_id": model_id, "dataset_id": dataset_id}, actor, project_id)
    return read_discovery(store, model_id, dataset_id)


def has_attributes(store: Store, project_id: int) -> bool:
    """Whether any reported row (not ``split=val``) of the project's evaluation set carries an
    attribute. Reads the manifest only (a folder per class has none), so it is cheap on every page run."""
    p = store.project(project_id)
    if not p or not p["eval_dataset_id"]:
        return False
    return has_reported_attributes(dataset_root(Path(store.dataset(p["eval_dataset_id"])["path"])))


def named_groups(store: Store, project_id: int) -> list[dict]:
    """The groups named in this project so far (oldest first)."""
    return store.named_groups(project_id)


def project_groups(store: Store, project_id: int, actor: str = "workbench", compute: bool = True) -> list[dict] | None:
    """The suspected groups of the project's base model on its evaluation set, best first, ready to
    show: each with ``files`` (absolute paths of its representative images, for a strip of
    thumbnails) and ``named`` (the name given to exactly these images, or None). None when there is
    nothing to look at yet, or when not computed and ``compute`` is False."""
    p = store.project(project_id)
    if not p or not p["eval_dataset_id"] or not p["base_model_id"]:
        return None
    found = discover(store, p["base_model_id"], p["eval_dataset_id"], actor, compute)
    if found is None:
        return None
    root = dataset_root(Path(store.dataset(p["eval_dataset_id"])["path"]))
    names = {}
    for row in store.named_groups(project_id):
        names[(row["label"], frozenset(row["paths"]))] = row["name"]
    out = []
    for g in found["groups"]:
        out.append(
            {
                **g,
                "files": [str(root / rel) for rel in g["representatives"]],
                "named": names.get((g["label_name"], frozenset(g["members"]))),
            }
        )
    out.sort(key=lambda g: (-g["score"], -g["size"], g["id"]))
    return out


def group_by_id(store: Store, project_id: int, group_id: int) -> dict:
    """One suspected group of the project's current discovery (KeyError if there is none)."""
    for g in project_groups(store, project_id, compute=False) or []:
        if g["id"] == group_id:
            return g
    raise KeyError(group_id)


def suggestions(store: Store, project_id: int, pools: list[dict], n_items: list[int], actor: str) -> list[dict]:
    """Pool images in suggestion order, for the gallery of a project without attributes: those in a
    suspected group that the model probably gets wrong first (:func:`core.engine.group_discovery.suggest`).
    ``pools`` are dataset rows, ``n_items`` their sizes. Each entry: dataset_id, path, score, group
    (suspected group id or None), group_label (its class name), wrong_share."""
    p = store.project(project_id)
    key = [(int(d["id"]), int(n)) for d, n in zip(pools, n_items, strict=True) if n]
    if not key or not p["eval_dataset_id"] or not p["base_model_id"]:
        return []
    path = pool_suggestions_path(store, p["base_model_id"], p["eval_dataset_id"], key)
    if not path.is_file():
        payload = {"model_id": p["base_model_id"], "dataset_id": p["eval_dataset_id"], "pools": key}
        jobs.compute(store, "discover_pool", payload, actor, project_id)
    return json.loads(path.read_text(encoding="utf-8"))["order"]
