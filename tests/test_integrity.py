"""Writes stay inside the store (docs/ARCHITECTURE.md, "Untrusted input"), a failed submit ends its run, decisions and
the audit log keep their integrity. One regression test per case."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.app import compute, decisions, history, runs, uploads
from core.app.integrity import file_sha256
from core.app.store import Store
from core.errors import UserError
from core.formats.meta import sha256_bytes
from tests.wb_helpers import ALICE, BOB, MIA

METRICS = {  # a metrics.json as a repair writes it (core.engine.results.RunMetrics)
    "method": "cpt",
    "strength": 10.0,
    "steps": 10,
    "before": {
        "accuracy": 0.80,
        "worst_group_accuracy": 0.20,
        "bias_gap": 0.6,
        "min_group_count": 1,
        "n": 100,
        "groups": [],
    },  # fmt: skip
    "after": {
        "accuracy": 0.81,
        "worst_group_accuracy": 0.60,
        "bias_gap": 0.2,
        "min_group_count": 1,
        "n": 100,
        "groups": [],
    },  # fmt: skip
    "kept_decisions": 0.97,
    "changed_predictions": 5,
    "stop_reason": "max_steps",
}


def png_bytes(colour=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def store(tmp_path) -> Store:
    return Store(tmp_path / "home")


def _project_with_model(store: Store, tiny_bundle_dir: Path, compact_json: bool = False) -> int:
    staged = store.artifact_dir("incoming") / "model_t"
    staged.mkdir()
    meta = json.loads((tiny_bundle_dir / "model.json").read_text())
    (staged / "model.json").write_text(json.dumps(meta, separators=(",", ":")) if compact_json else json.dumps(meta))
    (staged / "model.safetensors").write_bytes((tiny_bundle_dir / "model.safetensors").read_bytes())
    payload = {"staged": str(staged), "filename": "m.zip", "weights": "model.safetensors"}
    return compute.register_model(store, payload, ALICE)["project_id"]


def _finished_run(store: Store, pid: int, tiny_bundle_dir: Path) -> int:
    """A run that ended 'done' with a repaired model in its folder (no training needed)."""
    base = store.project(pid)["base_model_id"]
    rid = store.create_run(pid, base, "cpt", {}, "10", 1, store.home, ALICE)
    out = store.artifact_dir("runs", str(rid))
    (out / "model").mkdir()
    for name in ("model.json", "model.safetensors"):
        (out / "model" / name).write_bytes((tiny_bundle_dir / name).read_bytes())
    (out / "metrics.json").write_text(json.dumps(METRICS))
    store.queue_run(rid, out)
    store.claim_next_run(1)
    store.finish_run(rid, "done")
    return rid


# ---- nothing written outside BIASREPAIR_HOME; a failed submit ends the run ----------------------
def test_single_upload_never_writes_outside_the_store(store, tmp_path, monkeypatch):
    cwd = tmp_path / "server_cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    pid = store.create_project("p", ALICE)
    # The row an older version left after a failed first upload: its path is "."
    store.add_dataset(pid, "uploads", "my uploads", Path("."), "", 0)
    assert uploads.upload_single_images(store, pid, [("a.png", png_bytes())], "", ALICE) == 1
    assert list(cwd.iterdir()) == []
    row = store.datasets(pid, "uploads")[0]
    assert store.inside_home(row["path"]) and Path(row["path"]).resolve() != store.home.resolve()
    assert (Path(row["path"]) / "items.csv").is_file()


def test_first_single_upload_row_points_into_the_store_from_the_start(store, monkeypatch):
    pid = store.create_project("p", ALICE)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(uploads, "write_items", boom)
    with pytest.raises(OSError):
        uploads.upload_single_images(store, pid, [("a.png", png_bytes())], "", ALICE)
    rows = store.datasets(pid, "uploads")
    assert all(store.inside_home(r["path"]) and r["path"] not in ("", ".") for r in rows)


def test_failed_submit_ends_the_run_as_failed_with_its_reason(store, tiny_bundle_dir):
    pid = _project_with_model(store, tiny_bundle_dir)
    did = store.add_dataset(pid, "pool", "pool", store.home / "gone", "x", 1)
    store.set_label(pid, did, "missing.png", "cat", None, ALICE)  # its file does not exist
    with pytest.raises(UserError, match="missing.png"):
        runs.submit_run(store, pid, "cpt", {"strength": 10.0}, ALICE, start_worker=False)
    (run,) = store.runs(pid)
    assert run["status"] == "failed" and "missing.png" in run["error"]
    assert runs.active_runs(store, pid) == []


# ---- decisions and audit integrity --------------------------------------------------------------
def test_rejecting_an_approved_run_makes_the_original_active_again(store, tiny_bundle_dir):
    pid = _project_with_model(store, tiny_bundle_dir)
    rid = _finished_run(store, pid, tiny_bundle_dir)
    mid = decisions.approve_run(store, rid, "ok", MIA)
    assert store.project(pid)["active_model_id"] == mid
    decisions.reject_run(store, rid, "changed my mind", MIA)
    p = store.project(pid)
    assert p["active_model_id"] == p["base_model_id"] != mid
    assert [e["action"] for e in store.audit_events(pid)][-2:] == ["rejected", "rolled_back"]


def test_insert_or_replace_cannot_rewrite_an_audit_row(store):
    aid = store.audit(ALICE, "approved", None, run_id=1)
    con = sqlite3.connect(store.db_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute(
            "INSERT OR REPLACE INTO audit (id, ts, actor, project_id, action, detail_json) VALUES (?,?,?,?,?,?)",
            (aid, "2000-01-01T00:00:00Z", "mallory", None, "rejected", "{}"),
        )
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute(
            "REPLACE INTO audit (id, ts, actor, project_id, action, detail_json) VALUES (?,?,?,?,?,?)",
            (aid, "2000-01-01T00:00:00Z", "mallory", None, "rejected", "{}"),
        )
    con.execute("INSERT INTO audit (ts, actor, action, detail_json) VALUES ('t', 'bob', 'x', '{}')")  # appending works
    con.commit()
    con.close()
    assert [(e["actor"], e["action"]) for e in store.audit_events()] == [(ALICE, "approved"), (BOB, "x")]


def test_recorded_model_hashes_are_those_of_the_stored_files(store, tiny_bundle_dir):
    pid = _project_with_model(store, tiny_bundle_dir, compact_json=True)  # re-serialised when stored
    model = store.model(store.project(pid)["base_model_id"])
    for name in ("model.json", "model.safetensors"):
        assert model["sha256"][name] == sha256_bytes((Path(model["path"]) / name).read_bytes())
    event = next(e for e in store.audit_events(pid) if e["action"] == "upload_model")
    assert event["detail"]["sha256"] == model["sha256"]
    uploaded = json.dumps(json.loads((tiny_bundle_dir / "model.json").read_text()), separators=(",", ":"))
    assert event["detail"]["upload_sha256"]["model.json"] == sha256_bytes(uploaded.encode())
    assert event["detail"]["upload_sha256"]["model.json"] != model["sha256"]["model.json"]


def test_recorded_pool_hash_is_that_of_the_stored_pool(store):
    pid = store.create_project("p", ALICE)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.png", png_bytes())
        zf.writestr("b.png", png_bytes((0, 255, 0)))
    did = uploads.upload_pool_zip(store, pid, buf.getvalue(), "pool.zip", ALICE)
    ds = store.dataset(did)
    assert (Path(ds["path"]) / "items.csv").is_file()
    assert ds["sha256"] == uploads.tree_sha256(Path(ds["path"]), cache=False)
    event = next(e for e in store.audit_events(pid) if e["action"] == "upload_pool")
    assert event["detail"]["sha256"] == ds["sha256"] != event["detail"]["upload_sha256"]


def test_weights_changed_after_approval_are_refused_on_export_and_load(store, tiny_bundle_dir):
    pid = _project_with_model(store, tiny_bundle_dir)
    rid = _finished_run(store, pid, tiny_bundle_dir)
    mid = decisions.approve_run(store, rid, "ok", MIA)
    assert decisions.export_bytes(store, rid, MIA)  # unchanged: exported
    weights = Path(store.model(mid)["path"]) / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="changed on disk since it was approved"):
        decisions.export_bytes(store, rid, MIA)
    did = store.add_dataset(pid, "eval", "e", store.home, "x", 1)
    with pytest.raises(UserError, match="changed on disk since it was approved"):
        compute.evaluate(store, {"model_id": mid, "dataset_id": did}, ALICE)
    with pytest.raises(UserError, match="changed on disk since it was approved"):
        compute.pool_predictions(store, {"model_id": mid, "dataset_id": did}, ALICE)
    with pytest.raises(UserError, match="changed on disk since it was approved"):
        compute.discover(store, {"model_id": mid, "dataset_id": did}, ALICE)
    with pytest.raises(UserError, match="changed on disk since it was approved"):
        compute.discover_pool(store, {"model_id": mid, "dataset_id": did, "pools": []}, ALICE)


def test_history_csv_neutralises_formulas(store):
    for actor in ('=HYPERLINK("http://x","y")', "+1+1", "-2", "@SUM(A1)", "plain"):
        store.audit(actor, "label_added", None, label=actor)
    data = history.history_csv(history.history_frame(store)).decode()
    who = [row["who"] for row in csv.DictReader(io.StringIO(data))]
    assert who == ['\'=HYPERLINK("http://x","y")', "'+1+1", "'-2", "'@SUM(A1)", "plain"]
    for row in csv.reader(io.StringIO(data)):
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row)


def test_sha256_helper_matches_hashlib(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"abc" * 1000)
    assert file_sha256(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
