"""Naming a suspected group: its images get the name as their ``attribute`` (docs/DISCOVERY.md).

Everything downstream already groups the evaluation set by (label, attribute): the heat map, the
per-group bars and table, worst-group accuracy, the plain finding, a repair's before/after numbers
(the worker reads the evaluation set from disk), the verdict and the report. So naming does not add a
second path beside attributes; it makes a new *version* of the project's evaluation set in which the
named images carry the name as their attribute, and makes that version the project's evaluation set:

* the new version is a folder ``artifacts/datasets/<id>/`` with the same images (hard links where
  the file system allows, else copies) and a ``manifest.csv`` with the same rows in the same order;
  the group's members that had **no** attribute get the name, rows that already had one (from the
  upload or an earlier name) keep it, and the counts of both are returned and audited;
* it is registered as a new evaluation dataset of the project, so every cached evaluation (keyed by
  model and dataset) is computed afresh on it, and later repairs are measured on it;
* the old version, its evaluations and the runs measured on it are left as they are (nothing saved
  is lost); the ``named_groups`` table records who named which images what, when, in which version;
* an audit row ``group_named`` records the same, with the new version's SHA-256.

Discovery ignores attributes, so the suspected groups of the new version are the ones just shown:
the discovery files are carried over instead of being computed again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from core.app.accounts import User, acting, require
from core.app.evaluation import dataset_at
from core.app.projects import project_summary
from core.app.store import Store
from core.app.suspected_groups import discovery_dir, group_by_id
from core.app.uploads import tree_sha256
from core.engine.metrics import NO_ATTRIBUTE
from core.errors import UserError
from core.formats.manifest import COLUMNS, write_manifest

MAX_NAME_CHARS = 60


def clean_name(name: str) -> str:
    """A group name as it will be stored: trimmed, one line, not empty, not the 'no attribute' mark."""
    name = " ".join((name or "").split())
    if not name:
        raise UserError("give the group a name first")
    if len(name) > MAX_NAME_CHARS:
        raise UserError(f"a group name may have at most {MAX_NAME_CHARS} characters")
    if name == NO_ATTRIBUTE:
        raise UserError(f"{NO_ATTRIBUTE} means 'no attribute'; choose another name")
    return name


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _rows(ds, names: dict[str, str]) -> tuple[list[dict], int, int]:
    """The manifest rows of ``ds`` (all rows, val rows too, in order) with ``names`` (path → name)
    filled in where a row has no attribute; and how many rows got the name and kept their own."""
    named = kept = 0
    rows = []
    for r in ds.records:
        attribute = r.attribute or ""
        if r.path in names:
            if attribute:
                kept += 1
            else:
                attribute = names[r.path]
                named += 1
        rows.append({"path": r.path, "label": ds.class_names[r.label], "attribute": attribute, "split": r.split or ""})
    return rows, named, kept


def _write_version(dest: Path, root: Path, rows: list[dict]) -> None:
    for r in rows:
        _link_or_copy(root / r["path"], dest / r["path"])
    write_manifest(dest, rows, COLUMNS)


def _store_version(store: Store, project_id: int, model_id: int, old: dict, ds, rows: list, title: str) -> tuple:
    """Write the new evaluation set version ``rows`` of ``ds`` into the store; returns (its dataset id, its
    SHA-256). The old version's discovery is copied along: discovery ignores attributes, so the same images
    and model give the same groups."""
    new_id = store.add_dataset(project_id, "eval", title, Path("."), "", len(ds))
    dest = store.artifacts / "datasets" / str(new_id)
    if dest.exists():
        shutil.rmtree(dest)
    _write_version(dest, ds.root, rows)
    sha = tree_sha256(dest, cache=False)
    store.set_dataset_path(new_id, dest)
    store.set_dataset_size(new_id, len(ds), sha)
    src, target = discovery_dir(store, model_id, old["id"]), discovery_dir(store, model_id, new_id)
    if src.is_dir() and not target.exists():
        shutil.copytree(src, target)
    return new_id, sha


def name_group(store: Store, project_id: int, group_id: int, name: str, actor: User) -> dict:
    """Name suspected group ``group_id`` of the project's current discovery: a new evaluation set
    version where its images without an attribute have ``name`` as their attribute (see the module
    docstring). Returns ``{"dataset_id", "named", "kept", "name"}``."""
    require(store, actor, "curator", "name_group", project_id)
    name = clean_name(name)
    s = project_summary(store, project_id)
    p = s["project"]
    if not s["eval"] or not p["base_model_id"]:
        raise UserError("upload an evaluation set first")
    try:
        group = group_by_id(store, project_id, group_id)
    except KeyError:
        raise UserError(f"there is no suspected group {group_id} here; look for suspected groups first") from None
    old = s["eval"]
    names = store.model(p["base_model_id"])["meta"]["class_names"]
    ds = dataset_at(old["path"], tuple(names))
    rows, n_named, n_kept = _rows(ds, dict.fromkeys(group["members"], name))
    if not n_named:
        raise UserError("every image of this group already has an attribute; nothing was changed")
    new_id, sha = _store_version(store, project_id, p["base_model_id"], old, ds, rows, f"{old['name']} + {name}")
    with acting(store, actor, "curator", "name_group", project_id) as actor:  # still allowed as it is recorded
        store.add_named_group(
            project_id,
            old["id"],
            new_id,
            p["base_model_id"],
            group_id,
            group["label_name"],
            name,
            group["members"],
            n_named,
            n_kept,
            actor,
        )
        store.set_project(project_id, eval_dataset_id=new_id)
        store.audit(
            actor,
            "group_named",
            project_id,
            name=name,
            group=group_id,
            label=group["label_name"],
            images=group["size"],
            named=n_named,
            kept_attribute=n_kept,
            from_dataset_id=old["id"],
            dataset_id=new_id,
            sha256=sha,
        )
    return {"dataset_id": new_id, "named": n_named, "kept": n_kept, "name": name}
