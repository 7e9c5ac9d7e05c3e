"""Decisions on a finished run: approve, reject, roll back, export, and the report's audit row.

Approving makes the run's repaired model the project's active model; a run the verdict flags needs
an explicit override and a written reason. Rolling back makes the original model active again.
Every decision is an audit row, made by the signed-in approver (:class:`core.app.accounts.User`).

The four-eyes rule: whoever started a repair, or labelled most of its counterexamples, cannot approve
it. An admin may relax the rule for a single-person pilot; an approval that needed the relaxation
says so in its audit row (``four_eyes: "relaxed"``), and so in the history, the export's audit row
and the report.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from core.app import jobs, registry
from core.app.accounts import Role, User, acting, four_eyes_relaxed, require
from core.app.i18n import translator
from core.app.integrity import check_run_model, check_stored_model
from core.app.interpolated_runs import interpolation_of
from core.app.model_card import run_card
from core.app.runs import model_in_use, run_metrics
from core.app.store import Store
from core.app.verdict import judge
from core.engine.model_card import CARD_FILE
from core.engine.onnx_check import CHECK_FILE, ONNX_FILE, OnnxCheck
from core.engine.runfolder import RunFolder
from core.errors import UserError
from core.formats.libmeta import folder_meta, model_zip_bytes
from core.formats.meta import sha256_bytes


def responsible(store: Store, run: dict) -> dict[str, list[str]]:
    """Who is behind a run, for the four-eyes rule: ``started`` (who started it, and for a run saved
    at a weaker strength also who started the run it came from) and ``labelled`` (whoever labelled
    the most of its counterexamples, ties included; from the ``run_queued`` audit row)."""
    started, labelled = [run["created_by"]], []
    seen = set()
    while run is not None and run["id"] not in seen:
        seen.add(run["id"])
        queued = store.run_queued_detail(run["project_id"], run["id"])
        if queued is not None:
            counts = queued.get("labelled_by") or {}
            top = max(counts.values(), default=0)
            labelled = sorted(n for n, c in counts.items() if c == top and top > 0)
            break
        origin = interpolation_of(run)
        run = store.run(origin["from_run"]) if origin else None
        if run is not None and run["created_by"] not in started:
            started.append(run["created_by"])
    return {"started": started, "labelled": labelled}


def check_four_eyes(store: Store, run: dict, user: User) -> tuple[dict[str, list[str]], bool]:
    """Who is behind ``run`` (see :func:`responsible`), and whether ``user`` may approve it only
    because an admin relaxed the four-eyes rule. Someone behind it is refused (and the refusal
    audited) while the rule holds."""
    who = responsible(store, run)
    conflict = str(user) in who["started"] or str(user) in who["labelled"]
    relaxed = conflict and four_eyes_relaxed(store)
    if conflict and not relaxed:
        part = "started" if str(user) in who["started"] else "labelled most of the counterexamples of"
        store.audit_refusal(user, "forbidden", run["project_id"], attempted="approve", run_id=run["id"], four_eyes=part)
        raise UserError(
            f"{user} {part} repair #{run['id']}, so another approver must approve it (four-eyes rule)",
            "four_eyes",
            user=str(user),
            run=run["id"],
        )
    return who, relaxed


def approve_blocker(store: Store, run: dict, user: User) -> str | None:
    """Why ``user`` cannot approve ``run`` now, as the key of a sentence of the Review page (``{run}`` its
    parameter), or None when Approve is offered. The same refusals :func:`approve_run` makes, read without
    an audit row, so that the page never offers a button whose click is refused."""
    project = store.project(run["project_id"])
    if user.demo:
        return "review_approve_blocked_demo"
    if not user.can(Role.APPROVER):
        return "review_approve_blocked_role"
    if run["decision"] == "rejected":
        return "review_approve_blocked_rejected"
    if run["decision"] == "approved" and run["repaired_model_id"] == project["active_model_id"]:
        return "review_approve_blocked_in_use"
    who = responsible(store, run)
    if str(user) in who["started"] + who["labelled"] and not four_eyes_relaxed(store):
        return "review_four_eyes_you"
    return None


def approve_run(store: Store, run_id: int, comment: str, user: User, override: bool = False, reason: str = "") -> int:
    """Approve a finished run as ``user`` (an approver): its repaired model becomes the project's
    active model.

    A run the verdict flags can only be approved with ``override`` and a written ``reason``. The
    four-eyes rule applies unless an admin relaxed it. Who approves is checked in the same transaction
    that records the approval. Returns the id of the repaired model.
    """
    run = store.run(run_id)
    with acting(store, user, Role.APPROVER, "approve", run["project_id"] if run else None) as user:
        return _approve(store, run_id, comment, user, override, reason)


def _approve(store: Store, run_id: int, comment: str, user: User, override: bool, reason: str) -> int:
    run = store.run(run_id)
    m = run_metrics(store, run_id)
    if run is None or m is None:
        raise UserError("only a finished run can be approved", "approve_unfinished")
    if run["decision"] == "rejected":
        raise UserError(
            f"repair #{run_id} was rejected, so it cannot be approved; start a new repair",
            "approve_rejected",
            run=run_id,
        )
    who, relaxed = check_four_eyes(store, run, user)
    v = judge(m)
    if v.flagged and not (override and reason.strip()):
        raise UserError(
            "this repair is flagged; tick the override box and write a reason to approve it", "override_needed"
        )
    try:
        mid = _repaired_model(store, run)
    except UserError as exc:
        if exc.key == "files_changed":  # tampering: on the record, though the approval rolls back
            store.audit_refusal(
                user, "files_changed", run["project_id"], attempted="approve", run_id=run["id"], why=str(exc)
            )
        raise
    store.set_run(run_id, decision="approved", repaired_model_id=mid)
    store.set_project(run["project_id"], active_model_id=mid)
    store.audit(
        user,
        "approved",
        run["project_id"],
        run_id=run_id,
        approver=str(user),
        four_eyes="relaxed" if relaxed else "kept",
        started_by=who["started"],
        labelled_by=who["labelled"],
        comment=comment.strip(),
        verdict=v.kind.value,
        override=bool(override and v.flagged),
        reason=reason.strip(),
        model_id=mid,
    )
    registry.queue_sync(store, run["project_id"], user)  # never waits: the worker registers it (if on)
    return mid


def _repaired_model(store: Store, run: dict) -> int:
    """The stored model of a run's repaired weights: registered now, or (approved before, then rejected or
    rolled back) the one registered then, its files checked against their hashes."""
    folder = RunFolder(run["out_dir"])
    if not folder.has_model():
        raise UserError("this method produced no mergeable model, so it cannot be approved", "not_mergeable")
    meta = folder_meta(folder.model_dir)
    if run["repaired_model_id"]:  # approved before (then rejected or rolled back): still the same files?
        check_stored_model(store.model(run["repaired_model_id"]))
        return run["repaired_model_id"]
    # The weights must be those the repair wrote (their hashes are in its run_done audit row).
    finished = store.run_finished_sha256(run["project_id"], run["id"])
    stored = check_run_model(folder.model_dir, finished, f"repair #{run['id']}")
    return store.add_model(
        run["project_id"],
        "repaired",
        f"repair of run {run['id']}",
        folder.model_dir,
        meta.to_dict(),
        stored,
        run_id=run["id"],
    )


def reject_run(store: Store, run_id: int, comment: str, actor: User) -> None:
    """Reject a run. If it had been approved and its repair is the active model, the original model
    becomes active again (a rejected repair is never the model in use)."""
    run = store.run(run_id)
    if run is None:
        raise UserError(f"run {run_id} does not exist")
    with acting(store, actor, Role.APPROVER, "reject", run["project_id"]) as actor:
        _reject(store, store.run(run_id), comment, actor)


def _reject(store: Store, run: dict, comment: str, actor: User) -> None:
    run_id = run["id"]
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
            run_id=run_id,
            cause="rejected",  # read in words by the History page (detail_cause_rejected)
        )


def rollback(store: Store, project_id: int, actor: User, reason: str) -> int | None:
    """Make the base model active again, for a written ``reason`` (kept in the audit row with the repair it
    undoes). The repair stays on record and can be approved again. Who rolls back is checked in the same
    transaction that does it. Returns the id of the repair that was in use (None: the active model was no
    repair's)."""
    with acting(store, actor, Role.APPROVER, "roll_back", project_id) as actor:
        p = store.project(project_id)
        if p["active_model_id"] == p["base_model_id"]:
            raise UserError("the original model is already the active one", "already_original")
        if not reason.strip():
            raise UserError("write why the repair is rolled back", "rollback_reason_needed")
        undone = model_in_use(store, project_id)
        store.set_project(project_id, active_model_id=p["base_model_id"])
        store.audit(
            actor,
            "rolled_back",
            project_id,
            from_model_id=p["active_model_id"],
            to_model_id=p["base_model_id"],
            run_id=undone,
            reason=reason.strip(),
        )
    registry.queue_sync(store, project_id, actor)  # the registry's alias moves back with it (if on)
    return undone


def _exportable(store: Store, run_id: int, actor: User) -> RunFolder:
    """The run's folder, once the store says ``actor`` may export it (read afresh; :func:`record_export` checks again
    when it records) and its merged model is still the approved one."""
    run = store.run(run_id)
    require(store, actor, Role.APPROVER, "export", run["project_id"] if run else None)
    folder = RunFolder(run["out_dir"])
    if not folder.has_model():
        raise UserError("this run has no merged model to export", "no_export")
    if run["repaired_model_id"]:  # approved once: the files must still be the approved ones
        check_stored_model(store.model(run["repaired_model_id"]))
    return folder


def model_card(store: Store, run_id: int, lang: str = "en") -> str:
    """The run's model card (README.md, :mod:`core.app.model_card`) in ``lang``, with its latest approval."""
    return run_card(store, run_id, approval(store, run_id), lang).render(translator(lang))


def export_bytes(store: Store, run_id: int, actor: User, lang: str = "en") -> bytes:
    """The repaired (merged) model of a run as a zip of its layout, with its model card in ``lang``, for an
    approver."""
    folder = _exportable(store, run_id, actor)
    return model_zip_bytes(folder.model_dir, {CARD_FILE: model_card(store, run_id, lang)})


def onnx_export_zip(store: Store, run_id: int, actor: User, lang: str = "en") -> tuple[bytes, OnnxCheck]:
    """The repaired model as ONNX in a zip (``model.onnx``, its check ``onnx_check.json``, the model card), made by the
    task worker (:func:`core.app.model_exports.export_onnx`) and checked there against PyTorch on the run's
    evaluation images; the export's audit row records the opset and the largest difference."""
    _exportable(store, run_id, actor)
    result = jobs.compute(store, "export_onnx", {"run_id": run_id}, actor, store.run(run_id)["project_id"])
    check = OnnxCheck.from_json(result["check"])
    onnx_file = Path(result["path"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(ONNX_FILE, onnx_file.read_bytes())
        zf.writestr(CHECK_FILE, json.dumps(check.to_json(), indent=1) + "\n")
        zf.writestr(CARD_FILE, model_card(store, run_id, lang))
    data = buf.getvalue()
    record_export(store, run_id, data, actor, format="onnx", opset=check.opset, max_abs_diff=check.max_abs_diff)
    return data, check


def approval(store: Store, run_id: int) -> dict | None:
    """The audit row of the run's latest approval (who approved, when, and whether the four-eyes
    rule was relaxed for it), or None if it was never approved."""
    run = store.run(run_id)
    rows = [
        e
        for e in store.audit_events(run["project_id"])
        if e["action"] == "approved" and e["detail"].get("run_id") == run_id
    ]
    return rows[-1] if rows else None


def record_export(store: Store, run_id: int, data: bytes, actor: User, **detail) -> None:
    """The audit row of an export, naming who exported and who approved the model and when (``detail``: what
    else the export states, e.g. an ONNX export's opset and largest difference)."""
    run = store.run(run_id)
    with acting(store, actor, Role.APPROVER, "export", run["project_id"]) as actor:
        a = approval(store, run_id)
        store.audit(
            actor,
            "exported",
            run["project_id"],
            run_id=run_id,
            sha256=sha256_bytes(data),
            bytes=len(data),
            approved_by=a["actor"] if a else None,
            approved_at=a["ts"] if a else None,
            four_eyes=a["detail"].get("four_eyes") if a else None,
            **detail,
        )


def record_report(store: Store, run_id: int, data: bytes, actor: User) -> None:
    run = store.run(run_id)
    with acting(store, actor, None, "report", run["project_id"]) as actor:
        store.audit(actor, "report", run["project_id"], run_id=run_id, sha256=sha256_bytes(data))
