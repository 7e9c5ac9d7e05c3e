"""Naming a suspected group (docs/DISCOVERY.md, docs/WORKBENCH.md): a new evaluation set version, the named_groups row, the
audit row. Torch-free: the discovery files are written here as the task worker would write them."""

from __future__ import annotations

import csv
import json

import pytest

from core.app import naming, suspected_groups
from core.app.store import Store
from core.errors import UserError
from core.formats.datasets import load_dataset, write_manifest_dataset
from tests.conftest import TINY_CLASSES, make_images
from tests.wb_helpers import ALICE, BOB


@pytest.fixture()
def project(tmp_path):
    """A project with a 12-image evaluation set (two rows already carry an attribute, two are
    validation rows) and a saved discovery with one suspected group of 'dog'."""
    store = Store(tmp_path / "home")
    labels = [TINY_CLASSES[i % 3] for i in range(12)]
    attrs = [None] * 12
    attrs[4] = "blue"
    splits = ["val" if i >= 10 else None for i in range(12)]
    root = write_manifest_dataset(tmp_path / "eval", make_images(12), labels, attrs, splits)
    pid = store.create_project("p", ALICE)
    mid = store.add_model(pid, "base", "m", tmp_path, {"class_names": TINY_CLASSES}, {})
    did = store.add_dataset(pid, "eval", "plain", root, "sha", 12)
    store.set_project(pid, base_model_id=mid, active_model_id=mid, eval_dataset_id=did)
    members = [f"images/img_{i:05d}.png" for i in (1, 4, 7)]  # dogs; the second has an attribute
    group = {
        "id": 3,
        "label": 1,
        "label_name": "dog",
        "size": 3,
        "rank": 1,
        "score": 0.4,
        "accuracy": 0.0,
        "class_accuracy": 0.5,
        "reference_accuracy": 1.0,
        "accuracy_low": 0.0,
        "accuracy_high": 0.56,
        "members": members,
        "member_index": [1, 4, 7],
        "representatives": members,
    }
    out = suspected_groups.discovery_dir(store, mid, did)
    out.mkdir(parents=True)
    (out / suspected_groups.GROUPS_FILE).write_text(json.dumps({"groups": [group]}))
    return store, pid, did, root


def _manifest(path) -> list[dict]:
    with open(path / "manifest.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_naming_makes_a_new_version_records_and_audits_it(project):
    store, pid, old, root = project
    before = (root / "manifest.csv").read_bytes()
    done = naming.name_group(store, pid, 3, "  red \n corner ", BOB)
    assert done["name"] == "red corner" and (done["named"], done["kept"]) == (2, 1)
    new = store.project(pid)["eval_dataset_id"]
    assert new == done["dataset_id"] != old
    # The old version is untouched; the new one has the same rows in the same order, with the name
    # only where a member had no attribute.
    assert (root / "manifest.csv").read_bytes() == before
    path = store.dataset(new)["path"]
    rows = _manifest(root), _manifest(type(root)(path))
    assert [r["path"] for r in rows[0]] == [r["path"] for r in rows[1]]
    assert [r["split"] for r in rows[0]] == [r["split"] for r in rows[1]]
    attrs = {r["path"]: r["attribute"] for r in rows[1]}
    assert attrs["images/img_00001.png"] == attrs["images/img_00007.png"] == "red corner"
    assert attrs["images/img_00004.png"] == "blue"  # kept
    assert sum(a == "red corner" for a in attrs.values()) == 2
    ds = load_dataset(path, TINY_CLASSES)
    assert len(ds) == 12 and store.dataset(new)["n_items"] == 12 and len(store.dataset(new)["sha256"]) == 64
    # recorded, audited, and shown as named from now on
    (row,) = store.named_groups(pid)
    assert (row["name"], row["group_id"], row["label"], row["created_by"]) == ("red corner", 3, "dog", BOB)
    assert (row["dataset_id"], row["new_dataset_id"], row["n_named"], row["n_kept"]) == (old, new, 2, 1)
    assert row["paths"] == [f"images/img_{i:05d}.png" for i in (1, 4, 7)]
    event = store.audit_events(pid)[-1]
    assert event["action"] == "group_named" and event["actor"] == BOB
    assert event["detail"]["name"] == "red corner" and event["detail"]["kept_attribute"] == 1
    assert (event["detail"]["from_dataset_id"], event["detail"]["dataset_id"]) == (old, new)
    (g,) = suspected_groups.project_groups(store, pid, compute=False)  # discovery carried over to the new version
    assert g["named"] == "red corner" and g["files"][0].startswith(path)
    assert suspected_groups.has_attributes(store, pid)


@pytest.mark.parametrize(("name", "message"), [("", "give the group a name"), ("(none)", "means 'no attribute'")])
def test_bad_names_change_nothing(project, name, message):
    store, pid, old, _ = project
    with pytest.raises(UserError, match=message):
        naming.name_group(store, pid, 3, name, BOB)
    with pytest.raises(UserError, match="no suspected group 9"):
        naming.name_group(store, pid, 9, "x", BOB)
    assert store.project(pid)["eval_dataset_id"] == old and store.named_groups(pid) == []
    assert store.audit_events(pid) == []


def test_naming_twice_keeps_the_first_name(project):
    store, pid, _, _ = project
    naming.name_group(store, pid, 3, "red corner", BOB)
    with pytest.raises(UserError, match="already has an attribute"):
        naming.name_group(store, pid, 3, "blue corner", BOB)
    assert [r["name"] for r in store.named_groups(pid)] == ["red corner"]


def test_a_discovery_saved_with_older_features_is_computed_again(project):
    """Pool suggestions embed pool images with today's features; a discovery saved with an older
    feature set (another width) must not be read, or they would fail with a shape error."""
    store, pid, did, _ = project
    assert suspected_groups.project_groups(store, pid, compute=False)
    current = suspected_groups.discovery_dir(store, store.project(pid)["base_model_id"], did)
    current.rename(current.with_name(current.name.rsplit("_f", 1)[0]))  # the name before versioning
    assert suspected_groups.project_groups(store, pid, compute=False) is None
