"""The workbench's model computations, run by the task worker (:mod:`core.app.worker`) only: each entry of
:data:`TASKS` takes the store, the task's JSON payload and the acting user, does one piece of work that needs torch,
writes its result to the store or the artifacts folder, and returns a small JSON-able dict. Pages reach these through
:func:`core.app.jobs.compute`; a :class:`UserError` raised here reaches the page as it is."""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.app.budget import REPAIR, check_budget, folder_bytes
from core.app.ce_answers import counterexample_answers
from core.app.demo import build_demo
from core.app.demo_answers import DemoAnswers, answers_key
from core.app.evaluation import reported_rows
from core.app.integrity import stored_model_sha256
from core.app.interpolated_runs import missing, preview_file
from core.app.model_exports import EXPORT_TASKS
from core.app.pixels import rows_of_set
from core.app.pool import items_file, read_items
from core.app.prediction_tasks import evaluate, pool_predictions, save_evaluation, save_pool_predictions
from core.app.runs import eval_root, prediction_rows
from core.app.similar_task import SIMILAR_TASKS
from core.app.store import Store
from core.app.stored_models import stored_bundle
from core.app.suspected_groups import (
    ARRAYS_FILE,
    GROUPS_FILE,
    STRIP_SIZE,
    discovery_dir,
    pool_suggestions_path,
    read_discovery,
)
from core.app.uploads import register_eval, register_pool
from core.engine.devices import select_device
from core.engine.group_discovery import Discovery, SuspectedGroup, analyse, representatives, suggest_from_arrays
from core.engine.group_features import embed
from core.engine.inference import (
    normalize,
    predict_logits,
)
from core.engine.metrics import compare_predictions, group_metrics
from core.engine.repair import layer_changes, write_weights
from core.engine.results import Comparison, GroupMetrics, Interpolation, RunMetrics, Stop, StopReason
from core.engine.runfolder import BUNDLE_META, BUNDLE_WEIGHTS, PredictionRow, RunFolder
from core.engine.weight_interpolation import check_alpha, interpolate_state, interpolated_model, scaled_delta
from core.formats.bundle import ModelBundle, bundle_from_files, bundle_from_state_file, load_bundle, save_bundle
from core.formats.datasets import ImageDataset, Record, load_dataset, load_pixels
from core.formats.meta import parse_meta_json, sha256_bytes


