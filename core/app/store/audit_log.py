"""The store's audit log: append one event, read them back. There is deliberately no way to change or
remove one (and triggers refuse it, see :mod:`core.app.store.schema`)."""

from __future__ import annotations

import json

from core.app.store.base import StoreBase, now_iso


class AuditLog(StoreBase):
    def audit(self, actor: str, action: str, project_id: int | None = None, **detail) -> int:
        """Append one audit event. There is deliberately no way to change or remove one."""
        return self._execute(
            "INSERT INTO audit (ts, actor, project_id, action, detail_json) VALUES (?,?,?,?,?)",
            (now_iso(), actor or "unknown", project_id, action, json.dumps(detail, default=str)),
        )

    def audit_refusal(self, actor: str, action: str, project_id: int | None = None, **detail) -> None:
        """Append the audit row of a refusal: at once, or inside :meth:`transaction` once it is over,
        so that it stays when the refused transaction rolls back."""
        self._after(lambda: self.audit(actor, action, project_id, **detail))

    def audit_events(self, project_id: int | None = None) -> list[dict]:
        """Audit rows, oldest first, with ``detail`` decoded."""
        if project_id is None:
            rows = self._query("SELECT * FROM audit ORDER BY id")
        else:
            rows = self._query("SELECT * FROM audit WHERE project_id = ? ORDER BY id", (project_id,))
        for r in rows:
            r["detail"] = json.loads(r.pop("detail_json"))
        return rows

    def run_queued_detail(self, project_id: int, run_id: int) -> dict | None:
        """The detail of the ``run_queued`` event of run ``run_id`` (who labelled its counterexamples,
        among others), or None when the run was never queued (a run saved at a weaker strength)."""
        row = self._one(
            "SELECT detail_json FROM audit WHERE action = 'run_queued' AND project_id = ?"
            " AND json_extract(detail_json, '$.run_id') = ?",
            (project_id, run_id),
        )
        return json.loads(row["detail_json"]) if row is not None else None

    def run_finished_sha256(self, project_id: int, run_id: int) -> dict[str, str] | None:
        """The SHA-256 of run ``run_id``'s repaired model files as written when it finished (its
        ``run_done`` or ``run_interpolated`` audit row), or None (no model, or finished before these
        were recorded)."""
        row = self._one(
            "SELECT detail_json FROM audit WHERE action IN ('run_done', 'run_interpolated') AND project_id = ?"
            " AND json_extract(detail_json, '$.run_id') = ? ORDER BY id LIMIT 1",
            (project_id, run_id),
        )
        return json.loads(row["detail_json"]).get("sha256") if row is not None else None

    def model_hashes_recorded(self, model_id: int) -> bool:
        """Whether base model ``model_id``'s row holds the hashes of its stored files: its
        ``upload_model`` audit row keeps the upload's apart (``upload_sha256``), as every store made
        since stored hashes were recorded does."""
        row = self._one(
            "SELECT 1 FROM audit WHERE action = 'upload_model' AND json_extract(detail_json, '$.model_id') = ?"
            " AND json_extract(detail_json, '$.upload_sha256') IS NOT NULL LIMIT 1",
            (model_id,),
        )
        return row is not None
