"""The service layer the pages call: demo, uploads (good and bad), labels, runs, decisions, report."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core.app import (
    compute,
    decisions,
    evaluation,
    history,
    interpolated_runs,
    jobs,
    naming,
    pool,
    projects,
    runs,
    suspected_groups,
    uploads,
    verdict,
)
from core.app.store import Store
from core.app.worker import execute_run
from core.engine.gallery_ranking import REPEAT_PENALTY
from core.engine.inference import DiskImages, normalize, predict_logits
from core.engine.request import RunRequest
from core.engine.weight_interpolation import interpolated_model
from core.errors import UserError
from core.formats.bundle import bundle_from_files, read_bundle_zip
from core.formats.datasets import ImageDataset, Record, load_pixels
from tests.run_fixtures import make_tradeoff_run
from tests.wb_helpers import (
    ALICE,
    BOB,
    FAST_RUN,
    MIA,
    label_top,
    make_zip,
    no_attribute_project,
    open_demo_here,
    pool_truth,
    seed_demo_cache,
)


@pytest.fixture()
def store(tmp_path, demo_dir) -> Store:
    home = tmp_path / "home"
    seed_demo_cache(home, demo_dir)
    return Store(home)


@pytest.fixture()
def demo(store) -> int:
    """The demo opened with its task run in this process; test_open_demo_evaluates_and_finds_the_bias opens it
    through the task worker."""
    return open_demo_here(store, ALICE)


def _run_now(store, project_id, config=FAST_RUN) -> int:
    """Queue a run and execute it in this process (the worker process is tested in test_jobs)."""
    rid = runs.submit_run(store, project_id, "cpt", dict(config), ALICE, start_worker=False)
    claimed = store.claim_next_run(os.getpid())
    assert claimed["id"] == rid
    assert execute_run(store, claimed) == "done", store.run(rid)["error"]
    return rid


def test_open_demo_evaluates_and_finds_the_bias(store):
    demo = projects.open_demo(store, ALICE)  # by the task worker, as the page opens it
    s = projects.project_summary(store, demo)
    assert s["project"]["is_demo"] and s["eval"] and s["pool"]
    m = evaluation.evaluate_active(store, demo)
    assert 0 <= m["worst_group_accuracy"] < m["accuracy"]
    f = evaluation.finding(m)
    assert f["accuracy_pct"] < f["other_pct"]
    assert projects.open_demo(store, BOB) == demo  # reused, labels and runs stay
    actions = [e["action"] for e in store.audit_events(demo)]
    assert actions[:4] == ["open_demo", "upload_model", "upload_eval", "upload_pool"]
    model_event = store.audit_events(demo)[1]["detail"]
    assert len(model_event["sha256"]["model.safetensors"]) == 64


def test_candidates_are_ranked_and_never_carry_the_pool_labels(store, demo):
    cands = pool.candidates(store, demo)
    assert len(cands) == store.dataset(store.project(demo)["pool_dataset_id"])["n_items"]
    assert all(c["label"] is None for c in cands)
    order = [c["score"] - REPEAT_PENALTY * c["round"] for c in cands]
    assert order == sorted(order, reverse=True)
    # Likely counterexamples first: the first pages of the gallery (50 images) are nearly all real
    # mistakes of the model, far more than the pool as a whole ...
    truth = pool_truth(store, demo)
    wrong = [c["predicted"] != truth[c["path"]] for c in cands]
    assert sum(wrong[:50]) / 50 > 0.9 > 0.6 > sum(wrong) / len(wrong)
    # ... and the first eight cover several (attribute, answer) groups, not one mistake eight times.
    # (The two-colour demo has 20 such cells, about half of them suspicious; the old ten-colour demo
    # had 200 and asked for 6.)
    assert len({(c["attribute"], c["predicted"]) for c in cands[:8]}) >= 4


def test_labels_relabel_remove_and_audit(store, demo):
    keys = label_top(store, demo, 3)
    names = projects.project_summary(store, demo)["class_names"]
    pool.set_label(store, demo, keys[0], names[0], BOB)
    pool.set_labels(store, demo, keys[1:], names[1], BOB)
    pool.remove_label(store, demo, keys[2], BOB)
    chosen = pool.chosen_set(store, demo)
    assert [(c["key"], c["label"]) for c in chosen] == [(keys[0], names[0]), (keys[1], names[1])]
    per_class, per_attr = pool.chosen_counts(store, demo)
    assert sum(per_class.values()) == sum(per_attr.values()) == 2
    with pytest.raises(UserError, match="unknown label"):
        pool.set_label(store, demo, keys[0], "banana", BOB)
    actions = [e["action"] for e in store.audit_events(demo)]
    assert actions.count("label_added") == 3 and "label_changed" in actions and "label_removed" in actions


def test_single_image_uploads_join_the_gallery(store, demo, demo_dir):
    png = next((demo_dir / "pool" / "images").glob("*.png")).read_bytes()
    assert uploads.upload_single_images(store, demo, [("mine.png", png)], "red", ALICE) == 1
    mine = [c for c in pool.candidates(store, demo) if c["source"] == "uploads"]
    assert len(mine) == 1 and mine[0]["attribute"] == "red"
    pool.set_label(store, demo, mine[0]["key"], "seven", ALICE)
    assert pool.chosen_set(store, demo)[0]["label"] == "seven"


# ---- bad uploads: a clear UserError, and nothing already saved is touched -----------------------
def _bundle_files(demo_dir) -> dict[str, bytes]:
    return {n: (demo_dir / "model" / n).read_bytes() for n in ("model.json", "model.safetensors")}


def _bad_model_zip(demo_dir, kind: str) -> bytes:
    files = _bundle_files(demo_dir)
    meta = json.loads(files["model.json"])
    if kind == "corrupt":
        files["model.safetensors"] = b"\x00garbage" * 20
    elif kind == "architecture":
        meta["architecture"] = "resnet9000"
    elif kind == "num_classes":
        meta["num_classes"] = 5
        meta["class_names"] = meta["class_names"][:5]
    files["model.json"] = json.dumps(meta).encode()
    return make_zip(files)


def _eval_zip(demo_dir, manifest: str, extra: dict[str, bytes] | None = None) -> bytes:
    img = next((demo_dir / "eval" / "images").glob("*.png")).read_bytes()
    return make_zip({"manifest.csv": manifest.encode(), "images/a.png": img, **(extra or {})})


BAD_UPLOADS = {
    "corrupt safetensors": ("model", "corrupt", "corrupt"),
    "wrong architecture": ("model", "architecture", "unknown architecture 'resnet9000'"),
    "num_classes mismatch": ("model", "num_classes", "num_classes"),
    "missing image": ("eval", "path,label,attribute\nimages/a.png,one,red\nimages/nope.png,two,red\n", "missing"),
    "unknown label": ("eval", "path,label,attribute\nimages/a.png,banana,red\n", "unknown label 'banana'"),
    "zip with ../x": ("pool", {"../x.png": b"x"}, "climbs out"),
    "non-image file": ("pool", {"a.png": b"this is text, not a picture"}, "not a readable PNG or JPEG"),
    "program in pool": ("pool", {"run.exe": b"MZ"}, "not PNG/JPEG"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_uploads_are_refused_clearly_and_keep_what_was_saved(store, demo, demo_dir, case):
    label_top(store, demo, 2)
    before = (store.projects(), store.datasets(demo), pool.chosen_set(store, demo), store.project(demo))
    kind, spec, message = BAD_UPLOADS[case]
    with pytest.raises(UserError, match=message):
        if kind == "model":
            uploads.upload_model_zip(store, _bad_model_zip(demo_dir, spec), "bad.zip", ALICE)
        elif kind == "eval":
            uploads.upload_eval_zip(store, demo, _eval_zip(demo_dir, spec), "bad.zip", ALICE)
        else:
            uploads.upload_pool_zip(store, demo, make_zip(spec), "bad.zip", ALICE)
    after = (store.projects(), store.datasets(demo), pool.chosen_set(store, demo), store.project(demo))
    assert after == before


def test_pickled_module_and_oversized_zip_are_refused(store, demo, monkeypatch):
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buf)
    with pytest.raises(UserError, match="pickled objects"):
        uploads.upload_model_weights(
            store, buf.getvalue(), "model.pt", "small_cnn", ["a", "b"], [3, 28, 28], [0, 0, 0], [1, 1, 1], ALICE
        )
    monkeypatch.setattr(uploads, "MAX_POOL_ZIP_BYTES", 1000)
    with pytest.raises(UserError, match="limit"):
        uploads.upload_pool_zip(store, demo, make_zip({"a.png": b"\x00" * 5000}), "big.zip", ALICE)
    assert len(store.projects()) == 1


def test_uploading_a_bundle_and_an_eval_zip(store, demo_dir):
    pid = uploads.upload_model_zip(store, make_zip(_bundle_files(demo_dir)), "mine.zip", ALICE)
    all_lines = (demo_dir / "eval" / "manifest.csv").read_text().splitlines()
    lines = all_lines[:1] + all_lines[1::12]  # a slice of about 330 images, both splits
    files = {"manifest.csv": "\n".join(lines).encode()}
    for line in lines[1:]:
        rel = line.split(",")[0]
        files[rel] = (demo_dir / "eval" / rel).read_bytes()
    eval_zip = make_zip(files)
    uploads.upload_eval_zip(store, pid, eval_zip, "eval.zip", ALICE)
    m = evaluation.evaluate_active(store, pid)
    assert m["accuracy"] > 0 and m["groups"]
    events = store.audit_events(pid)
    assert [e["action"] for e in events] == ["upload_model", "upload_eval"]
    assert len(events[1]["detail"]["sha256"]) == 64


# ---- verdict -------------------------------------------------------------------------------------
def _metrics(acc_before, acc_after, wg_before, wg_after, kept, changed=10):
    return {
        "before": {"accuracy": acc_before, "worst_group_accuracy": wg_before},
        "after": {"accuracy": acc_after, "worst_group_accuracy": wg_after},
        "kept_decisions": kept,
        "changed_predictions": changed,
    }


@pytest.mark.parametrize(
    ("m", "kind", "reasons"),
    [
        (_metrics(0.80, 0.82, 0.30, 0.50, 0.97), "improved", []),
        (_metrics(0.80, 0.77, 0.30, 0.50, 0.97), "flagged", ["accuracy_drop"]),
        (_metrics(0.80, 0.85, 0.30, 0.50, 0.85), "flagged", ["kept_low"]),
        (_metrics(0.80, 0.80, 0.30, 0.30, 0.99), "no_gain", []),
        (_metrics(0.50, 0.70, 0.00, 0.00, 0.91), "partial", []),
        (_metrics(0.80, 0.805, 0.30, 0.30, 0.99), "no_gain", []),
        (_metrics(0.80, 0.80, 0.30, 0.30, 1.00, changed=0), "unchanged", []),
    ],
)
def test_verdict_do_no_harm_rule(m, kind, reasons):
    v = verdict.judge(m)
    assert (v.kind, list(v.reasons)) == (kind, reasons)


# ---- a whole repair: approve, export, roll back, report, history -------------------------------
def test_repair_approve_export_rollback_report_history(store, demo, monkeypatch):
    label_top(store, demo, 8)
    rid = _run_now(store, demo)
    m = runs.run_metrics(store, rid)
    assert m["before"]["accuracy"] == pytest.approx(evaluation.evaluate_active(store, demo)["accuracy"])
    assert len(store.progress(rid)) > 0
    changed = runs.changed_predictions(store, rid)
    assert len(changed) == m["changed_predictions"]
    assert sum(c["fixed"] for c in changed) == m["n_fixed"]

    # A flagged run needs the override and a reason; force the verdict to flag it.
    monkeypatch.setattr(verdict, "MIN_KEPT_DECISIONS", 1.01)
    with pytest.raises(UserError, match="override"):
        decisions.approve_run(store, rid, "looks fine", MIA)
    with pytest.raises(UserError, match="override"):
        decisions.approve_run(store, rid, "looks fine", MIA, override=True, reason=" ")
    mid = decisions.approve_run(store, rid, "ok for pilot", MIA, override=True, reason="pilot only")
    project = store.project(demo)
    assert project["active_model_id"] == mid != project["base_model_id"]

    data = decisions.export_bytes(store, rid, MIA)
    decisions.record_export(store, rid, data, MIA)
    bundle = bundle_from_files(read_bundle_zip(data, "x.zip"), "x.zip")
    assert bundle.meta.class_names == projects.project_summary(store, demo)["class_names"]

    with pytest.raises(UserError, match="write why"):
        decisions.rollback(store, demo, MIA, "  ")  # a roll-back needs a reason
    assert store.project(demo)["active_model_id"] == mid
    assert decisions.rollback(store, demo, MIA, "pilot over") == rid
    assert store.project(demo)["active_model_id"] == project["base_model_id"]
    back = [e for e in store.audit_events(demo) if e["action"] == "rolled_back"][-1]
    assert back["detail"]["reason"] == "pilot over" and back["detail"]["run_id"] == rid
    with pytest.raises(UserError):
        decisions.rollback(store, demo, MIA, "pilot over")

    pts = runs.tradeoff_points(store, demo)
    assert [p["run_id"] for p in pts] == [rid] and pts[0]["decision"] == "approved"

    events = store.audit_events(demo)
    approved = next(e for e in events if e["action"] == "approved")
    assert approved["detail"]["override"] is True and approved["detail"]["reason"] == "pilot only"
    actions = [e["action"] for e in events]
    for needed in ("run_queued", "run_done", "approved", "exported", "rolled_back", "label_added"):
        assert needed in actions
    frame = history.history_frame(store, demo)
    assert list(frame["action"]) == actions
    assert history.history_csv(frame).decode().splitlines()[0] == "id,when,who,project,action,details"


def test_report_is_self_contained(store, demo):
    from core.app import charts
    from core.app.i18n import translator
    from core.app.report import build_report

    label_top(store, demo, 4)
    rid = _run_now(store, demo)
    t = translator("ja")
    m = runs.run_metrics(store, rid)
    html = build_report(
        title=t("report_title", run=rid),
        run=store.run(rid),
        metrics=m,
        verdict_text="VERDICT-TEXT",
        figures=[("bars", charts.old_new_bars(m["before"], m["after"], t))],
        changed=runs.changed_predictions(store, rid),
        decision_lines=[],
        t=t,
        lang="ja",
    )
    assert "VERDICT-TEXT" in html and "偏り修復レポート" in html
    assert "<script src=" not in html  # nothing is fetched: it opens offline
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js inlined
    assert "data:image/png;base64," in html
    Path(store.home / "report.html").write_text(html, encoding="utf-8")


def test_reject_and_cancel_queued(store, demo):
    label_top(store, demo, 2)
    rid = runs.submit_run(store, demo, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    runs.cancel_run(store, rid, ALICE)
    assert store.run(rid)["status"] == "cancelled"
    assert store.claim_next_run(os.getpid()) is None
    decisions.reject_run(store, rid, "not needed", MIA)
    assert store.run(rid)["decision"] == "rejected"


def test_methods_that_need_typical_images_get_the_pool(store, demo):
    label_top(store, demo, 4)
    unl = pool.unlabeled_pool(store, demo, limit=100)
    assert len(unl) == 100 and all(r.label == 0 for r in unl.records)
    rid = runs.submit_run(store, demo, "last_layer", {"max_steps": 10, "min_steps": 2}, ALICE, start_worker=False)
    assert execute_run(store, store.claim_next_run(os.getpid())) == "done", store.run(rid)["error"]
    assert runs.run_metrics(store, rid)["method"] == "last_layer"


def test_reference_images_reach_the_repair_and_never_the_pool(store, demo):
    """The demo ships typical reference images; a run's request names them (not the pool), the
    worker anchors on them and reports the kept estimate, and the reported numbers exclude them."""
    s = projects.project_summary(store, demo)
    assert s["reference"]["n_items"] == 512 and s["reference"]["role"] == "reference"
    assert "upload_reference" in [e["action"] for e in store.audit_events(demo)]
    label_top(store, demo, 4)
    rid = _run_now(store, demo)
    request = RunRequest.from_json(store.run(rid)["request_json"])
    assert request.data.reference_root == s["reference"]["path"]
    assert request.data.reference_items != request.data.unlabeled_items
    m = runs.run_metrics(store, rid)
    assert m["reference_agreement"] is not None and 0.0 <= m["reference_agreement"] <= 1.0
    assert m["after"]["n"] == evaluation.evaluate_active(store, demo)["n"]  # reference rows are not reported


def test_a_project_without_reference_images_runs_without_the_anchor(store, demo):
    store.set_project(demo, reference_dataset_id=None)
    label_top(store, demo, 4)
    m = runs.run_metrics(store, _run_now(store, demo))
    assert m["reference_agreement"] is None  # nothing to anchor on: not the candidate pool


# ---- no attribute column: suspected groups rank the gallery, a named group reaches the runs ---------
def _demo_pool_truth(demo_dir) -> dict[str, str]:
    with open(demo_dir / "pool" / "manifest.csv", encoding="utf-8") as fh:
        return {r["path"]: r["label"] for r in csv.DictReader(fh)}


def test_without_attributes_the_gallery_suggests_and_a_named_group_is_the_attribute_of_later_repairs(store, demo_dir):
    """One project without attributes (its upload, evaluation and discovery are the costly part, made
    once): first the gallery's suggestion order, then a suspected group named by a person."""
    pid = no_attribute_project(store, demo_dir)
    truth = _demo_pool_truth(demo_dir)
    _gallery_ranks_suggested_images_first(store, pid, truth)
    _a_named_group_is_the_attribute_of_later_repairs(store, pid, truth)