def _register_model(store: Store, project_id: int, bundle: ModelBundle, name: str, actor: str) -> int:
    staging = store.artifact_dir("models", "incoming")
    tmp = Path(staging) / f"p{project_id}_{sha256_bytes(name.encode())[:8]}"
    try:
        save_bundle(bundle.state_dict(), bundle.meta, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half-written staging folder
        raise
    mid = store.add_model(project_id, "base", name, tmp, bundle.meta.to_dict(), bundle.sha256)
    final = store.artifact_dir("models", str(mid))
    for f in tmp.iterdir():
        shutil.move(str(f), final / f.name)
    tmp.rmdir()
    store.set_model_path(mid, final)
    # Files are re-serialised on save: record the stored files' hashes (checked later), the upload's in the audit.
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
        if weights == BUNDLE_WEIGHTS:  # a model zip: ours, or a timm or transformers folder
            files = {f.name: f.read_bytes() for f in staged.iterdir() if f.is_file()}
            bundle = bundle_from_files(files, source=filename)
        else:
            meta = parse_meta_json((staged / BUNDLE_META).read_bytes())
            bundle = bundle_from_state_file((staged / weights).read_bytes(), filename, meta)
        pid = store.create_project(Path(filename).stem, actor)
        _register_model(store, pid, bundle, filename, actor)
        return {"project_id": pid}
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _pool_items_from_manifest(root: Path) -> list[dict]:
    """Pool items (path, attribute) from a manifest; a label column is dropped: the curator decides the labels."""
    with open(Path(root) / "manifest.csv", encoding="utf-8-sig", newline="") as fh:
        return [
            {"path": r["path"].strip(), "attribute": (r.get("attribute") or "").strip()} for r in csv.DictReader(fh)
        ]


DEMO_PARTS = ("model", "eval", "pool", "counterexamples", "reference")


def _demo_cache_complete(cache: Path) -> bool:
    """A demo cache built by this version: marked built and listing every part (a cache from an
    earlier version has no reference images and is rebuilt)."""
    if not (cache / "BUILT").is_file() or not (cache / "paths.json").is_file():
        return False
    return set(DEMO_PARTS) <= set(json.loads((cache / "paths.json").read_text()))


def open_demo(store: Store, payload: dict, actor: str) -> dict:
    """Build the demo once (cached under the store home), make the demo project the first time, evaluate
    its model and predict its pool (what :mod:`core.app.sandboxes` copies). The same project is reused
    afterwards. A file lock makes the whole step atomic even if two workers ever ran at once."""
    with open(store.home / "demo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for p in store.projects():
            if p["is_demo"] and p["sandbox_of"] is None:  # the demo project, not a demo session's copy of it
                store.audit(actor, "open_demo", p["id"], reused=True)
                return {"project_id": p["id"]}
        cache = store.home / "demo_cache"
        if not _demo_cache_complete(cache):
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
        pool_id = register_pool(store, pid, paths["pool"], "demo pool", pool_items, actor, copy=False)
        ref_items = _pool_items_from_manifest(paths["reference"])
        register_pool(
            store, pid, paths["reference"], "demo reference images", ref_items, actor, copy=False, role="reference"
        )
    _demo_answers(store, mid, did, pool_id, Path(paths["model"]).parent)  # demo sandboxes copy both
    return {"project_id": pid}


def _demo_answers(store: Store, model_id: int, dataset_id: int, pool_id: int, demo_root: Path) -> None:
    """Evaluate the demo model and predict its pool, reading the answers kept beside the built demo when they
    are there (:mod:`core.app.demo_answers`), and keeping them there when they were computed."""
    bundle = stored_bundle(store, model_id)
    ds = reported_rows(store.dataset(dataset_id)["path"], tuple(bundle.meta.class_names))
    items = read_items(items_file(store, pool_id))
    key = answers_key(
        store.model(model_id)["sha256"],
        store.dataset(dataset_id)["sha256"],
        [r.path for r in ds.records],
        store.dataset(pool_id)["sha256"],
        select_device("auto").type,
    )
    kept = DemoAnswers.of(demo_root, key)
    evaluation = save_evaluation(store, bundle, ds, model_id, dataset_id, kept.evaluation(len(ds)))
    pool = save_pool_predictions(store, bundle, items, model_id, pool_id, kept.pool(len(items)))
    kept.keep(evaluation, pool)


def discover(store: Store, payload: dict, actor: str) -> dict:
    """Suspected groups of a model on the reported rows of an evaluation set (any attribute column
    is ignored), saved as ``groups.json`` (numbers, sentence, member and representative paths) and
    ``arrays.npz`` (features and predictions, for pool suggestions). Computed once per (model,
    dataset); the folder appears whole or not at all."""
    model_id, dataset_id = int(payload["model_id"]), int(payload["dataset_id"])
    out = discovery_dir(store, model_id, dataset_id)
    if (out / GROUPS_FILE).is_file():
        return {"path": str(out)}
    bundle = stored_bundle(store, model_id)
    ds = reported_rows(store.dataset(dataset_id)["path"], tuple(bundle.meta.class_names))
    found = analyse(bundle, ds, device="auto")
    groups = []
    for g in found.groups:
        row = {f.name: getattr(g, f.name) for f in dataclasses.fields(g) if f.name != "members"}
        groups.append(
            {
                **row,
                "member_index": [int(i) for i in g.members],
                "members": [ds.records[int(i)].path for i in g.members],
                "representatives": [ds.records[int(i)].path for i in representatives(found, g, STRIP_SIZE)],
                "accuracy_low": g.interval[0],
                "accuracy_high": g.interval[1],
            }
        )
    check_budget(store, found.features.nbytes + found.probabilities.nbytes + 16 * len(ds), "suspected groups")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.savez(
        tmp / ARRAYS_FILE,
        features=found.features,
        labels=found.labels,
        predictions=found.predictions,
        probabilities=found.probabilities,
    )
    result = {"model_id": model_id, "dataset_id": dataset_id, "n": len(ds), "groups": groups}
    (tmp / GROUPS_FILE).write_text(json.dumps(result, indent=1), encoding="utf-8")
    tmp.rename(out)
    return {"path": str(out)}


def _saved_discovery(store: Store, model_id: int, dataset_id: int) -> Discovery:
    """A :class:`Discovery` rebuilt from the files :func:`discover` wrote."""
    saved = read_discovery(store, model_id, dataset_id)
    arrays = np.load(discovery_dir(store, model_id, dataset_id) / ARRAYS_FILE)
    fields = {f.name for f in dataclasses.fields(SuspectedGroup)} - {"members"}
    groups = [
        SuspectedGroup(**{k: g[k] for k in fields}, members=np.array(g["member_index"], dtype=np.int64))
        for g in saved["groups"]
    ]
    names = store.model(model_id)["meta"]["class_names"]
    return Discovery(
        groups, arrays["features"], arrays["labels"], arrays["predictions"], arrays["probabilities"], list(names)
    )


def discover_pool(store: Store, payload: dict, actor: str) -> dict:
    """Pool images in suggestion order (:func:`core.engine.group_discovery.suggest_from_arrays`): near a
    suspected group and probably wrong first. ``pools`` is a list of (pool dataset id, number of
    items); all of them are ranked together. Saved as JSON next to the discovery."""
    model_id, dataset_id = int(payload["model_id"]), int(payload["dataset_id"])
    pools = [(int(d), int(n)) for d, n in payload["pools"]]
    discover(store, {"model_id": model_id, "dataset_id": dataset_id}, actor)
    found = _saved_discovery(store, model_id, dataset_id)
    bundle = stored_bundle(store, model_id)
    where, feats, probs = [], [], []
    for did, n in pools:
        items = read_items(items_file(store, did))[:n]
        root = Path(store.dataset(did)["path"])
        ds = ImageDataset(root, [Record(i["path"], 0, None) for i in items], [])
        f, p = embed(bundle, ds, select_device("auto"))
        feats.append(f)
        probs.append(p)
        where.extend((did, i["path"]) for i in items)
    ranked = suggest_from_arrays(found, np.concatenate(feats), np.concatenate(probs))
    label_of = {g.id: g.label_name for g in found.groups}
    order = [
        {
            "dataset_id": where[s.index][0],
            "path": where[s.index][1],
            "score": round(s.score, 6),
            "group": s.group,
            "group_label": label_of.get(s.group),
            "wrong_share": round(s.wrong_share, 4),
        }
        for s in ranked
    ]
    out = pool_suggestions_path(store, model_id, dataset_id, pools)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pools": pools, "order": order}), encoding="utf-8")
    tmp.replace(out)
    return {"path": str(out)}


# The last run previewed: its weights and image sets, so each further α is one forward pass.
_PREVIEW_INPUTS: dict[tuple[str, int], dict] = {}  # (store home, run id) → inputs


def _preview_inputs(store: Store, run_id: int) -> dict:
    """The old model, the repaired weights, the run's evaluation rows (on disk, see
    :func:`core.app.pixels.eval_images`) and its counterexamples (a tensor: they are few)."""
    key = (str(store.home), run_id)
    if key in _PREVIEW_INPUTS:
        return _PREVIEW_INPUTS[key]
    run = store.run(run_id)
    folder = RunFolder(run["out_dir"])
    bundle = stored_bundle(store, run["model_id"])
    repaired = load_bundle(folder.model_dir).state_dict()
    meta, names = bundle.meta, bundle.meta.class_names
    rows = prediction_rows(store, run_id)
    ds = ImageDataset(
        eval_root(store, run), [Record(r["path"], r["label"], r["attribute"] or None) for r in rows], list(names)
    )
    ce_dir = folder.counterexamples_dir
    ce = load_dataset(ce_dir, names) if (ce_dir / "manifest.csv").is_file() else None
    inputs = {
        "bundle": bundle,
        "repaired": repaired,
        "x": rows_of_set(store, load_dataset(ds.root, list(names)), ds, meta),
        "y": np.array([r["label"] for r in rows], dtype=np.int64),
        "attributes": [r["attribute"] for r in rows],
        "before": np.array([r["before"] for r in rows], dtype=np.int64),
        "x_ce": normalize(load_pixels(ce, meta.input_size), meta.mean, meta.std) if ce is not None else None,
        "y_ce": ce.labels if ce is not None else None,
    }
    _PREVIEW_INPUTS.clear()
    _PREVIEW_INPUTS[key] = inputs
    return inputs


def alpha_preview(store: Store, payload: dict, actor: str) -> dict:
    """Evaluate a finished run at strength α (θ + α·δ, :mod:`core.engine.weight_interpolation`) on its
    evaluation rows and counterexamples; write the run's metrics recomputed for α and the answers to
    :func:`core.app.interpolated_runs.preview_file`, once per (run, α)."""
    run_id, alpha = int(payload["run_id"]), check_alpha(payload["alpha"])
    run = store.run(run_id)
    out = preview_file(run, alpha)
    if out.is_file():
        return {"path": str(out)}
    inp = _preview_inputs(store, run_id)
    names = inp["bundle"].meta.class_names
    dev = select_device("auto")
    model = interpolated_model(inp["bundle"].model, inp["repaired"], alpha).to(dev)
    after = predict_logits(model, inp["x"], dev).argmax(1).numpy()
    ce_fixed = None
    if inp["x_ce"] is not None:
        ce_fixed = int((predict_logits(model, inp["x_ce"], dev).argmax(1).numpy() == inp["y_ce"]).sum())
    metrics = dataclasses.replace(
        RunFolder(run["out_dir"]).metrics(),
        after=GroupMetrics.from_json(group_metrics(inp["y"], after, inp["attributes"], names)),
        comparison=Comparison.from_json(compare_predictions(inp["y"], inp["before"], after)),
        counterexamples_fixed=ce_fixed,
        interpolation=Interpolation(run_id, alpha),
    )
    result = {"alpha": alpha, "metrics": metrics.to_json(), "after": after.tolist(), "counterexamples_fixed": ce_fixed}
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    tmp.replace(out)  # readers never see a half-written file
    return {"path": str(out)}


def alpha_grid(store: Store, payload: dict, actor: str) -> dict:
    """Every value of the Review slider for one run, nearest the repair first (:func:`alpha_preview`
    each). Gives way as soon as another task waits: the page submits it again on its next run, so a
    person moving the slider waits for at most one value of this background work."""
    run_id = int(payload["run_id"])
    run = store.run(run_id)
    for alpha in missing(run):
        if store.has_queued_tasks():
            return {"complete": False}
        alpha_preview(store, {"run_id": run_id, "alpha": alpha}, actor)
    return {"complete": True}


def save_alpha_run(store: Store, payload: dict, actor: str) -> dict:
    """Save a finished run at strength α as a new finished run: its own bundle θ + α·δ, α·δ, the
    metrics and answers of the preview, the counterexamples; its config and request name the run and
    α it comes from. Recorded in the store and the audit log, and approved like any other run."""
    run_id, alpha = int(payload["run_id"]), check_alpha(payload["alpha"])
    parent = store.run(run_id)
    check_budget(store, folder_bytes(parent["out_dir"]), REPAIR)  # about what its own run folder takes
    alpha_preview(store, payload, actor)
    shown = json.loads(preview_file(parent, alpha).read_text(encoding="utf-8"))
    inp = _preview_inputs(store, run_id)
    origin = {"from_run": run_id, "alpha": alpha}
    new_id = store.create_run(
        parent["project_id"],
        parent["model_id"],
        parent["method"],
        {**parent["config"], "interpolation": origin},
        f"{parent['strength_label']} · α {alpha:.2f}",
        parent["n_counterexamples"],
        store.artifact_dir("runs", "incoming"),
        actor,
    )
    stop = Stop(StopReason.INTERPOLATED)
    metrics = dataclasses.replace(RunMetrics.from_json(shown["metrics"]), steps=0, stop=stop, seconds=0.0)
    try:
        store.set_run_request(new_id, json.dumps({"interpolation": origin, "request": parent.get("request_json")}))
        folder = RunFolder(store.artifact_dir("runs", str(new_id)))
        _write_alpha_run(store, inp, run_id, alpha, folder, metrics, shown["after"])
    except BaseException as exc:
        store.finish_run(new_id, "failed", error=f"saving the interpolation failed: {type(exc).__name__}: {exc}")
        raise
    store.finish_run(new_id, "done", out_dir=str(folder.root), stop_reason=stop.reason.value, device="cpu")
    after, before = metrics.after, metrics.before
    store.audit(
        actor,
        "run_interpolated",
        parent["project_id"],
        run_id=new_id,
        from_run=run_id,
        alpha=alpha,
        sha256=stored_model_sha256(folder.model_dir),
        accuracy_before=before.accuracy,
        accuracy_after=after.accuracy,
        worst_group_before=before.worst_group_accuracy,
        worst_group_after=after.worst_group_accuracy,
        kept_decisions=metrics.comparison.kept_decisions,
        counterexamples_fixed=metrics.counterexamples_fixed,
    )
    return {"run_id": new_id}


def _write_alpha_run(store: Store, inp: dict, run_id: int, alpha: float, folder: RunFolder, metrics, after) -> None:
    """The run folder of run ``run_id`` saved at strength α: θ + α·δ, α·δ, metrics, answers, counterexamples."""
    bundle = inp["bundle"]
    base_state = bundle.state_dict()
    delta = scaled_delta(base_state, inp["repaired"], alpha)
    write_weights(folder, interpolate_state(base_state, inp["repaired"], alpha), delta, bundle.meta)
    folder.write_metrics(metrics)
    rows = prediction_rows(store, run_id)
    folder.write_predictions(
        [
            PredictionRow(k, r["path"], r["label"], r["attribute"], r["before"], a)
            for k, (r, a) in enumerate(zip(rows, after))
        ]
    )
    folder.write_layer_changes(layer_changes(delta, base_state))
    folder.copy_counterexamples(RunFolder(store.run(run_id)["out_dir"]))


TASKS: dict[str, Callable[[Store, dict, str], dict]] = {
    "register_model": register_model,
    "open_demo": open_demo,
    "evaluate": evaluate,
    "pool_predictions": pool_predictions,
    "discover": discover,
    "discover_pool": discover_pool,
    "alpha_preview": alpha_preview,
    "alpha_grid": alpha_grid,
    "save_alpha_run": save_alpha_run,
    "counterexample_answers": counterexample_answers,
    **EXPORT_TASKS,  # handing a model out: ONNX, the MLflow registry
    **SIMILAR_TASKS,  # "More like this": a model's features of the pool
}
