"""Model files changed behind the workbench's back are noticed (core/app/integrity.py).

A base model's files are checked before a repair loads them; a repair's weights are hashed when it
finishes (the ``run_done`` audit row) and checked before it is approved, so a changed file is refused
with a plain message and an audit row instead of being repaired or approved.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.app import decisions, pool, projects, runs
from core.app.integrity import stored_model_sha256
from core.app.worker import execute_run
from core.errors import UserError
from tests.wb_helpers import ALICE, FAST_RUN, MIA, make_accounts, open_demo_here, pool_truth


@pytest.fixture()
def store(home):
    s = projects.get_store(home)
    make_accounts(s)
    return s


def _flip_last_byte(f: Path) -> bytes:
    """Change one byte of ``f``; returns what it held."""
    raw = f.read_bytes()
    f.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    return raw


def _queued_run(store, pid: int) -> int:
    rid = runs.submit_run(store, pid, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    return rid


def test_changed_base_model_refuses_the_repair_and_changed_run_weights_refuse_approval(store):
    pid = open_demo_here(store, ALICE)
    truth = pool_truth(store, pid)
    for c in [c for c in pool.candidates(store, pid) if c["label"] is None][:4]:
        pool.set_label(store, pid, c["key"], truth[c["path"]], ALICE)

    # The base model's weights changed after it was stored: the repair does not run on them.
    base = store.model(store.project(pid)["base_model_id"])
    weights = Path(base["path"]) / "model.safetensors"
    kept = _flip_last_byte(weights)
    rid = _queued_run(store, pid)
    assert execute_run(store, store.claim_next_run(os.getpid())) == "failed"
    error = store.run(rid)["error"]
    assert "model.safetensors changed on disk since it was stored" in error
    failed = [e for e in store.audit_events(pid) if e["action"] == "run_failed"]
    assert [e["detail"]["run_id"] for e in failed] == [rid] and "changed on disk" in failed[0]["detail"]["error"]
    weights.write_bytes(kept)

    # Restored, it repairs; the run_done row carries the hashes of the weights as written.
    rid = _queued_run(store, pid)
    assert execute_run(store, store.claim_next_run(os.getpid())) == "done"
    model_dir = Path(store.run(rid)["out_dir"]) / "model"
    done = next(e for e in store.audit_events(pid) if e["action"] == "run_done" and e["detail"]["run_id"] == rid)
    assert done["detail"]["sha256"] == stored_model_sha256(model_dir)

    # Its weights changed before approval: refused, audited, nothing approved.
    kept = _flip_last_byte(model_dir / "model.safetensors")
    with pytest.raises(UserError, match=f"repair #{rid}: model.safetensors changed on disk") as refused:
        decisions.approve_run(store, rid, "ok", MIA)
    assert refused.value.key == "files_changed"
    assert store.run(rid)["decision"] is None and store.run(rid)["repaired_model_id"] is None
    assert store.project(pid)["active_model_id"] == base["id"]
    last = store.audit_events(pid)[-1]
    assert (last["action"], last["actor"], last["detail"]["run_id"]) == ("files_changed", "mia", rid)
    (model_dir / "model.safetensors").write_bytes(kept)
    mid = decisions.approve_run(store, rid, "ok", MIA)
    assert store.model(mid)["sha256"] == done["detail"]["sha256"]