def _gallery_ranks_suggested_images_first(store, pid: int, truth: dict[str, str]) -> None:
    assert not suspected_groups.has_attributes(store, pid)
    cands = pool.candidates(store, pid)
    assert len(cands) == store.dataset(store.project(pid)["pool_dataset_id"])["n_items"]
    assert {c["ranking"] for c in cands} == {"discovery"} and all(c["label"] is None for c in cands)
    wrong = [c["predicted"] != truth[c["path"]] for c in cands]
    # Most of the first eight are real mistakes of the model, far more than the pool as a whole,
    # each near a suspected group, and they cover several classes' groups.
    assert sum(wrong[:8]) >= 6 and sum(wrong) / len(wrong) < 0.5
    assert all(c["group"] is not None for c in cands[:8])
    assert len({c["group_label"] for c in cands[:8]}) >= 4


def _a_named_group_is_the_attribute_of_later_repairs(store, pid: int, truth: dict[str, str]) -> None:
    top = suspected_groups.project_groups(store, pid)[0]
    old_eval = store.project(pid)["eval_dataset_id"]
    before = evaluation.evaluate_active(store, pid)
    assert {g["attribute"] for g in before["groups"]} == {"(none)"} and evaluation.finding(before) is None
    naming.name_group(store, pid, top["id"], "red corner", ALICE)
    m = evaluation.evaluate_active(store, pid)
    cell = next(g for g in m["groups"] if g["attribute"] == "red corner")
    assert (cell["label"], cell["count"]) == (top["label_name"], top["size"])
    assert evaluation.finding(m)["attribute"] == "red corner"
    assert m["worst_group_accuracy"] <= top["accuracy"] + 1e-9
    assert store.evaluation(store.project(pid)["base_model_id"], old_eval)  # the old numbers stay
    for c in pool.candidates(store, pid)[:8]:
        pool.set_label(store, pid, c["key"], truth[c["path"]], ALICE)
    rid = _run_now(store, pid)
    metrics = runs.run_metrics(store, rid)
    assert any(g["attribute"] == "red corner" for g in metrics["before"]["groups"])
    assert any(g["attribute"] == "red corner" for g in metrics["after"]["groups"])
    assert metrics["before"]["worst_group_accuracy"] == pytest.approx(m["worst_group_accuracy"])


