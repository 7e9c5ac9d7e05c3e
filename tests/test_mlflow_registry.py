"""Approving a repair registers it in an MLflow model registry, read back here with mlflow's own client
(docs/FORMATS.md): a model version with the merged weights, the model card, δ, the audit rows, the metrics and
tags for method, strength and approver; the alias moved on approval and back on a rollback; an unreachable
registry never blocks an approval (audited, queued again)."""

from __future__ import annotations

import json

import mlflow
import pytest

from core.app import decisions, jobs, projects, registry, runs
from core.app.i18n import translator
from core.app.mlflow_registry import MODEL_ID_TAG, run_metric_values
from core.app.safe_text import md
from core.errors import UserError
from tests.run_fixtures import make_tradeoff_run
from tests.test_pages import _app, _texts
from tests.wb_helpers import ALICE, ANN, MIA, ROOT_ADMIN, make_accounts, open_demo_here, wait_for


def _updates(store, pid) -> list[dict]:
    return [e for e in store.audit_events(pid) if e["action"] in (registry.DONE, registry.FAILED)]


@pytest.fixture()
def project(home, monkeypatch):
    monkeypatch.delenv(registry.URI_ENV, raising=False)  # the default: a SQLite store under the workbench home
    store = projects.get_store(home)
    make_accounts(store)
    pid = open_demo_here(store, ALICE)
    return store, pid, make_tradeoff_run(store, pid)


def test_an_approval_registers_the_repair_and_a_rollback_moves_the_alias_back(project):
    store, pid, rid = project
    assert registry.queue_sync(store, pid, MIA) is False  # off by default
    admin = _app("views/admin.py", user="root")  # the admin's button turns it on
    assert "Approved repairs are registered in MLflow." not in _texts(admin)
    admin.button(key="registry_toggle").click().run()
    assert registry.registry_enabled(store) and "Approved repairs are registered in MLflow." in _texts(admin)
    try:
        decisions.approve_run(store, rid, "fixes the red twos", MIA, override=True, reason="within reason")
        done = wait_for(lambda: _updates(store, pid), timeout=600)[-1]
        assert done["action"] == registry.DONE, done["detail"]
        name = registry.model_name(store.project(pid))
        for lang in ("en", "ja"):  # Review says where the approved model now is, in the page's language
            review = _app("views/review.py", lang=lang, user="mia")
            said = translator(lang)("review_registry_done", model=name, version=1, alias=registry.ALIAS)
            assert md(said) in _texts(review), lang  # as markdown source: md() escapes what could become a link
        decisions.rollback(store, pid, ANN, "back to the original")
        wait_for(lambda: len(_updates(store, pid)) == 2, timeout=600)
    finally:
        jobs.stop_spawned_workers()
    uri = registry.tracking_uri(store)
    assert uri.startswith("sqlite:///") and str(store.home) in uri
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = registry.model_name(store.project(pid))
    repaired, base = (client.get_model_version(name, str(v)) for v in (1, 2))
    assert repaired.tags[MODEL_ID_TAG] == str(store.run(rid)["repaired_model_id"])
    assert (
        repaired.tags["method"] == "cpt" and repaired.tags["strength"] == "1000" and repaired.tags["approver"] == "mia"
    )
    assert base.tags[MODEL_ID_TAG] == str(store.project(pid)["base_model_id"])
    assert int(client.get_model_version_by_alias(name, registry.ALIAS).version) == 2  # back on the original model
    assert [e["detail"]["version"] for e in _updates(store, pid)] == [1, 2]

    run = client.get_run(repaired.run_id)
    assert run.data.metrics == pytest.approx(run_metric_values(runs.run_result(store, rid)))
    assert len(run.data.metrics) == 7
    files = {f.path for d in ("model", "audit") for f in client.list_artifacts(repaired.run_id, d)}
    assert {"model/model.json", "model/model.safetensors", "model/README.md", "audit/audit_rows.json"} <= files
    card = client.download_artifacts(repaired.run_id, "model/README.md", str(store.home / "dl"))
    assert open(card, encoding="utf-8").read() == decisions.model_card(store, rid)
    audit = client.download_artifacts(repaired.run_id, "audit/audit_rows.json", str(store.home / "dl"))
    assert "approved" in [e["action"] for e in json.load(open(audit, encoding="utf-8"))]


def test_an_unreachable_registry_never_blocks_an_approval_and_is_retried(project, monkeypatch):
    store, pid, rid = project
    jobs.stop_spawned_workers()  # the demo's worker knows the old environment: the next one reads the URI below
    monkeypatch.setenv(registry.URI_ENV, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    registry.set_registry_enabled(store, ROOT_ADMIN, True)
    try:
        decisions.approve_run(store, rid, "fine", MIA, override=True, reason="within reason")
        assert store.project(pid)["active_model_id"] == store.run(rid)["repaired_model_id"]  # approved at once
        failed = wait_for(lambda: _updates(store, pid), timeout=600)[-1]
        assert failed["action"] == registry.FAILED and failed["detail"]["uri"] == "http://127.0.0.1:9"
        assert registry.retry_if_failed(store, pid, MIA) == failed  # said; queued again after a while
        monkeypatch.setattr(registry, "RETRY_AFTER_S", 0)
        assert registry.retry_if_failed(store, pid, MIA) == failed
        again = wait_for(lambda: len(_updates(store, pid)) == 2 and _updates(store, pid), timeout=600)
        assert again[-1]["action"] == registry.FAILED
    finally:
        jobs.stop_spawned_workers()


def test_only_an_admin_turns_the_registry_on(project):
    store, _, _ = project
    with pytest.raises(UserError) as exc:
        registry.set_registry_enabled(store, MIA, True)
    assert exc.value.key == "forbidden" and not registry.registry_enabled(store)
    registry.set_registry_enabled(store, ROOT_ADMIN, True)
    assert registry.registry_enabled(store) and store.audit_events()[-1]["action"] == "mlflow_registry_on"
