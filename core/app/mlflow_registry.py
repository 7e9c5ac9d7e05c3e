"""The MLflow model registry, worker side (docs/FORMATS.md; the page side is :mod:`core.app.registry`).

One registered model per project. Each model the project has used (its original, each approved repair) becomes
one model version, once: an MLflow run in the experiment ``biasrepair`` holding the model's files (merged weights
and configuration) under ``model/``, with the model card as ``model/README.md``, δ, the run's audit rows, its
metrics and tags for the method, strength and approver. The alias ``champion`` is moved to the version of the
project's model in use: forward on an approval, back on a rollback. Run by the task worker (``mlflow_sync``)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from core.app.decisions import approval, model_card
from core.app.registry import ALIAS, DONE, FAILED, URI_ENV, model_name, tracking_uri
from core.app.runs import run_result
from core.app.store import Store
from core.engine.model_card import CARD_FILE
from core.engine.results import RunMetrics
from core.engine.runfolder import RunFolder
from core.errors import UserError
from core.formats.libmeta import model_folder_files

EXPERIMENT = "biasrepair"
MODEL_ID_TAG = "biasrepair.model_id"


def mlflow_sync(store: Store, payload: dict, actor: str) -> dict:
    """Register the project's model in use if it is not yet, and move the alias to it; a failure is audited
    and raised (the page says so and queues the update again)."""
    project_id = int(payload["project_id"])
    try:
        result = _sync(store, project_id)
    except Exception as exc:  # an unreachable or refusing registry: recorded, never fatal to the workbench
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        store.audit(actor, FAILED, project_id, uri=tracking_uri(store), error=detail)
        raise UserError(
            f"the MLflow registry could not be updated: {detail}", "registry_failed", detail=detail
        ) from None
    store.audit(actor, DONE, project_id, uri=tracking_uri(store), **result)
    return result


def _client(store: Store):
    import mlflow  # only when the registry is on: importing it takes seconds

    uri = tracking_uri(store)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _sync(store: Store, project_id: int) -> dict:
    client = _client(store)
    project = store.project(project_id)
    name = model_name(project)
    if client.search_registered_models(filter_string=f"name = '{name}'") == []:
        client.create_registered_model(name, description=f"Models of the workbench project {project['name']!r}")
    model = store.model(project["active_model_id"])
    versions = client.search_model_versions(f"name = '{name}'")
    known = [v for v in versions if v.tags.get(MODEL_ID_TAG) == str(model["id"])]
    version = known[0].version if known else _register(client, store, name, model)
    client.set_registered_model_alias(name, ALIAS, version)
    return {"registered_model": name, "version": int(version), "alias": ALIAS, "model_id": model["id"]}


def _experiment(client, store: Store) -> str:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    # the default store keeps its files beside it, under the workbench home; another URI keeps MLflow's default
    where = None if os.environ.get(URI_ENV) else (store.home / "mlflow" / "artifacts").resolve().as_uri()
    return client.create_experiment(EXPERIMENT, artifact_location=where)


def _register(client, store: Store, name: str, model: dict) -> str:
    """One new model version for a stored model (the original or an approved repair)."""
    run = store.run(model["run_id"]) if model["run_id"] else None
    tags = {MODEL_ID_TAG: str(model["id"]), "biasrepair.kind": model["kind"]}
    if run is not None:
        tags.update(_run_tags(store, run))
    mlrun = client.create_run(_experiment(client, store), run_name=f"{name} model {model['id']}", tags=tags)
    rid = mlrun.info.run_id
    folder = Path(model["path"])
    for f in model_folder_files(folder):
        client.log_artifact(rid, str(folder / f), "model")
    if run is not None:
        _log_run(client, store, rid, run)
    client.set_terminated(rid)
    source = f"{mlrun.info.artifact_uri}/model"
    return client.create_model_version(name, source=source, run_id=rid, tags=tags).version


def run_metric_values(m: RunMetrics | None) -> dict[str, float]:
    """The numbers logged with a repair's model version: accuracy, worst-group accuracy and bias gap before and
    after (``accuracy_before``, …), and kept decisions."""
    out = {}
    for when, g in (("before", m.before), ("after", m.after)) if m is not None else ():
        for key in ("accuracy", "worst_group_accuracy", "bias_gap"):
            if g is not None and getattr(g, key) is not None:
                out[f"{key}_{when}"] = float(getattr(g, key))
    if m is not None and m.comparison is not None and m.comparison.kept_decisions is not None:
        out["kept_decisions"] = float(m.comparison.kept_decisions)
    return out


def _run_tags(store: Store, run: dict) -> dict[str, str]:
    m = run_result(store, run["id"])
    a = approval(store, run["id"])
    strength = "" if m is None or m.strength is None else f"{m.strength:g}"
    return {"biasrepair.run_id": str(run["id"]), "method": run["method"], "strength": strength,
            "approver": a["actor"] if a else "", "approved_at": a["ts"] if a else ""}  # fmt: skip


def _log_run(client, store: Store, rid: str, run: dict) -> None:
    """Metrics, the model card, δ and the run's audit rows of an approved repair."""
    for key, value in run_metric_values(run_result(store, run["id"])).items():
        client.log_metric(rid, key, value)
    rows = [e for e in store.audit_events(run["project_id"]) if e["detail"].get("run_id") == run["id"]]
    with tempfile.TemporaryDirectory(prefix="biasrepair-mlflow-") as tmp:
        (Path(tmp) / CARD_FILE).write_text(model_card(store, run["id"]), encoding="utf-8")
        client.log_artifact(rid, str(Path(tmp) / CARD_FILE), "model")
        (Path(tmp) / "audit_rows.json").write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
        client.log_artifact(rid, str(Path(tmp) / "audit_rows.json"), "audit")
    delta = RunFolder(run["out_dir"]).delta_file
    if delta.is_file():
        client.log_artifact(rid, str(delta), "delta")
