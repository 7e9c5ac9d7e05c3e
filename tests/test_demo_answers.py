"""The demo model's answers kept beside the built demo (core/app/demo_answers.py): a second store that opens the
same build reads them instead of predicting 7,000 images again, with the same numbers as predicting them."""

from __future__ import annotations

import numpy as np
import pytest

from core.app import compute, prediction_tasks
from core.app.demo_answers import ANSWERS_DIR, EVAL_FILE, DemoAnswers, answers_key
from core.app.evaluation import reported_rows
from core.app.store import Store
from core.app.stored_models import stored_bundle
from core.engine.inference import evaluate_bundle
from tests.wb_helpers import ALICE, demo_store, seed_demo_cache


def test_a_second_store_reads_the_kept_answers_and_gets_the_numbers_of_predicting(tmp_path, demo_dir, monkeypatch):
    first, p1 = demo_store(tmp_path / "first", demo_dir)
    kept = [d for d in (demo_dir / ANSWERS_DIR).iterdir() if (d / EVAL_FILE).is_file()]
    assert len(kept) == 1  # one key: the same build, device and code

    # The kept answers are what predicting gives.
    mid, did = p1["base_model_id"], p1["eval_dataset_id"]
    bundle = stored_bundle(first, mid)
    fresh = evaluate_bundle(bundle, reported_rows(first.dataset(did)["path"], tuple(bundle.meta.class_names)))
    answers = DemoAnswers(kept[0])
    preds, conf = answers.evaluation(len(fresh.predictions))
    assert (preds == fresh.predictions).all() and conf == pytest.approx(fresh.confidences, abs=1e-6)

    # A second store opens the demo in this process with no prediction at all, and gets the same numbers.
    def no_prediction(*a, **k):
        raise AssertionError("predicted again")

    monkeypatch.setattr(prediction_tasks, "evaluate_bundle", no_prediction)
    monkeypatch.setattr(prediction_tasks, "predict_dataset", no_prediction)
    home = tmp_path / "second"
    seed_demo_cache(home, demo_dir)
    second = Store(home)
    p2 = second.project(compute.open_demo(second, {}, ALICE)["project_id"])  # the task, in this process
    e1 = first.evaluation(mid, did)
    e2 = second.evaluation(p2["base_model_id"], p2["eval_dataset_id"])
    assert e2["metrics"] == e1["metrics"] == fresh.metrics
    assert (np.load(e2["predictions_path"])["predictions"] == fresh.predictions).all()
    pool1, pool2 = (s.datasets(p["id"], role="pool")[0]["id"] for s, p in ((first, p1), (second, p2)))
    files = [
        next((s.artifacts / "pool_predictions").glob(f"m*_d{d}_n*.npz")) for s, d in ((first, pool1), (second, pool2))
    ]
    assert (np.load(files[0])["predictions"] == np.load(files[1])["predictions"]).all()


def test_kept_answers_of_another_length_or_unreadable_are_not_used(tmp_path):
    answers = DemoAnswers.of(tmp_path, "k")
    assert answers.evaluation(3) is None  # nothing kept yet
    ev, pool = tmp_path / "e.npz", tmp_path / "p.npz"
    np.savez(ev, predictions=np.array([0, 1, 2]), confidences=np.array([0.5, 0.6, 0.7]))
    np.savez(pool, predictions=np.array([1]), confidences=np.array([0.9]))
    answers.keep(ev, pool)
    assert answers.evaluation(3)[0].tolist() == [0, 1, 2]
    assert answers.evaluation(4) is None and answers.pool(2) is None  # another number of rows: predict again
    (answers.folder / EVAL_FILE).write_bytes(b"not an npz")
    assert answers.evaluation(3) is None


def test_the_key_changes_with_every_input():
    base = ({"model.safetensors": "a"}, "eval", ["x.png", "y.png"], "pool", "cpu")
    keys = {answers_key(*base)}
    for i, other in enumerate(({"model.safetensors": "b"}, "eval2", ["y.png", "x.png"], "pool2", "cuda")):
        changed = list(base)
        changed[i] = other
        keys.add(answers_key(*changed))
    assert len(keys) == 6
