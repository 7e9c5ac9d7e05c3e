"""The workbench's service layer: every action a page offers, as a plain function over the store.

Pages hold widgets only; they call these functions and show what comes back. Each function that
changes something writes the store first and appends an audit event, so nothing depends on
``st.session_state``. Problems caused by the user raise :class:`core.errors.UserError` with a message
meant for the page, and leave what was already saved untouched (uploads are validated completely
before anything is registered).

Heavy objects (loaded models, decoded datasets, pool predictions) are cached per process, keyed
by their artifact path, which never changes once written.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from core.app.store import Store
from core.errors import UserError
from core.formats.bundle import (
    BundleMeta,
    ModelBundle,
    bundle_from_files,
    bundle_from_state_file,
    bundle_zip_bytes,
    load_bundle,
    read_bundle_zip,
    save_bundle,
    sha256_bytes,
)
from core.formats.datasets import (
    IMAGE_SUFFIXES,
    ImageDataset,
    Record,
    dataset_from_zip_bytes,
    dataset_root,
    load_dataset,
    open_image,
)
from core.formats.zipsafety import read_zip_members

# "Do no harm" thresholds of the verdict (DESIGN.md §8). Shown on the review page.
MAX_ACCURACY_DROP = 0.02
MIN_KEPT_DECISIONS = 0.90
MIN_ACCURACY_GAIN = 0.01  # "better overall" needs at least one point, not noise
MAX_POOL_ZIP_BYTES = 512 * 1024 * 1024
REPEAT_PENALTY = 0.05  # gallery order: each earlier image of the same (attribute, answer) cell costs this
POOL_COLUMNS = ("path", "attribute")
DEFAULT_METHOD = "cpt"

_demo_lock = threading.Lock()


# ---- store and projects ------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _store_for(home: str) -> Store:
    store = Store(home)
    from core.app.jobs import recover_interrupted

    recover_interrupted(store)
    return store


def get_store(home: str | Path | None = None) -> Store:
    """The store for ``home`` (default ``$BIASREPAIR_HOME``). On first use in a process, runs that a
    dead worker left 'running' are marked 'interrupted'."""
    from core.app.store import home_dir

    return _store_for(str(Path(home).resolve() if home else home_dir()))


def latest_project_id(store: Store) -> int | None:
    projects = store.projects()
    return projects[0]["id"] if projects else None


def project_summary(store: Store, project_id: int) -> dict:
    """What the sidebar and every page need to know about a project, in one dict."""
    p = store.project(project_id)
    if p is None:
        raise UserError(f"project {project_id} does not exist")
    active = store.model(p["active_model_id"]) if p["active_model_id"] else None
    return {
        "project": p,
        "active_model": active,
        "base_model_id": p["base_model_id"],
        "class_names": active["meta"]["class_names"] if active else [],
        "eval": store.dataset(p["eval_dataset_id"]) if p["eval_dataset_id"] else None,
        "pool": store.dataset(p["pool_dataset_id"]) if p["pool_dataset_id"] else None,
        "n_labels": len(store.labels(project_id)),
    }


# ---- the demo ----------------------------------------------------------------------------------
def open_demo(store: Store, actor: str) -> int:
    """Build the demo once (cached under the store home) and return the demo project, creating it the
    first time. The same project is reused afterwards, so labels and runs made on it stay. Two tabs
    pressing the button at once get the same project (the whole step holds a lock)."""
    with _demo_lock:
        for p in store.projects():
            if p["is_demo"]:
                store.audit(actor, "open_demo", p["id"], reused=True)
                return p["id"]
        cache = store.home / "demo_cache"
        done = cache / "BUILT"
        if not done.is_file():
            from core.app.demo import build_demo

            if cache.exists():
                shutil.rmtree(cache)
            paths = build_demo(cache)
            (cache / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))
            done.write_text("ok")
        paths = {k: Path(v) for k, v in json.loads((cache / "paths.json").read_text()).items()}
        pid = store.create_project("Demo", actor, is_demo=True)
        store.audit(actor, "open_demo", pid, reused=False)
        bundle = load_bundle(paths["model"])
        _register_model(store, pid, bundle, "demo model", actor)
        class_names = bundle.meta.class_names
        eval_ds = load_dataset(paths["eval"], class_names)
        _register_eval(store, pid, eval_ds.root, "demo evaluation set", eval_ds, actor, copy=False)
        pool_items = _pool_items_from_manifest(paths["pool"])
        _register_pool(store, pid, paths["pool"], "demo pool", pool_items, actor, copy=False)
    evaluate_active(store, pid)
    return pid


def _pool_items_from_manifest(root: Path) -> list[dict]:
    """Pool items (path, attribute) from a manifest; any label column is deliberately dropped, because
    the curator decides the labels."""
    root = Path(root)
    with open(root / "manifest.csv", encoding="utf-8-sig", newline="") as fh:
        return [
            {"path": r["path"].strip(), "attribute": (r.get("attribute") or "").strip()} for r in csv.DictReader(fh)
        ]


# ---- registering uploads -----------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _cached_tree_sha256(root: str, stamp: tuple) -> str:
    return _tree_sha256(Path(root), cache=False)


def _tree_sha256(root: Path, cache: bool = True) -> str:
    """SHA-256 over a folder's relative file names and contents (the audit fingerprint of a dataset).

    The demo cache never changes, so its fingerprint is computed once per process (keyed by the
    folder's modification time and file count)."""
    root = Path(root)
    if cache:
        files = sum(1 for p in root.rglob("*") if p.is_file())
        return _cached_tree_sha256(str(root), (root.stat().st_mtime_ns, files))
    h = hashlib.sha256()
    for f in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _register_model(store: Store, project_id: int, bundle: ModelBundle, name: str, actor: str) -> int:
    staging = store.artifact_dir("models", "incoming")
    tmp = Path(staging) / f"p{project_id}_{sha256_bytes(name.encode())[:8]}"
    save_bundle(bundle.state_dict(), bundle.meta, tmp)
    mid = store.add_model(project_id, "base", name, tmp, bundle.meta.to_dict(), bundle.sha256)
    final = store.artifact_dir("models", str(mid))
    for f in tmp.iterdir():
        shutil.move(str(f), final / f.name)
    tmp.rmdir()
    store.execute("UPDATE models SET path = ? WHERE id = ?", (str(final), mid))
    store.set_project(project_id, base_model_id=mid, active_model_id=mid)
    store.audit(
        actor,
        "upload_model",
        project_id,
        model_id=mid,
        name=name,
        architecture=bundle.meta.architecture,
        num_classes=bundle.meta.num_classes,
        sha256=bundle.sha256,
    )
    return mid


def _register_eval(
    store: Store, project_id: int, root: Path, name: str, ds: ImageDataset, actor: str, copy: bool
) -> int:
    sha = _tree_sha256(root)
    did = store.add_dataset(project_id, "eval", name, root, sha, len(ds))
    if copy:
        dest = store.artifacts / "datasets" / str(did)
        shutil.copytree(root, dest)
        store.execute("UPDATE datasets SET path = ? WHERE id = ?", (str(dest), did))
    store.set_project(project_id, eval_dataset_id=did)
    store.audit(actor, "upload_eval", project_id, dataset_id=did, name=name, images=len(ds), sha256=sha)
    return did


def _register_pool(
    store: Store, project_id: int, root: Path, name: str, items: list[dict], actor: str, copy: bool
) -> int:
    sha = _tree_sha256(root)
    did = store.add_dataset(project_id, "pool", name, root, sha, len(items))
    dest = store.artifacts / "datasets" / str(did)
    if copy:
        shutil.copytree(root, dest)
    else:
        dest = Path(root)
    _write_items(store, did, items)
    store.execute("UPDATE datasets SET path = ? WHERE id = ?", (str(dest), did))
    store.set_project(project_id, pool_dataset_id=did)
    store.audit(actor, "upload_pool", project_id, dataset_id=did, name=name, images=len(items), sha256=sha)
    return did


def _items_file(store: Store, dataset_id: int) -> Path:
    """The list of a pool's images (path, attribute). It lives in the store, not next to the images,
    because the demo's images are shared read-only."""
    return store.artifact_dir("datasets", str(dataset_id)) / "items.csv"


def _write_items(store: Store, dataset_id: int, items: list[dict]) -> None:
    with open(_items_file(store, dataset_id), "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=POOL_COLUMNS)
        w.writeheader()
        w.writerows({"path": i["path"], "attribute": i.get("attribute") or ""} for i in items)


def upload_model_zip(store: Store, raw: bytes, filename: str, actor: str) -> int:
    """A new project from a model bundle zip (model.json + model.safetensors). Returns its id."""
    bundle = bundle_from_files(read_bundle_zip(raw, filename), source=filename)
    pid = store.create_project(Path(filename).stem, actor)
    _register_model(store, pid, bundle, filename, actor)
    return pid


def upload_model_weights(
    store: Store,
    raw: bytes,
    filename: str,
    architecture: str,
    class_names: list[str],
    input_size: list[int],
    mean: list[float],
    std: list[float],
    actor: str,
) -> int:
    """A new project from a weights file (.safetensors/.pt/.pth state dict) plus a small form."""
    meta = BundleMeta.from_dict(
        {
            "architecture": architecture,
            "num_classes": len(class_names),
            "class_names": class_names,
            "input_size": input_size,
            "mean": mean,
            "std": std,
        }
    )
    bundle = bundle_from_state_file(raw, filename, meta)
    pid = store.create_project(Path(filename).stem, actor)
    _register_model(store, pid, bundle, filename, actor)
    return pid


def upload_eval_zip(store: Store, project_id: int, raw: bytes, filename: str, actor: str) -> int:
    """Attach a labelled evaluation set (zip) to a project and evaluate the active model on it."""
    summary = project_summary(store, project_id)
    if not summary["active_model"]:
        raise UserError("upload a model first, then its evaluation set")
    staging = store.artifact_dir("incoming") / f"eval_{sha256_bytes(raw)[:16]}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        ds = dataset_from_zip_bytes(raw, filename, summary["class_names"], staging)
    except UserError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    did = _register_eval(store, project_id, ds.root, filename, ds, actor, copy=True)
    shutil.rmtree(staging, ignore_errors=True)
    evaluate_active(store, project_id)
    return did


def upload_pool_zip(store: Store, project_id: int, raw: bytes, filename: str, actor: str) -> int:
    """Attach a pool of candidate images (a zip of PNG/JPEG; an optional manifest.csv may give each
    image an ``attribute``; labels in it are ignored). Every image is checked before saving."""
    members = read_zip_members(raw, filename, max_total=MAX_POOL_ZIP_BYTES)
    attrs: dict[str, str] = {}
    manifests = [m for m in members if m.rsplit("/", 1)[-1] == "manifest.csv"]
    if manifests:
        prefix = manifests[0][: -len("manifest.csv")]
        text = members[manifests[0]].decode("utf-8-sig", errors="replace")
        for r in csv.DictReader(io.StringIO(text)):
            attrs[prefix + (r.get("path") or "").strip()] = (r.get("attribute") or "").strip()
    images = {m: d for m, d in members.items() if Path(m).suffix.lower() in IMAGE_SUFFIXES}
    others = [m for m in members if m not in images and not m.endswith(("manifest.csv", ".txt", ".md"))]
    if others:
        raise UserError(f"{filename} holds files that are not PNG/JPEG images: {', '.join(others[:5])}")
    if not images:
        raise UserError(f"{filename} holds no PNG or JPEG images")
    for m, d in images.items():
        open_image(d, m)
    dest = store.artifact_dir("incoming") / f"pool_{sha256_bytes(raw)[:16]}"
    if dest.exists():
        shutil.rmtree(dest)
    for m, d in images.items():
        (dest / m).parent.mkdir(parents=True, exist_ok=True)
        (dest / m).write_bytes(d)
    items = [{"path": m, "attribute": attrs.get(m, "")} for m in sorted(images)]
    did = _register_pool(store, project_id, dest, filename, items, actor, copy=True)
    shutil.rmtree(dest, ignore_errors=True)
    return did


def upload_single_images(
    store: Store, project_id: int, files: list[tuple[str, bytes]], attribute: str, actor: str
) -> int:
    """Add single images to the project's 'my uploads' pool. All are checked first; none is saved if
    one is bad. Returns how many were added."""
    if not files:
        return 0
    for name, data in files:
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"{name} is not a .png/.jpg/.jpeg file")
        open_image(data, name)
    existing = store.datasets(project_id, "uploads")
    if existing:
        did = existing[0]["id"]
        root = Path(existing[0]["path"])
    else:
        did = store.add_dataset(project_id, "uploads", "my uploads", Path("."), "", 0)
        root = store.artifact_dir("datasets", str(did))
        store.execute("UPDATE datasets SET path = ? WHERE id = ?", (str(root), did))
    items = _read_items(_items_file(store, did))
    added = []
    for name, data in files:
        digest = sha256_bytes(data)
        rel = f"images/{digest[:16]}{Path(name).suffix.lower()}"
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        if rel not in {i["path"] for i in items}:
            items.append({"path": rel, "attribute": attribute.strip()})
        added.append({"name": name, "sha256": digest})
    _write_items(store, did, items)
    store.set_dataset_size(did, len(items), _tree_sha256(root, cache=False))
    store.audit(actor, "upload_images", project_id, dataset_id=did, files=added)
    return len(added)


def _read_items(f: Path) -> list[dict]:
    if not f.is_file():
        return []
    with open(f, encoding="utf-8", newline="") as fh:
        return [{"path": r["path"], "attribute": r.get("attribute") or ""} for r in csv.DictReader(fh)]


# ---- loading and evaluating --------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _bundle_at(path: str) -> ModelBundle:
    return load_bundle(path)


@functools.lru_cache(maxsize=16)
def _dataset_at(path: str, class_names: tuple[str, ...]) -> ImageDataset:
    return load_dataset(path, list(class_names))


def model_bundle(store: Store, model_id: int) -> ModelBundle:
    row = store.model(model_id)
    if row is None:
        raise UserError(f"model {model_id} does not exist")
    return _bundle_at(row["path"])


def eval_dataset(store: Store, project_id: int) -> ImageDataset | None:
    s = project_summary(store, project_id)
    if not s["eval"] or not s["active_model"]:
        return None
    return _dataset_at(s["eval"]["path"], tuple(s["class_names"]))


_eval_cache: dict[tuple[str, str], object] = {}


def _evaluate(model_key: str, model_path: str, dataset_path: str):
    """EvalResult of a model on the reported rows of a dataset; cached per process by the model's
    file hashes and the dataset folder, since both are immutable once stored."""
    key = (model_key, dataset_path)
    if key not in _eval_cache:
        from core.engine.metrics import evaluate_bundle
        from core.engine.repair import split_eval

        bundle = _bundle_at(model_path)
        ds = _dataset_at(dataset_path, tuple(bundle.meta.class_names))
        reported, _ = split_eval(ds)  # rows marked split=val are for stopping rules, as in core.engine.repair
        if 0 < len(reported) < len(ds):
            ds = ds.subset(reported)
        _eval_cache[key] = evaluate_bundle(bundle, ds)
    return _eval_cache[key]


def evaluate_model_on(store: Store, model_id: int, dataset_id: int) -> dict:
    """Metrics M of a model on a dataset, computed once and kept in the store.

    Like :func:`core.engine.repair.run_repair`, it reports on the rows not marked ``split=val``, so the
    numbers on the Model page and the "before" numbers of a repair are the same numbers."""
    cached = store.evaluation(model_id, dataset_id)
    if cached:
        return cached["metrics"]
    row = store.model(model_id)
    res = _evaluate(row["sha256_json"], row["path"], store.dataset(dataset_id)["path"])
    out = store.artifact_dir("evaluations") / f"m{model_id}_d{dataset_id}.npz"
    np.savez(out, predictions=res.predictions, confidences=res.confidences)
    store.save_evaluation(model_id, dataset_id, res.metrics, out)
    return res.metrics


def evaluate_active(store: Store, project_id: int) -> dict | None:
    """Metrics of the project's active model on its evaluation set (None until both exist)."""
    p = store.project(project_id)
    if not p or not p["active_model_id"] or not p["eval_dataset_id"]:
        return None
    return evaluate_model_on(store, p["active_model_id"], p["eval_dataset_id"])


def finding(metrics: dict) -> dict | None:
    """The plain-language finding: the worst group vs the same label elsewhere (percentages)."""
    from core.engine.metrics import find_worst_finding

    f = find_worst_finding(metrics)
    if not f:
        return None
    return {**f, "accuracy_pct": round(100 * f["accuracy"]), "other_pct": round(100 * f["other_accuracy"])}


def groups_table(metrics: dict) -> pd.DataFrame:
    from core.engine.metrics import groups_frame

    return groups_frame(metrics)


def architecture_names() -> list[str]:
    """The allow-listed architectures a weights upload may name."""
    from core.formats.architectures import ARCHITECTURES

    return sorted(ARCHITECTURES)


@functools.lru_cache(maxsize=4096)
def thumbnail(path: str, size: int):
    """An image scaled to ``size`` pixels wide with sharp (nearest) pixels, for galleries."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    h = max(1, round(img.height * size / img.width))
    return img.resize((size, h), Image.NEAREST)


# ---- the candidate pool and labels -------------------------------------------------------------
def pool_datasets(store: Store, project_id: int) -> list[dict]:
    """The project's pools: the current pool first, then the 'my uploads' set if there is one."""
    p = store.project(project_id)
    out = []
    if p and p["pool_dataset_id"]:
        out.append(store.dataset(p["pool_dataset_id"]))
    out.extend(store.datasets(project_id, "uploads"))
    return out


@functools.lru_cache(maxsize=16)
def _pool_predictions(model_path: str, pool_path: str, items_file: str, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and confidence of a model for every pool item (n_items keys the cache)."""
    import torch

    from core.engine.metrics import predict_logits
    from core.formats.datasets import load_pixels, normalize

    bundle = _bundle_at(model_path)
    items = _read_items(Path(items_file))
    ds = ImageDataset(Path(pool_path), [Record(i["path"], 0, i["attribute"] or None) for i in items], [])
    if not items:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    x = normalize(load_pixels(ds, bundle.meta.input_size), bundle.meta.mean, bundle.meta.std)
    probs = torch.softmax(predict_logits(bundle.model, x, torch.device("cpu")), dim=1).numpy()
    return probs.argmax(axis=1), probs.max(axis=1)


def _answer_reliability(store: Store, project_id: int) -> dict[tuple[str, str], tuple[int, int]]:
    """For each (attribute, answer) of the original model on the labelled evaluation set: how often
    that answer was right, as (right, total). Empty when there is no evaluation set."""
    p = store.project(project_id)
    if not p or not p["eval_dataset_id"] or not p["base_model_id"]:
        return {}
    from core.engine.repair import split_eval

    base = store.model(p["base_model_id"])
    ev_path = store.dataset(p["eval_dataset_id"])["path"]
    res = _evaluate(base["sha256_json"], base["path"], ev_path)
    ds = _dataset_at(ev_path, tuple(base["meta"]["class_names"]))
    reported, _ = split_eval(ds)
    if 0 < len(reported) < len(ds):
        ds = ds.subset(reported)
    names = base["meta"]["class_names"]
    table: dict[tuple[str, str], list[int]] = {}
    for rec, pred in zip(ds.records, res.predictions, strict=True):
        cell = table.setdefault((rec.attribute or "", names[int(pred)]), [0, 0])
        cell[0] += int(rec.label == int(pred))
        cell[1] += 1
    return {k: (v[0], v[1]) for k, v in table.items()}


def candidates(store: Store, project_id: int) -> list[dict]:
    """Every pool image with the model's guess, ranked so likely counterexamples come first.

    Score = (1 − how often the model's answer is right on evaluation images with the same attribute)
    + ½ (1 − the model's confidence). The first term asks: when the original model gives this answer
    on images with this attribute (say "seven" on a red tag), how often is it right? A shortcut
    answers from the attribute, so its answers are unreliable exactly there (estimated with add-one
    smoothing; ½ when never seen). Low confidence adds a little. Repeats of the same (attribute,
    answer) cell are pushed down a little, so the first images cover many groups. Pool labels, if the upload had
    any, are never used here.
    """
    s = project_summary(store, project_id)
    if not s["active_model"]:
        return []
    base = store.model(s["base_model_id"])
    reliability = _answer_reliability(store, project_id)
    chosen = {(c["dataset_id"], c["item_path"]): c["label"] for c in store.labels(project_id)}
    out = []
    for d in pool_datasets(store, project_id):
        items_file = _items_file(store, d["id"])
        items = _read_items(items_file)
        pred, conf = _pool_predictions(base["path"], d["path"], str(items_file), len(items))
        for i, it in enumerate(items):
            attr = it["attribute"]
            answer = s["class_names"][int(pred[i])]
            right, total = reliability.get((attr or "", answer), (0, 0))
            score = (1 - (right + 1) / (total + 2)) + 0.5 * (1 - float(conf[i]))
            out.append(
                {
                    "key": f"{d['id']}:{it['path']}",
                    "dataset_id": d["id"],
                    "path": it["path"],
                    "file": str(Path(d["path"]) / it["path"]),
                    "attribute": attr,
                    "predicted": s["class_names"][int(pred[i])],
                    "confidence": float(conf[i]),
                    "score": score,
                    "label": chosen.get((d["id"], it["path"])),
                    "source": d["role"],
                }
            )
    # Spread the top of the list over (attribute, answer) cells: each image loses REPEAT_PENALTY for
    # every better-scored image of its cell. A handful of labels then covers many groups instead of
    # eight copies of one mistake (which a repair over-learns), while likely mistakes still lead.
    out.sort(key=lambda c: (-c["score"], c["key"]))
    seen: dict[tuple[str, str], int] = {}
    for c in out:
        cell = (c["attribute"], c["predicted"])
        c["round"] = seen.get(cell, 0)
        seen[cell] = c["round"] + 1
    out.sort(key=lambda c: (-(c["score"] - REPEAT_PENALTY * c["round"]), c["key"]))
    return out


MAX_UNLABELED = 4096


def unlabeled_pool(store: Store, project_id: int, limit: int = MAX_UNLABELED) -> ImageDataset | None:
    """The project's candidate pool as unlabelled images (labels are placeholders, never used), for
    methods that keep old decisions on typical images (MAS, last-layer retraining). At most
    ``limit`` images, evenly spread over the pool, so memory stays bounded for big pools."""
    p = store.project(project_id)
    if not p or not p["pool_dataset_id"]:
        return None
    d = store.dataset(p["pool_dataset_id"])
    items = _read_items(_items_file(store, d["id"]))
    if not items:
        return None
    if len(items) > limit:
        items = [items[round(i * len(items) / limit)] for i in range(limit)]
    names = store.model(p["base_model_id"])["meta"]["class_names"]
    return ImageDataset(Path(d["path"]), [Record(i["path"], 0, i["attribute"] or None) for i in items], names)


def _split_key(key: str) -> tuple[int, str]:
    did, _, path = key.partition(":")
    return int(did), path


def _item_attribute(store: Store, dataset_id: int, path: str) -> str:
    ds = store.dataset(dataset_id)
    for it in _read_items(_items_file(store, ds["id"])):
        if it["path"] == path:
            return it["attribute"]
    raise UserError(f"image {path} is not in the pool")


def set_label(store: Store, project_id: int, key: str, label: str, actor: str) -> None:
    """Choose a pool image as a counterexample with ``label`` (or relabel it). Saved at once."""
    s = project_summary(store, project_id)
    if label not in s["class_names"]:
        raise UserError(f"unknown label {label!r} (classes: {', '.join(s['class_names'])})")
    did, path = _split_key(key)
    attr = _item_attribute(store, did, path)
    prev = store.set_label(project_id, did, path, label, attr or None, actor)
    if prev == label:
        return
    action = "label_added" if prev is None else "label_changed"
    store.audit(actor, action, project_id, image=path, dataset_id=did, label=label, previous=prev)


def set_labels(store: Store, project_id: int, keys: list[str], label: str, actor: str) -> int:
    """Label several images at once; returns how many."""
    for k in keys:
        set_label(store, project_id, k, label, actor)
    return len(keys)


def remove_label(store: Store, project_id: int, key: str, actor: str) -> None:
    did, path = _split_key(key)
    prev = store.remove_label(project_id, did, path)
    if prev is not None:
        store.audit(actor, "label_removed", project_id, image=path, dataset_id=did, label=prev)


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


# ---- runs --------------------------------------------------------------------------------------
def method_choices() -> list[tuple[str, str]]:
    from core.engine.methods import METHODS

    return [(name, getattr(cls, "title", name)) for name, cls in METHODS.items()]


def method_schema(method: str) -> list[dict]:
    from core.engine.methods import config_schema

    return config_schema(method)


def submit_run(store: Store, project_id: int, method: str, config: dict, actor: str, start_worker: bool = True) -> int:
    """Queue a repair of the project's base model on the chosen counterexamples. The counterexamples
    are copied into the run's folder, so later label edits do not change a queued run."""
    from core.engine.methods import make_config

    s = project_summary(store, project_id)
    if not s["active_model"]:
        raise UserError("open the demo or upload a model first")
    chosen = chosen_set(store, project_id)
    if not chosen:
        raise UserError("choose at least one counterexample on the Counterexamples page first")
    strength = config.get("strength")
    check = {k: v for k, v in config.items() if not (k == "strength" and v == "auto")}
    make_config(method, check)
    model_id = s["base_model_id"]
    run_dir = store.artifact_dir("runs", "incoming")
    run_id = store.create_run(
        project_id,
        model_id,
        method,
        config,
        "auto" if strength == "auto" else (f"{strength:g}" if strength is not None else "default"),
        len(chosen),
        run_dir,
        actor,
    )
    # Materialise the counterexample set before the worker can see the run.
    out = store.artifact_dir("runs", str(run_id))
    ce = out / "counterexamples"
    (ce / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, c in enumerate(chosen):
        rel = f"images/ce_{i:04d}{Path(c['path']).suffix.lower()}"
        shutil.copyfile(c["file"], ce / rel)
        rows.append({"path": rel, "label": c["label"], "attribute": c["attribute"], "source": c["path"]})
    with open(ce / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "attribute", "source"])
        w.writeheader()
        w.writerows(rows)
    store.queue_run(run_id, out)
    store.audit(
        actor,
        "run_queued",
        project_id,
        run_id=run_id,
        method=method,
        config=config,
        counterexamples=len(chosen),
    )
    if start_worker:
        from core.app.jobs import ensure_worker

        ensure_worker(store)
    return run_id


def resume_queued(store: Store) -> bool:
    """Start a worker if runs are waiting and none is alive (after a server restart, or if a worker
    died). Cheap when nothing waits: one indexed query. Returns whether runs are waiting."""
    if store.one("SELECT id FROM runs WHERE status = 'queued' LIMIT 1") is None:
        return False
    from core.app.jobs import ensure_worker

    ensure_worker(store)
    return True


def cancel_run(store: Store, run_id: int, actor: str) -> None:
    """Ask a run to stop. A queued run is cancelled at once; a running one within about a second."""
    run = store.run(run_id)
    if run is None or run["status"] not in ("queued", "running"):
        return
    store.set_run(run_id, cancel_requested=1)
    if run["status"] == "queued":
        store.finish_run(run_id, "cancelled", stop_reason="cancelled before it started")
    store.audit(actor, "run_cancel_requested", run["project_id"], run_id=run_id)


def run_progress(store: Store, run_id: int) -> dict:
    """Live state of a run for the Tune page: status, history rows, latest event, fraction, ETA."""
    run = store.run(run_id)
    hist = store.progress(run_id)
    last = hist[-1] if hist else None
    frac, eta = 0.0, None
    if last and last.get("max_steps"):
        frac = min(1.0, last["step"] / last["max_steps"])
        if last["step"] and last.get("elapsed_s") is not None:
            eta = last["elapsed_s"] / last["step"] * (last["max_steps"] - last["step"])
    if run and run["status"] == "done":
        frac, eta = 1.0, 0.0
    return {"run": run, "history": hist, "last": last, "fraction": frac, "eta_s": eta}


def active_runs(store: Store, project_id: int) -> list[dict]:
    return [r for r in store.runs(project_id) if r["status"] in ("preparing", "queued", "running")]


def run_metrics(store: Store, run_id: int) -> dict | None:
    run = store.run(run_id)
    if not run or run["status"] != "done":
        return None
    f = Path(run["out_dir"]) / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None


def verdict(metrics: dict) -> dict:
    """The "do no harm" verdict (DESIGN.md §8), from computed numbers only.

    ``flagged`` when held-out accuracy drops by more than MAX_ACCURACY_DROP or kept decisions fall
    below MIN_KEPT_DECISIONS; ``unchanged`` when no prediction changed at all (e.g. "auto" chose to
    change nothing); ``improved`` when worst-group accuracy went up; ``partial`` when overall
    accuracy rose by at least MIN_ACCURACY_GAIN but the worst group did not; else ``no_gain``.
    """
    before, after = metrics["before"], metrics["after"]
    drop = before["accuracy"] - after["accuracy"]
    wg_b, wg_a = before.get("worst_group_accuracy"), after.get("worst_group_accuracy")
    reasons = []
    if drop > MAX_ACCURACY_DROP:
        reasons.append("accuracy_drop")
    if metrics["kept_decisions"] < MIN_KEPT_DECISIONS:
        reasons.append("kept_low")
    if reasons:
        kind = "flagged"
    elif metrics.get("changed_predictions", 0) == 0:
        kind = "unchanged"
    elif wg_b is not None and wg_a is not None and wg_a > wg_b:
        kind = "improved"
    elif -drop >= MIN_ACCURACY_GAIN:
        kind = "partial"
    else:
        kind = "no_gain"
    return {
        "kind": kind,
        "reasons": reasons,
        "accuracy_change": after["accuracy"] - before["accuracy"],
        "worst_before": wg_b,
        "worst_after": wg_a,
        "kept": metrics["kept_decisions"],
        "max_drop": MAX_ACCURACY_DROP,
        "min_kept": MIN_KEPT_DECISIONS,
    }


def changed_predictions(store: Store, run_id: int) -> list[dict]:
    """Evaluation images whose prediction changed: fixed (now right) or broken (now wrong)."""
    run = store.run(run_id)
    f = Path(run["out_dir"]) / "predictions.csv"
    if not f.is_file():
        return []
    ev = store.dataset(store.project(run["project_id"])["eval_dataset_id"])
    root = dataset_root(Path(ev["path"]))
    bundle = model_bundle(store, run["model_id"])
    names = bundle.meta.class_names
    out = []
    with open(f, encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            before, after, label = int(r["before"]), int(r["after"]), _label_index(r["label"], names)
            if before == after:
                continue
            out.append(
                {
                    "file": str(root / r["path"]),
                    "label": names[label],
                    "before": names[before],
                    "after": names[after],
                    "fixed": after == label,
                    "broken": before == label,
                }
            )
    out.sort(key=lambda c: (not c["fixed"], c["label"]))
    return out


def _label_index(raw: str, names: list[str]) -> int:
    return names.index(raw) if raw in names else int(raw)


def tradeoff_points(store: Store, project_id: int) -> list[dict]:
    """One point per finished run: worst-group accuracy vs kept decisions, labelled by strength."""
    pts = []
    for r in store.runs(project_id):
        m = run_metrics(store, r["id"])
        if not m:
            continue
        pts.append(
            {
                "run_id": r["id"],
                "strength": r["strength_label"],
                "chosen_strength": m.get("strength"),
                "worst_group": m["after"]["worst_group_accuracy"],
                "kept": m["kept_decisions"],
                "accuracy": m["after"]["accuracy"],
                "decision": r["decision"],
            }
        )
    return pts


# ---- decisions ---------------------------------------------------------------------------------
def approve_run(
    store: Store, run_id: int, approver: str, comment: str, actor: str, override: bool = False, reason: str = ""
) -> int:
    """Approve a finished run: its repaired model becomes the project's active model.

    A run the verdict flags can only be approved with ``override`` and a written ``reason``.
    Returns the id of the repaired model.
    """
    run = store.run(run_id)
    m = run_metrics(store, run_id)
    if run is None or m is None:
        raise UserError("only a finished run can be approved")
    if not approver.strip():
        raise UserError("write the approver's name")
    v = verdict(m)
    if v["kind"] == "flagged" and not (override and reason.strip()):
        raise UserError("this repair is flagged; tick the override box and write a reason to approve it")
    model_dir = Path(run["out_dir"]) / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise UserError("this method produced no mergeable model, so it cannot be approved")
    bundle = _bundle_at(str(model_dir))
    mid = run["repaired_model_id"] or store.add_model(
        run["project_id"],
        "repaired",
        f"repair of run {run_id}",
        model_dir,
        bundle.meta.to_dict(),
        {n: hashlib.sha256((model_dir / n).read_bytes()).hexdigest() for n in ("model.json", "model.safetensors")},
        run_id=run_id,
    )
    store.set_run(run_id, decision="approved", repaired_model_id=mid)
    store.set_project(run["project_id"], active_model_id=mid)
    store.audit(
        actor,
        "approved",
        run["project_id"],
        run_id=run_id,
        approver=approver.strip(),
        comment=comment.strip(),
        verdict=v["kind"],
        override=bool(override and v["kind"] == "flagged"),
        reason=reason.strip(),
        model_id=mid,
    )
    return mid


def reject_run(store: Store, run_id: int, comment: str, actor: str) -> None:
    run = store.run(run_id)
    if run is None:
        raise UserError(f"run {run_id} does not exist")
    store.set_run(run_id, decision="rejected")
    store.audit(actor, "rejected", run["project_id"], run_id=run_id, comment=comment.strip())


def rollback(store: Store, project_id: int, actor: str) -> None:
    """Make the base model active again (the repair stays on record and can be approved again)."""
    p = store.project(project_id)
    if p["active_model_id"] == p["base_model_id"]:
        raise UserError("the original model is already the active one")
    store.set_project(project_id, active_model_id=p["base_model_id"])
    store.audit(actor, "rolled_back", project_id, from_model_id=p["active_model_id"], to_model_id=p["base_model_id"])


def export_bytes(store: Store, run_id: int) -> bytes:
    """The repaired (merged) model of a run as a bundle zip."""
    run = store.run(run_id)
    model_dir = Path(run["out_dir"]) / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise UserError("this run has no merged model to export")
    return bundle_zip_bytes(model_dir)


def record_export(store: Store, run_id: int, data: bytes, actor: str) -> None:
    run = store.run(run_id)
    store.audit(actor, "exported", run["project_id"], run_id=run_id, sha256=sha256_bytes(data), bytes=len(data))


def record_report(store: Store, run_id: int, data: bytes, actor: str) -> None:
    run = store.run(run_id)
    store.audit(actor, "report", run["project_id"], run_id=run_id, sha256=sha256_bytes(data))


# ---- history -----------------------------------------------------------------------------------
def history_frame(store: Store, project_id: int | None = None) -> pd.DataFrame:
    """The audit log as a table (oldest first): when, who, what, and the details as JSON."""
    rows = [
        {
            "id": e["id"],
            "when": e["ts"],
            "who": e["actor"],
            "project": e["project_id"],
            "action": e["action"],
            "details": json.dumps(e["detail"], ensure_ascii=False, sort_keys=True),
        }
        for e in store.audit_events(project_id)
    ]
    return pd.DataFrame(rows, columns=["id", "when", "who", "project", "action", "details"])


def history_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


def zip_folder_bytes(folder: Path) -> bytes:
    """A folder as zip bytes (used by tests and the CLI-free upload path of the e2e suite)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(Path(folder).rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return buf.getvalue()