def test_alpha_grid_gives_way_to_other_tasks_then_fills_the_slider(store, demo):
    """The background computation of the Review slider's values stops as soon as another task
    waits (so a person's request is never stuck behind it) and otherwise computes every value."""
    jobs.stop_spawned_workers()  # no worker may claim the waiting task below
    rid = make_tradeoff_run(store, demo)
    run = store.run(rid)
    assert interpolated_runs.missing(run) == interpolated_runs.GRID and len(interpolated_runs.GRID) == 20
    other = store.submit_task("evaluate", {"model_id": 1, "dataset_id": 1}, "tester", demo)
    assert compute.alpha_grid(store, {"run_id": rid}, "tester") == {"complete": False}
    assert interpolated_runs.missing(run) == interpolated_runs.GRID
    store.finish_task(other, "failed", error="not served in this test")
    assert compute.alpha_grid(store, {"run_id": rid}, "tester") == {"complete": True}
    assert interpolated_runs.missing(run) == []
    # make_tradeoff_run's model/ is the base model, so every α gives the old model's answers.
    zero = json.loads(interpolated_runs.preview_file(run, 0.0).read_text())
    half = json.loads(interpolated_runs.preview_file(run, 0.5).read_text())
    assert zero["after"] == half["after"] and half["metrics"]["changed_predictions"] == 0


