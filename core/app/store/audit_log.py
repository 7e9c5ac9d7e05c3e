"""The store's audit log: append one event, read them back. There is deliberately no way to change or
remove one (and triggers refuse it, see :mod:`core.app.store.schema`).

The rows form a hash chain: each carries ``chain``, the SHA-256 of the previous row's chain and its
own id and content, and ``audit_head`` keeps the last row's id and chain. :meth:`AuditLog.audit_chain_break`
walks the log and says where it no longer holds: a row changed, inserted or removed, the last rows
or the whole table gone. (Rows written before the chain existed carry none and are not checked.)
Anyone who can write the database file can still rebuild a consistent chain: it shows tampering
done around the triggers with plain SQL, not a forger who re-hashes everything after the change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3

from core.app.store.base import StoreBase, now_iso


def chain_hash(prev: str, row_id: int, ts: str, actor: str, project_id: int | None, action: str, detail: str) -> str:
    """The chain value of one audit row: SHA-256 over the previous row's chain and this row's fields."""
    fields = json.dumps([prev, row_id, ts, actor, project_id, action, detail], ensure_ascii=False)
    return hashlib.sha256(fields.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class ChainBreak:
    """Where the audit log's chain no longer holds. ``kind``: ``row`` (row ``row_id`` was changed or
    inserted, or the row before it removed), ``tail`` (rows after ``row_id`` removed) or ``table``
    (the audit table is gone or unreadable)."""

    kind: str
    row_id: int | None = None


class AuditLog(StoreBase):
    def audit(self, actor: str, action: str, project_id: int | None = None, **detail) -> int:
        """Append one audit event, chained to the one before. There is deliberately no way to change or remove one."""
        ts, who, detail_json = now_iso(), actor or "unknown", json.dumps(detail, default=str)
        with self._connect() as con:
            head = con.execute("SELECT chain FROM audit_head WHERE id = 1").fetchone()
            row_id = con.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM audit").fetchone()[0]
            chain = chain_hash(head[0] if head else "", row_id, ts, who, project_id, action, detail_json)
            con.execute(
                "INSERT INTO audit (id, ts, actor, project_id, action, detail_json, chain) VALUES (?,?,?,?,?,?,?)",
                (row_id, ts, who, project_id, action, detail_json, chain),
            )
            con.execute(
                "INSERT INTO audit_head (id, last_id, chain) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET last_id = excluded.last_id, chain = excluded.chain",
                (row_id, chain),
            )
        return row_id

    def audit_chain_break(self) -> ChainBreak | None:
        """None when the audit log's chain holds from its first chained row to the head; otherwise where
        it breaks (see :class:`ChainBreak`)."""
        try:
            with self._connect(write=False) as con:
                rows = con.execute(
                    "SELECT id, ts, actor, project_id, action, detail_json, chain FROM audit ORDER BY id"
                ).fetchall()
                head = con.execute("SELECT last_id, chain FROM audit_head WHERE id = 1").fetchone()
        except sqlite3.DatabaseError:
            return ChainBreak("table")
        prev, last_id = "", None
        for r in rows:
            if r["chain"] is None and not prev:
                continue  # written before the chain existed
            expected = chain_hash(prev, r["id"], r["ts"], r["actor"], r["project_id"], r["action"], r["detail_json"])
            if r["chain"] != expected:
                return ChainBreak("row", r["id"])
            prev, last_id = r["chain"], r["id"]
        if head is None:
            return ChainBreak("tail", last_id) if prev else None
        if (head["last_id"], head["chain"]) != (last_id, prev):
            return ChainBreak("tail", last_id)
        return None

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
