"""Demo sandboxes (core/app/sandboxes.py): each demo session works on its own copy of the demo, a reset gives
a fresh one, and the cleanup deletes ended or old copies and nothing else. One real store is built once for
the module (the template: the demo registered, evaluated and its pool predicted by the task worker); every
test makes its own demo sessions in it."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import settings
from core.app import accounts, decisions, jobs, pixels, pool, projects, runs, sandboxes, similar
from core.app.accounts import Forbidden
from core.app.budget import BudgetError
from core.app.integrity import stored_model_sha256
from core.app.store import Store
from core.formats.datasets import load_dataset
from core.formats.meta import BundleMeta
from tests.run_fixtures import make_tradeoff_run
from tests.wb_helpers import ALICE, APP, FAST_RUN, make_accounts, pool_truth, seed_demo_cache


@pytest.fixture(scope="module")
def store(tmp_path_factory, demo_dir) -> Store:
    home = tmp_path_factory.mktemp("sandboxes") / "home"
    seed_demo_cache(home, demo_dir)
    s = Store(home)
    make_accounts(s)
    try:
        projects.open_demo(s, ALICE)  # the demo project, as an account opens it: the template
    finally:
        jobs.stop_spawned_workers()
    return s


def _visitor(store: Store) -> tuple[str, accounts.User]:
    token = accounts.demo_session(store)
    return token, accounts.user_for(store, token)


def _task_count(store: Store) -> int:
    with sqlite3.connect(store.db_path) as con:
        return con.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]


def _label(store: Store, pid: int, user, n: int) -> None:
    truth = pool_truth(store, pid)
    for c in [c for c in pool.candidates(store, pid, user) if c["label"] is None][:n]:
        pool.set_label(store, pid, c["key"], truth[c["path"]], user)


def _template_files(store: Store) -> dict[Path, bytes]:
    t = sandboxes.template(store)
    return {f: f.read_bytes() for f in sandboxes._template_files(store, t)}


def test_each_demo_session_gets_its_own_copy_and_never_sees_another_ones_labels(store):
    template = sandboxes.template(store)
    assert template is not None and template.ready(store)
    (_, a), (_, b) = _visitor(store), _visitor(store)
    tasks = _task_count(store)
    pa, pb = projects.open_demo(store, a), projects.open_demo(store, b)
    assert len({pa, pb, template.project_id}) == 3
    assert projects.open_demo(store, a) == pa  # the same copy again
    assert _task_count(store) == tasks  # no model ran: the copy has the template's answers
    # A real copy: its own rows and model files (same hashes), the demo's images shared read-only.
    sa, st = projects.project_summary(store, pa), projects.project_summary(store, template.project_id)
    assert sa["active_model"]["id"] != st["active_model"]["id"]
    assert Path(sa["active_model"]["path"]) != Path(st["active_model"]["path"])
    assert stored_model_sha256(sa["active_model"]["path"]) == st["active_model"]["sha256"]
    for part in ("eval", "pool", "reference"):
        assert sa[part]["id"] != st[part]["id"] and sa[part]["path"] == st[part]["path"]
    assert store.evaluation(sa["base_model_id"], sa["eval"]["id"])["metrics"] == template.evaluation(store)["metrics"]
    # Labels in A are A's only.
    _label(store, pa, a, 2)
    assert len(store.labels(pa)) == 2 and store.labels(pb) == [] and store.labels(template.project_id) == []
    assert all(c["label"] is None for c in pool.candidates(store, pb, b))
    # A cannot write into B's copy nor into the template, and each refusal is audited.
    key = pool.candidates(store, pb, b)[0]["key"]
    for target in (pb, template.project_id):
        with pytest.raises(Forbidden) as exc:
            pool.set_label(store, target, key, "seven", a)
        assert exc.value.key == "forbidden_demo"
        refusal = [e for e in store.audit_events(target) if e["action"] == "forbidden"][-1]
        assert refusal["actor"] == "demo" and refusal["detail"]["demo"] is True
    assert store.labels(pb) == []
    # Who sees what: a demo session its copy; an account the real projects, never a sandbox.
    assert [p["id"] for p in projects.visible_projects(store, a)] == [pa]
    seen = {p["id"] for p in projects.visible_projects(store, ALICE)}
    assert template.project_id in seen and not seen & {pa, pb}
    assert projects.latest_project_id(store) not in (pa, pb)


def test_reset_gives_an_empty_copy_and_deletes_the_old_one_with_its_files(store):
    before = _template_files(store)
    _, a = _visitor(store)
    old = projects.open_demo(store, a)
    _label(store, old, a, 3)
    rid = runs.submit_run(store, old, "cpt", dict(FAST_RUN), a, start_worker=False)  # queued, never started
    old_model = Path(store.model(store.project(old)["base_model_id"])["path"])
    old_run = Path(store.run(rid)["out_dir"])
    assert old_model.is_dir() and old_run.is_dir()
    assert sandboxes.what_reset_loses(store, old) == {"labels": 3, "runs": 1, "groups": 0}
    new = sandboxes.reset_sandbox(store, a)
    assert new != old and projects.open_demo(store, a) == new
    assert store.labels(new) == [] and store.runs(new) == []
    assert store.project(old) is None and store.run(rid) is None and store.labels(old) == []
    assert not old_model.exists() and not old_run.exists()
    assert _template_files(store) == before  # the template's files are untouched
    reset = [e for e in store.audit_events(new) if e["action"] == "demo_reset"]
    assert reset[0]["detail"] == {"old_project": old, "labels": 3, "runs": 1, "groups": 0}
    assert any(e["action"] == "demo_sandbox_deleted" for e in store.audit_events(old))
    # An account has no sandbox to reset: refused and audited.
    with pytest.raises(Forbidden):
        sandboxes.reset_sandbox(store, ALICE)
    refusal = [e for e in store.audit_events() if e["action"] == "forbidden"][-1]
    assert refusal["actor"] == "alice" and refusal["detail"]["attempted"] == "reset_demo"


def test_a_deleted_copy_takes_its_model_caches_and_leaves_the_demos_shared_decoded_images(store):
    _, a = _visitor(store)
    pid = projects.open_demo(store, a)
    key = pool.candidates(store, pid, a)[0]["key"]
    try:
        assert similar.more_like_this(store, pid, key, a)  # its model's features of the pool, cached on disk
    finally:
        jobs.stop_spawned_workers()
    mid = store.project(pid)["base_model_id"]
    features = list(store.artifact_dir("pool_features").glob(f"m{mid}_d*"))
    assert len(features) == 1
    # A repair of the copy decodes the evaluation images into artifacts/pixels, keyed by the demo's own folder.
    ev = projects.project_summary(store, pid)["eval"]
    meta = BundleMeta.from_dict(store.model(mid)["meta"])
    pixels.eval_images(store, load_dataset(ev["path"], meta.class_names).subset(range(8)), meta)
    decoded = sorted(store.artifact_dir(pixels.PIXELS_DIR).glob("*.npy"))
    assert decoded
    assert sandboxes.reset_sandbox(store, a) != pid
    assert not any(f.exists() for f in features)
    assert sorted(store.artifact_dir(pixels.PIXELS_DIR).glob("*.npy")) == decoded  # the next copy reads them


def test_a_copy_with_a_repair_running_is_kept_until_the_repair_has_stopped(store):
    token, a = _visitor(store)
    pid = projects.open_demo(store, a)
    _label(store, pid, a, 2)
    rid = runs.submit_run(store, pid, "cpt", dict(FAST_RUN), a, start_worker=False)
    assert store.claim_next_run(os.getpid())["id"] == rid  # running, as a worker would have it
    accounts.sign_out(store, token)
    assert pid not in sandboxes.cleanup(store)
    assert store.project(pid) is not None and store.run(rid)["cancel_requested"] == 1  # asked to stop
    store.finish_run(rid, "cancelled")
    assert pid in sandboxes.cleanup(store)
    assert store.project(pid) is None


def test_cleanup_deletes_ended_and_old_copies_and_nothing_else(store):
    before = _template_files(store)
    mine = store.create_project("Alice's own", "alice")
    (_, live), (ended_token, ended), (_, aged) = _visitor(store), _visitor(store), _visitor(store)
    p_live, p_ended, p_aged = (projects.open_demo(store, u) for u in (live, ended, aged))
    accounts.sign_out(store, ended_token)
    with sqlite3.connect(store.db_path) as con:  # made longer ago than BIASREPAIR_DEMO_SANDBOX_HOURS
        con.execute("UPDATE projects SET created_at = '2026-01-01T00:00:00Z' WHERE id = ?", (p_aged,))
    deleted = sandboxes.cleanup(store)
    assert p_ended in deleted and p_aged in deleted and p_live not in deleted
    assert store.project(p_live) is not None and store.project(mine) is not None
    t = sandboxes.template(store)
    assert store.project(t.project_id) is not None and t.ready(store)
    assert _template_files(store) == before
    # The visitor whose copy was too old gets a fresh one on the next page.
    assert projects.open_demo(store, aged) not in (p_aged, p_live)
    # A copy is old after BIASREPAIR_DEMO_SANDBOX_HOURS even with its session alive.
    assert sandboxes.cleanup(store, now=time.time() + 3600 * settings.DEMO_SANDBOX_HOURS.get() + 60)


def test_a_demo_session_is_still_refused_approve_export_and_roles_and_each_is_audited(store):
    _, a = _visitor(store)
    pid = projects.open_demo(store, a)
    rid = make_tradeoff_run(store, pid)
    for call, action in (
        (lambda: decisions.approve_run(store, rid, "looks fine", a), "approve"),
        (lambda: decisions.export_bytes(store, rid, a), "export"),
        (lambda: accounts.set_roles(store, a, "bob", ["curator", "approver"]), "manage_users"),
    ):
        with pytest.raises(Forbidden):
            call()
        refusal = [e for e in store.audit_events() if e["action"] == "forbidden" and e["actor"] == "demo"][-1]
        assert refusal["detail"]["attempted"] == action
    assert store.run(rid)["decision"] is None and store.user_row("bob")["roles"] == "curator"


def test_a_copy_that_would_pass_the_disk_budget_is_refused_and_leaves_nothing(store, monkeypatch):
    _, a = _visitor(store)
    n_projects, n_models = len(store.projects()), len(list((store.artifacts / "models").iterdir()))
    monkeypatch.setenv(settings.STORE_BUDGET_MB.name, "1")
    with pytest.raises(BudgetError):
        projects.open_demo(store, a)
    assert len(store.projects()) == n_projects
    assert len(list((store.artifacts / "models").iterdir())) == n_models


def test_the_demo_is_built_in_the_background_when_the_server_starts(home, monkeypatch):
    monkeypatch.setenv(settings.DEMO_PREBUILD.name, "1")
    at = AppTest.from_file(APP, default_timeout=60).run()  # the sign-in page: nobody has opened the demo
    assert not at.exception
    assert Store(home).pending_tasks("open_demo")  # queued or under way; the page did not wait for it


def test_two_demo_visitors_in_the_app_get_their_own_copies_and_reset_asks_first(store, monkeypatch):
    monkeypatch.setenv("BIASREPAIR_HOME", str(store.home))
    visitors = []
    for _ in range(2):
        at = AppTest.from_file(APP, default_timeout=120).run()
        at.button(key="open_demo").click().run()
        assert not at.exception, [e.value for e in at.exception]
        visitors.append(at)
    one, two = visitors
    p1, p2 = one.session_state["project_id"], two.session_state["project_id"]
    assert p1 != p2 and store.project(p1)["sandbox_of"] == store.project(p2)["sandbox_of"]
    user = accounts.user_for(store, one.session_state["auth_token"])
    _label(store, p1, user, 2)
    two.switch_page("views/counterexamples.py").run()
    assert not two.exception and store.labels(p2) == []
    # Reset: first a confirmation saying what goes; "Keep my work" keeps it.
    one.button(key="demo_reset").click().run()
    warning = " ".join(w.value for w in one.warning)
    assert "labels (2), repairs (0) and named groups (0)" in warning
    one.button(key="demo_reset_keep").click().run()
    assert one.session_state["project_id"] == p1 and len(store.labels(p1)) == 2
    one.button(key="demo_reset").click().run()
    one.button(key="demo_reset_go").click().run()
    assert not one.exception, [e.value for e in one.exception]
    p3 = one.session_state["project_id"]
    assert p3 not in (p1, p2) and store.labels(p3) == [] and store.project(p1) is None
    assert "A fresh copy of the demo is open." in [s.value for s in one.success]
    assert store.project(p2) is not None and two.session_state["project_id"] == p2