def test_alpha_preview_reads_cached_pixels_and_answers_as_the_whole_set_would(store, demo, monkeypatch):
    """The α preview streams the evaluation rows from a decoded-pixels cache in the store,
    so a fresh task worker (or another run of the same rows) does not decode them again, and its
    answers are those of the interpolated model on the whole set held as one tensor."""
    jobs.stop_spawned_workers()
    label_top(store, demo, 6)
    rid = _run_now(store, demo)
    run = store.run(rid)
    compute._PREVIEW_INPUTS.clear()
    compute.alpha_preview(store, {"run_id": rid, "alpha": 0.5}, "tester")
    half = json.loads(interpolated_runs.preview_file(run, 0.5).read_text())
    inp = compute._PREVIEW_INPUTS[(str(store.home), rid)]
    bundle, rows = inp["bundle"], runs.prediction_rows(store, rid)
    assert isinstance(inp["x"], DiskImages)  # read a batch at a time, not held as one tensor
    ds = ImageDataset(runs.eval_root(store, run), [Record(r["path"], r["label"]) for r in rows], [])
    whole = normalize(load_pixels(ds, bundle.meta.input_size), bundle.meta.mean, bundle.meta.std)
    model = interpolated_model(bundle.model, inp["repaired"], 0.5)
    expected = predict_logits(model, whole, torch.device("cpu")).argmax(1).tolist()
    assert half["after"] == expected and half["after"] != [r["before"] for r in rows]
    # One decoded copy of the evaluation set, made by the repair and read by the preview for its reported rows.
    cached = list(store.artifact_dir("pixels").glob("*.npy"))
    n_eval = store.dataset(store.project(demo)["eval_dataset_id"])["n_items"]
    assert len(cached) == 1 and np.load(cached[0], mmap_mode="r").shape == (n_eval, *bundle.meta.input_size)
    assert len(inp["x"]) == len(rows) < n_eval

    def no_decoding(*a, **k):
        raise AssertionError("the evaluation images were decoded again")

    compute._PREVIEW_INPUTS.clear()  # as a fresh task worker
    with monkeypatch.context() as m:
        m.setattr("core.engine.inference.iter_pixel_batches", no_decoding)
        compute.alpha_preview(store, {"run_id": rid, "alpha": 0.25}, "tester")
    assert interpolated_runs.preview_file(run, 0.25).is_file()

    cached[0].unlink()  # no room in the disk budget: decoded into a temporary file, nothing kept
    compute._PREVIEW_INPUTS.clear()
    monkeypatch.setenv("BIASREPAIR_STORE_BUDGET_MB", "1")
    compute.alpha_preview(store, {"run_id": rid, "alpha": 0.75}, "tester")
    assert interpolated_runs.preview_file(run, 0.75).is_file() and not list(store.artifact_dir("pixels").iterdir())
