"""The candidate pool and the curator's labels: the gallery's ranking and the chosen counterexamples.

A pool is a folder of images plus ``items.csv`` (path, attribute) kept in the store, because the
demo's images are shared read-only. The model's answers on the pool are computed by the task
worker (:func:`core.app.compute.pool_predictions`) and kept on disk; this module only reads them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from core.app import jobs
from core.app.accounts import User, acting, require
from core.app.evaluation import evaluate_model_on, reported_rows
from core.app.pool_files import items_file, pool_predictions_path
from core.app.projects import project_summary
from core.app.store import Store
from core.app.suspected_groups import has_attributes, suggestions
from core.engine.gallery_ranking import answer_reliability, mistake_score, spread_order
from core.errors import UserError
from core.formats.datasets import ImageDataset, Record

POOL_COLUMNS = ("path", "attribute")


MAX_UNLABELED = 4096


def write_items(store: Store, dataset_id: int, items: list[dict]) -> None:
    with open(items_file(store, dataset_id), "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=POOL_COLUMNS)
        w.writeheader()
        w.writerows({"path": i["path"], "attribute": i.get("attribute") or ""} for i in items)


def read_items(f: Path) -> list[dict]:
    if not f.is_file():
        return []
    with open(f, encoding="utf-8", newline="") as fh:
        return [{"path": r["path"], "attribute": r.get("attribute") or ""} for r in csv.DictReader(fh)]


def pool_datasets(store: Store, project_id: int) -> list[dict]:
    """The project's pools: the current pool first, then the 'my uploads' set if there is one."""
    p = store.project(project_id)
    out = []
    if p and p["pool_dataset_id"]:
        out.append(store.dataset(p["pool_dataset_id"]))
    out.extend(store.datasets(project_id, "uploads"))
    return out


def _answer_reliability(store: Store, project_id: int, actor: str) -> dict[tuple[str, str], tuple[int, int]]:
    """For each (attribute, answer) of the original model on the labelled evaluation set: how often
    that answer was right, as (right, total). Empty when there is no evaluation set."""
    p = store.project(project_id)
    if not p or not p["eval_dataset_id"] or not p["base_model_id"]:
        return {}
    evaluate_model_on(store, p["base_model_id"], p["eval_dataset_id"], actor)
    ev = store.evaluation(p["base_model_id"], p["eval_dataset_id"])
    predictions = np.load(ev["predictions_path"])["predictions"]
    base = store.model(p["base_model_id"])
    names = base["meta"]["class_names"]
    ds = reported_rows(store.dataset(p["eval_dataset_id"])["path"], tuple(names))
    cells = [(rec.attribute or "", names[int(pred)]) for rec, pred in zip(ds.records, predictions, strict=True)]
    return answer_reliability(
        cells, [rec.label == int(pred) for rec, pred in zip(ds.records, predictions, strict=True)]
    )


