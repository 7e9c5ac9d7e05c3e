"""Projects and their data in the store: projects, models, datasets, evaluations, named groups, and the
curators' image labels with their versions."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from core.app.store.base import StoreBase, now_iso
from core.errors import UserError

PROJECT_FIELDS = frozenset(
    {"name", "base_model_id", "active_model_id", "eval_dataset_id", "pool_dataset_id", "reference_dataset_id"}
)


class LabelConflict(UserError):
    """A label changed since the page that saves over it loaded it: who changed it, to what (None:
    removed), when, and its version now (pass that version to save over it deliberately)."""

    def __init__(self, current: str | None, changed_by: str, changed_at: str, version: int):
        what = f"labelled it {current}" if current is not None else "removed its label"
        super().__init__(
            f"{changed_by} {what} at {changed_at}, after this page loaded it",
            "label_conflict",
            who=changed_by,
            label=current if current is not None else "—",
            when=changed_at,
        )
        self.current, self.changed_by, self.changed_at, self.version = current, changed_by, changed_at, version


class ProjectData(StoreBase):
    # ---- projects, models, datasets --------------------------------------------------------
    def create_project(self, name: str, actor: str, is_demo: bool = False) -> int:
        return self._execute(
            "INSERT INTO projects (name, is_demo, created_at, created_by) VALUES (?,?,?,?)",
            (name, int(is_demo), now_iso(), actor),
        )

    def project(self, project_id: int) -> dict | None:
        return self._one("SELECT * FROM projects WHERE id = ?", (project_id,))

    def projects(self) -> list[dict]:
        return self._query("SELECT * FROM projects ORDER BY id DESC")

    def set_project(self, project_id: int, **fields) -> None:
        bad = set(fields) - PROJECT_FIELDS
        if bad:
            raise ValueError(f"cannot set project field(s) {bad}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._execute(f"UPDATE projects SET {cols} WHERE id = ?", (*fields.values(), project_id))

    def add_model(
        self,
        project_id: int,
        kind: str,
        name: str,
        path: Path,
        meta: dict,
        sha256: dict,
        run_id: int | None = None,
    ) -> int:
        return self._execute(
            "INSERT INTO models (project_id, kind, name, path, meta_json, sha256_json, run_id, created_at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (project_id, kind, name, str(path), json.dumps(meta), json.dumps(sha256), run_id, now_iso()),
        )

    def set_model_sha256(self, model_id: int, sha256: dict) -> None:
        self._execute("UPDATE models SET sha256_json = ? WHERE id = ?", (json.dumps(sha256), model_id))

    def set_model_path(self, model_id: int, path: Path) -> None:
        self._execute("UPDATE models SET path = ? WHERE id = ?", (str(path), model_id))

    def model(self, model_id: int) -> dict | None:
        row = self._one("SELECT * FROM models WHERE id = ?", (model_id,))
        if row:
            row["meta"] = json.loads(row["meta_json"])
            row["sha256"] = json.loads(row["sha256_json"])
        return row

    def add_dataset(self, project_id: int, role: str, name: str, path: Path, sha256: str, n_items: int) -> int:
        return self._execute(
            "INSERT INTO datasets (project_id, role, name, path, sha256, n_items, created_at) VALUES (?,?,?,?,?,?,?)",
            (project_id, role, name, str(path), sha256, n_items, now_iso()),
        )

    def add_artifact_dataset(self, project_id: int, role: str, name: str) -> tuple[int, Path]:
        """A new, empty dataset whose folder is ``artifacts/datasets/<id>``, set in the same transaction
        as the row is made, so no row ever points anywhere else."""
        with self._connect() as con:
            cur = con.execute(
                "INSERT INTO datasets (project_id, role, name, path, sha256, n_items, created_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (project_id, role, name, "", "", 0, now_iso()),
            )
            did = int(cur.lastrowid)
            root = self.artifacts / "datasets" / str(did)
            con.execute("UPDATE datasets SET path = ? WHERE id = ?", (str(root), did))
        root.mkdir(parents=True, exist_ok=True)
        return did, root

    def set_dataset_path(self, dataset_id: int, path: Path) -> None:
        self._execute("UPDATE datasets SET path = ? WHERE id = ?", (str(path), dataset_id))

    def dataset(self, dataset_id: int) -> dict | None:
        return self._one("SELECT * FROM datasets WHERE id = ?", (dataset_id,))

    def datasets(self, project_id: int, role: str | None = None) -> list[dict]:
        if role is None:
            return self._query("SELECT * FROM datasets WHERE project_id = ? ORDER BY id", (project_id,))
        return self._query("SELECT * FROM datasets WHERE project_id = ? AND role = ? ORDER BY id", (project_id, role))

    def set_dataset_size(self, dataset_id: int, n_items: int, sha256: str) -> None:
        self._execute("UPDATE datasets SET n_items = ?, sha256 = ? WHERE id = ?", (n_items, sha256, dataset_id))

    # ---- evaluations -----------------------------------------------------------------------
    def save_evaluation(self, model_id: int, dataset_id: int, metrics: dict, predictions_path: Path) -> None:
        self._execute(
            "INSERT OR REPLACE INTO evaluations (model_id, dataset_id, metrics_json, predictions_path,"
            " created_at) VALUES (?,?,?,?,?)",
            (model_id, dataset_id, json.dumps(metrics), str(predictions_path), now_iso()),
        )

    def evaluation(self, model_id: int, dataset_id: int) -> dict | None:
        row = self._one("SELECT * FROM evaluations WHERE model_id = ? AND dataset_id = ?", (model_id, dataset_id))
        if row:
            row["metrics"] = json.loads(row.pop("metrics_json"))
        return row

    # ---- named suspected groups ------------------------------------------------------------
    def add_named_group(
        self,
        project_id: int,
        dataset_id: int,
        new_dataset_id: int,
        model_id: int,
        group_id: int,
        label: str,
        name: str,
        paths: list[str],
        n_named: int,
        n_kept: int,
        actor: str,
    ) -> int:
        """Record that a suspected group of ``dataset_id`` was named; ``new_dataset_id`` is the
        evaluation set version with the name filled in as the attribute of its images."""
        return self._execute(
            "INSERT INTO named_groups (project_id, dataset_id, new_dataset_id, model_id, group_id, label, name,"
            " paths_json, n_named, n_kept, created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                project_id,
                dataset_id,
                new_dataset_id,
                model_id,
                group_id,
                label,
                name,
                json.dumps(paths),
                n_named,
                n_kept,
                now_iso(),
                actor,
            ),
        )

    def named_groups(self, project_id: int) -> list[dict]:
        """The project's named groups, oldest first, with ``paths`` decoded."""
        rows = self._query("SELECT * FROM named_groups WHERE project_id = ? ORDER BY id", (project_id,))
        for r in rows:
            r["paths"] = json.loads(r.pop("paths_json"))
        return rows

    # ---- counterexamples -------------------------------------------------------------------
    # Every label write (set or remove) raises the image's version in label_versions, which outlives a
    # removed label; a writer that says which version it saw is refused when it is not the current one.
    @staticmethod
    def _label_state(con: sqlite3.Connection, key: tuple, expected_version: int | None) -> tuple[str | None, int]:
        prev = con.execute(
            "SELECT label FROM counterexamples WHERE project_id=? AND dataset_id=? AND item_path=?", key
        ).fetchone()
        ver = con.execute(
            "SELECT version, changed_by, changed_at FROM label_versions WHERE project_id=? AND dataset_id=?"
            " AND item_path=?",
            key,
        ).fetchone()
        version = ver["version"] if ver else 0
        if expected_version is not None and expected_version != version:
            raise LabelConflict(prev["label"] if prev else None, ver["changed_by"], ver["changed_at"], version)
        return (prev["label"] if prev else None), version

    @staticmethod
    def _bump_label_version(con: sqlite3.Connection, key: tuple, version: int, actor: str) -> None:
        con.execute(
            "INSERT INTO label_versions (project_id, dataset_id, item_path, version, changed_by, changed_at)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (project_id, dataset_id, item_path) DO UPDATE SET"
            " version = excluded.version, changed_by = excluded.changed_by, changed_at = excluded.changed_at",
            (*key, version + 1, actor, now_iso()),
        )

    def set_label(
        self,
        project_id: int,
        dataset_id: int,
        item_path: str,
        label: str,
        attribute: str | None,
        actor: str,
        expected_version: int | None = None,
    ) -> str | None:
        """Label one pool image; returns the previous label (None if it was not chosen yet). With
        ``expected_version`` (the version the caller saw; 0: never labelled), raises
        :class:`LabelConflict` instead of writing if the label changed since."""
        key = (project_id, dataset_id, item_path)
        with self._connect() as con:
            prev, version = self._label_state(con, key, expected_version)
            if prev != label:
                self._bump_label_version(con, key, version, actor)
            con.execute(
                "INSERT INTO counterexamples (project_id, dataset_id, item_path, label, attribute, created_at,"
                " created_by) VALUES (?,?,?,?,?,?,?) ON CONFLICT (project_id, dataset_id, item_path)"
                " DO UPDATE SET label = excluded.label, created_at = excluded.created_at,"
                " created_by = excluded.created_by",
                (project_id, dataset_id, item_path, label, attribute, now_iso(), actor),
            )
        return prev

    def remove_label(
        self, project_id: int, dataset_id: int, item_path: str, actor: str = "", expected_version: int | None = None
    ) -> str | None:
        """Remove one image's label; returns it (None: it had none). ``expected_version`` as in set_label."""
        key = (project_id, dataset_id, item_path)
        with self._connect() as con:
            prev, version = self._label_state(con, key, expected_version)
            if prev is not None:
                self._bump_label_version(con, key, version, actor or "unknown")
            con.execute("DELETE FROM counterexamples WHERE project_id=? AND dataset_id=? AND item_path=?", key)
        return prev

    def label_versions(self, project_id: int) -> dict[tuple[int, str], int]:
        """The current version of every image label of the project ever written, by (dataset id, path)."""
        rows = self._query(
            "SELECT dataset_id, item_path, version FROM label_versions WHERE project_id = ?", (project_id,)
        )
        return {(r["dataset_id"], r["item_path"]): r["version"] for r in rows}

    def label_change_count(self, project_id: int) -> int:
        """A number that grows with every label change of the project: cheap to poll for "has someone
        else labelled something?"."""
        row = self._one("SELECT COALESCE(SUM(version), 0) AS n FROM label_versions WHERE project_id = ?", (project_id,))
        return int(row["n"])

    def labels(self, project_id: int) -> list[dict]:
        return self._query(
            "SELECT c.*, d.path AS dataset_path, d.role AS dataset_role FROM counterexamples c"
            " JOIN datasets d ON d.id = c.dataset_id WHERE c.project_id = ? ORDER BY c.id",
            (project_id,),
        )
