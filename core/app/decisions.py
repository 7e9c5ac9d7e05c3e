"""Decisions on a finished run: approve, reject, roll back, export, and the report's audit row.

Approving makes the run's repaired model the project's active model; a run the verdict flags needs
an explicit override and a written reason. Rolling back makes the original model active again.
Every decision is an audit row.
"""

from __future__ import annotations

from pathlib import Path

from core.app.integrity import check_stored_model, stored_model_sha256
from core.app.runs import run_metrics, verdict
from core.app.store import Store
from core.errors import UserError
from core.formats.meta import bundle_zip_bytes, parse_meta_json, sha256_bytes


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
        raise UserError("only a finished run can be approved", "approve_unfinished")
    if not approver.strip():
        raise UserError("write the approver's name", "approver_name")
    v = verdict(m)
    if v["kind"] == "flagged" and not (override and reason.strip()):
        raise UserError(
            "this repair is flagged; tick the override box and write a reason to approve it", "override_needed"
        )
    model_dir = Path(run["out_dir"]) / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise UserError("this method produced no mergeable model, so it cannot be approved", "not_mergeable")
    meta = parse_meta_json((model_dir / "model.json").read_bytes())
    if run["repaired_model_id"]:  # approved before (then rejected or rolled back): still the same files?
        check_stored_model(store.model(run["repaired_model_id"]))
    mid = run["repaired_model_id"] or store.add_model(
        run["project_id"],
        "repaired",
        f"repair of run {run_id}",
        model_dir,
        meta.to_dict(),
        stored_model_sha256(model_dir),
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
    """Reject a run. If it had been approved and its repair is the active model, the original model
    becomes active again (a rejected repair is never the model in use)."""
    run = store.run(run_id)
    if run is None:
        raise UserError(f"run {run_id} does not exist")
    store.set_run(run_id, decision="rejected")
    store.audit(actor, "rejected", run["project_id"], run_id=run_id, comment=comment.strip())
    p = store.project(run["project_id"])
    if run["repaired_model_id"] and p["active_model_id"] == run["repaired_model_id"]:
        store.set_project(run["project_id"], active_model_id=p["base_model_id"])
        store.audit(
            actor,
            "rolled_back",
            run["project_id"],
            from_model_id=run["repaired_model_id"],
            to_model_id=p["base_model_id"],
            reason=f"run {run_id} was rejected",
        )


def rollback(store: Store, project_id: int, actor: str) -> None:
    """Make the base model active again (the repair stays on record and can be approved again)."""
    p = store.project(project_id)
    if p["active_model_id"] == p["base_model_id"]:
        raise UserError("the original model is already the active one", "already_original")
    store.set_project(project_id, active_model_id=p["base_model_id"])
    store.audit(actor, "rolled_back", project_id, from_model_id=p["active_model_id"], to_model_id=p["base_model_id"])


def export_bytes(store: Store, run_id: int) -> bytes:
    """The repaired (merged) model of a run as a bundle zip."""
    run = store.run(run_id)
    model_dir = Path(run["out_dir"]) / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise UserError("this run has no merged model to export", "no_export")
    if run["repaired_model_id"]:  # approved once: the files must still be the approved ones
        check_stored_model(store.model(run["repaired_model_id"]))
    return bundle_zip_bytes(model_dir)


def record_export(store: Store, run_id: int, data: bytes, actor: str) -> None:
    run = store.run(run_id)
    store.audit(actor, "exported", run["project_id"], run_id=run_id, sha256=sha256_bytes(data), bytes=len(data))


def record_report(store: Store, run_id: int, data: bytes, actor: str) -> None:
    run = store.run(run_id)
    store.audit(actor, "report", run["project_id"], run_id=run_id, sha256=sha256_bytes(data))