def pool_predictions(store: Store, model_id: int, dataset_id: int, actor: str) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and confidence of a model for every item of a pool, computed once by the task
    worker and kept on disk (keyed by the pool's size, which grows with single uploads)."""
    n = len(read_items(items_file(store, dataset_id)))
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    path = pool_predictions_path(store, model_id, dataset_id, n)
    if not path.is_file():
        jobs.compute(store, "pool_predictions", {"model_id": model_id, "dataset_id": dataset_id}, actor)
    data = np.load(path)
    return data["predictions"], data["confidences"]


def candidates(store: Store, project_id: int, actor: str = "curator") -> list[dict]:
    """Every pool image with the model's guess, ranked so likely counterexamples come first.

    With attributes (the evaluation set and the pool both carry some), the ranking is by how
    unreliable the model's answer is on evaluation images with the same attribute
    (:func:`_attribute_ranking`). Without them, it follows the discovery suggestions
    (:func:`_discovery_ranking`): pool images near a suspected group that the model probably gets
    wrong first. Each entry says which ranking placed it (``ranking``) and carries its label's
    ``version`` (0: never labelled), which a page passes back to :func:`set_label` so that it never
    saves over a label it has not seen. Pool labels, if the upload had any, are never used here.
    """
    s = project_summary(store, project_id)
    if not s["active_model"]:
        return []
    base = store.model(s["base_model_id"])
    chosen = {(c["dataset_id"], c["item_path"]): c["label"] for c in store.labels(project_id)}
    versions = store.label_versions(project_id)
    pools = pool_datasets(store, project_id)
    items_of = {d["id"]: read_items(items_file(store, d["id"])) for d in pools}
    out = []
    for d in pools:
        pred, conf = pool_predictions(store, base["id"], d["id"], actor)
        for i, it in enumerate(items_of[d["id"]]):
            out.append(
                {
                    "key": f"{d['id']}:{it['path']}",
                    "dataset_id": d["id"],
                    "path": it["path"],
                    "file": str(Path(d["path"]) / it["path"]),
                    "attribute": it["attribute"],
                    "predicted": s["class_names"][int(pred[i])],
                    "confidence": float(conf[i]),
                    "label": chosen.get((d["id"], it["path"])),
                    "version": versions.get((d["id"], it["path"]), 0),
                    "source": d["role"],
                    "group": None,
                    "group_label": None,
                }
            )
    pool_has_attributes = any(it["attribute"] for items in items_of.values() for it in items)
    if s["eval"] and not (pool_has_attributes and has_attributes(store, project_id)):
        order = suggestions(store, project_id, pools, [len(items_of[d["id"]]) for d in pools], actor)
        if order:
            return _discovery_ranking(out, order)
    return _attribute_ranking(store, project_id, out, actor)


def _attribute_ranking(store: Store, project_id: int, out: list[dict], actor: str) -> list[dict]:
    """The gallery ordered by :mod:`core.engine.gallery_ranking`: how often the model's answer is right on
    evaluation images with the same attribute, its confidence, and repeats of one (attribute, answer) cell
    pushed down a little, so the first images cover many groups."""
    reliability = _answer_reliability(store, project_id, actor)
    for c in out:
        right, total = reliability.get((c["attribute"] or "", c["predicted"]), (0, 0))
        c["score"] = mistake_score(right, total, c["confidence"])
        c["ranking"] = "attribute"
    order, rounds = spread_order(
        [c["score"] for c in out], [(c["attribute"], c["predicted"]) for c in out], [c["key"] for c in out]
    )
    for c, r in zip(out, rounds, strict=True):
        c["round"] = r
    return [out[i] for i in order]


def _discovery_ranking(out: list[dict], order: list[dict]) -> list[dict]:
    """The gallery in discovery-suggestion order (:func:`core.app.suspected_groups.suggestions`): images near
    a suspected group that the model probably gets wrong first, round-robin over the groups' classes.
    ``score`` is the suggestion's score, ``group`` the suspected group it is near (None: none) and
    ``group_label`` that group's class,
    ``round`` its place in that order. Images the suggestions do not list (none, normally) come last."""
    place = {f"{o['dataset_id']}:{o['path']}": (i, o) for i, o in enumerate(order)}
    for c in out:
        i, o = place.get(c["key"], (len(order), None))
        c["round"] = i
        c["score"] = o["score"] if o else 0.0
        c["group"] = o["group"] if o else None
        c["group_label"] = o.get("group_label") if o else None
        c["ranking"] = "discovery"
    out.sort(key=lambda c: (c["round"], c["key"]))
    return out


def unlabeled_pool(store: Store, project_id: int, limit: int = MAX_UNLABELED) -> ImageDataset | None:
    """The project's candidate pool as unlabelled images, for methods that keep old decisions on
    typical images (MAS, last-layer retraining)."""
    p = store.project(project_id)
    if not p or not p["pool_dataset_id"]:
        return None
    d = store.dataset(p["pool_dataset_id"])
    names = store.model(p["base_model_id"])["meta"]["class_names"]
    return unlabeled_images(d["path"], items_file(store, d["id"]), names, limit)


def unlabeled_images(root: str | Path, items: str | Path, class_names: list[str], limit: int = MAX_UNLABELED):
    """Images listed in an items file as a dataset whose labels are placeholders, never used. At most
    ``limit`` images, evenly spread over the list, so memory stays bounded for big pools."""
    rows = read_items(Path(items))
    if not rows:
        return None
    if len(rows) > limit:
        rows = [rows[round(i * len(rows) / limit)] for i in range(limit)]
    return ImageDataset(Path(root), [Record(i["path"], 0, i["attribute"] or None) for i in rows], class_names)


def _split_key(key: str) -> tuple[int, str]:
    did, _, path = key.partition(":")
    return int(did), path


def _item_attribute(store: Store, dataset_id: int, path: str) -> str:
    ds = store.dataset(dataset_id)
    for it in read_items(items_file(store, ds["id"])):
        if it["path"] == path:
            return it["attribute"]
    raise UserError(f"image {path} is not in the pool")


def set_label(
    store: Store, project_id: int, key: str, label: str, actor: User, expected_version: int | None = None
) -> None:
    """Choose a pool image as a counterexample with ``label`` (or relabel it). Saved at once.

    ``expected_version`` is the label version the caller's page showed (a candidate's ``version``);
    if someone changed the label since, :class:`core.app.store.LabelConflict` says who, to what and
    when, and nothing is written. Saving over it deliberately passes the conflict's ``version``."""
    require(store, actor, "curator", "label", project_id)
    s = project_summary(store, project_id)
    if label not in s["class_names"]:
        raise UserError(f"unknown label {label!r} (classes: {', '.join(s['class_names'])})")
    did, path = _split_key(key)
    attr = _item_attribute(store, did, path)
    with acting(store, actor, "curator", "label", project_id) as actor:  # checked again with the write
        prev = store.set_label(project_id, did, path, label, attr or None, actor, expected_version)
        if prev == label:
            return
        action = "label_added" if prev is None else "label_changed"
        store.audit(actor, action, project_id, image=path, dataset_id=did, label=label, previous=prev)


def set_labels(store: Store, project_id: int, keys: list[str], label: str, actor: User) -> int:
    """Label several images at once; returns how many."""
    for k in keys:
        set_label(store, project_id, k, label, actor)
    return len(keys)


def remove_label(store: Store, project_id: int, key: str, actor: User, expected_version: int | None = None) -> None:
    """Take an image out of the counterexamples (``expected_version`` as in :func:`set_label`)."""
    did, path = _split_key(key)
    with acting(store, actor, "curator", "label", project_id) as actor:
        prev = store.remove_label(project_id, did, path, actor, expected_version)
        if prev is not None:
            store.audit(actor, "label_removed", project_id, image=path, dataset_id=did, label=prev)


def last_label_change_by(store: Store, project_id: int, key: str) -> str | None:
    """Who last set, changed or removed the label of pool image ``key`` (from the audit log), or None."""
    did, path = _split_key(key)
    rows = [
        e
        for e in store.audit_events(project_id)
        if e["action"] in ("label_added", "label_changed", "label_removed")
        and e["detail"].get("image") == path
        and e["detail"].get("dataset_id") == did
    ]
    return rows[-1]["actor"] if rows else None


def chosen_set(store: Store, project_id: int) -> list[dict]:
    """The chosen counterexamples with their image file, label and attribute."""
    return [
        {
            "key": f"{c['dataset_id']}:{c['item_path']}",
            "path": c["item_path"],
            "file": str(Path(c["dataset_path"]) / c["item_path"]),
            "label": c["label"],
            "attribute": c["attribute"] or "",
            "by": c["created_by"],
        }
        for c in store.labels(project_id)
    ]


def chosen_counts(store: Store, project_id: int) -> tuple[dict[str, int], dict[str, int]]:
    """Counts of chosen counterexamples per class and per attribute."""
    per_class: dict[str, int] = {}
    per_attr: dict[str, int] = {}
    for c in chosen_set(store, project_id):
        per_class[c["label"]] = per_class.get(c["label"], 0) + 1
        per_attr[c["attribute"] or "—"] = per_attr.get(c["attribute"] or "—", 0) + 1
    return per_class, per_attr
