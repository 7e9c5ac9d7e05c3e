"""Demo sandboxes in the store: a demo session's own copy of the demo project, found by its session, and
deleted with every row that belongs to it (docs/WORKBENCH.md, "Demo sandboxes").

A sandbox is a project row with ``sandbox_of`` (the demo project it was copied from) and ``demo_session``
(the SHA-256 of its session's token; NULL once it was reset). Only such rows are ever deleted here: the
demo project itself and every other project have ``sandbox_of`` NULL. Audit rows stay (the log is
append-only); they keep the sandbox's project id.
"""

from __future__ import annotations

import time

from core.app.store.base import StoreBase, now_iso
from core.app.store.states import ACTIVE_RUN_STATES, ACTIVE_TASK_STATES, sql_list

# The rows a sandbox owns, deleted children first (the foreign keys are on).
_DELETE = (
    "DELETE FROM progress WHERE run_id IN (SELECT id FROM runs WHERE project_id = :p)",
    "DELETE FROM runs WHERE project_id = :p",
    "DELETE FROM evaluations WHERE model_id IN (SELECT id FROM models WHERE project_id = :p)"
    " OR dataset_id IN (SELECT id FROM datasets WHERE project_id = :p)",
    "DELETE FROM counterexamples WHERE project_id = :p",
    "DELETE FROM label_versions WHERE project_id = :p",
    "DELETE FROM named_groups WHERE project_id = :p",
    "DELETE FROM tasks WHERE project_id = :p",
    "DELETE FROM datasets WHERE project_id = :p",
    "DELETE FROM models WHERE project_id = :p",
    "DELETE FROM projects WHERE id = :p",
)


class SandboxRows(StoreBase):
    def create_sandbox(self, name: str, actor: str, template_id: int, session: str) -> int:
        """A new, empty sandbox project copied from ``template_id`` for the session ``session``."""
        return self._execute(
            "INSERT INTO projects (name, is_demo, created_at, created_by, sandbox_of, demo_session)"
            " VALUES (?,1,?,?,?,?)",
            (name, now_iso(), actor, template_id, session),
        )

    def session_sandbox(self, session: str) -> dict | None:
        """The sandbox of demo session ``session`` (its newest, should there be two)."""
        return self._one(
            "SELECT * FROM projects WHERE demo_session = ? AND sandbox_of IS NOT NULL ORDER BY id DESC LIMIT 1",
            (session,),
        )

    def release_sandbox(self, project_id: int) -> None:
        """Unbind a sandbox from its session (it was reset): the cleanup deletes it."""
        self._execute("UPDATE projects SET demo_session = NULL WHERE id = ? AND sandbox_of IS NOT NULL", (project_id,))

    def sandboxes(self, now: float | None = None) -> list[dict]:
        """Every sandbox with ``live`` (its session exists and has not expired at ``now``, default the
        present) and ``busy`` (runs or tasks of it not ended yet), oldest first."""
        return self._query(
            "SELECT p.*, EXISTS (SELECT 1 FROM sessions s WHERE s.token_sha256 = p.demo_session"
            " AND s.expires_at > :now) AS live,"
            f" EXISTS (SELECT 1 FROM runs r WHERE r.project_id = p.id AND r.status IN {sql_list(ACTIVE_RUN_STATES)})"
            f" OR EXISTS (SELECT 1 FROM tasks t WHERE t.project_id = p.id AND t.status IN {sql_list(ACTIVE_TASK_STATES)})"
            " AS busy FROM projects p WHERE p.sandbox_of IS NOT NULL ORDER BY p.id",
            {"now": time.time() if now is None else now},
        )

    def delete_sandbox(self, project_id: int) -> dict | None:
        """Delete a sandbox's rows in one transaction, unless runs or tasks of it are still active; returns
        what its files were (``models``, ``runs``, ``datasets`` ids, ``files``: evaluation files), or None
        when nothing was deleted (not a sandbox, or busy)."""
        with self._connect() as con:
            p = con.execute("SELECT sandbox_of FROM projects WHERE id = ?", (project_id,)).fetchone()
            if p is None or p["sandbox_of"] is None:
                return None
            busy = con.execute(
                f"SELECT 1 FROM runs WHERE project_id = ? AND status IN {sql_list(ACTIVE_RUN_STATES)} UNION ALL"
                f" SELECT 1 FROM tasks WHERE project_id = ? AND status IN {sql_list(ACTIVE_TASK_STATES)}",
                (project_id, project_id),
            ).fetchone()
            if busy:
                return None
            ids = {
                table: [r[0] for r in con.execute(f"SELECT id FROM {table} WHERE project_id = ?", (project_id,))]
                for table in ("models", "runs", "datasets")
            }
            files = [
                r[0]
                for r in con.execute(
                    "SELECT predictions_path FROM evaluations WHERE model_id IN"
                    " (SELECT id FROM models WHERE project_id = ?)",
                    (project_id,),
                )
            ]
            for sql in _DELETE:
                con.execute(sql, {"p": project_id})
        return {**ids, "files": files}
