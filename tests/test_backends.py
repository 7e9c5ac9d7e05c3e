"""The Ray backend gives the local backend's answers, and the workbench's runs go through it.

One local Ray instance with 2 CPUs for the whole file (``ray.init(num_cpus=2)``), shut down at the end.
Under pytest-xdist the whole file runs in one worker (the ``ray`` group of ``--dist loadgroup``): one
local Ray instance at a time, started once.
"""

from __future__ import annotations

import contextlib
import operator
import os
import sqlite3
import threading

import pytest
import torch

from core.app import jobs, runs
from core.app.rayruns import RayRuns
from core.app.store import Store
from core.app.worker import execute_run
from core.engine.backends import LocalBackend, RayBackend, backend_name, get_backend, start_local_ray
from core.engine.configs import make_config
from core.engine.repair import prepare_data
from core.engine.strength import CANDIDATES, choose_strength
from core.errors import UserError
from core.formats.bundle import load_bundle
from core.formats.datasets import load_dataset
from tests.optional import need
from tests.wb_helpers import ALICE, demo_store, label_top, open_demo_here, seed_demo_cache, wait_for

ray = need("ray")  # skips this file where ray is missing, except in CI

pytestmark = pytest.mark.xdist_group("ray")

CFG = {"max_steps": 30, "min_steps": 5}
LONG_RUN = {"strength": 1000.0, "max_steps": 5000, "min_steps": 5000, "stop_rule": "none"}


@pytest.fixture(scope="module")
def cluster():
    start_local_ray(num_cpus=2)  # ray.init(num_cpus=2), with this repository on the workers' path
    yield RayBackend()
    ray.shutdown()


def test_backend_setting(monkeypatch):
    monkeypatch.delenv("BIASREPAIR_BACKEND", raising=False)
    assert backend_name() == "local" and isinstance(get_backend(), LocalBackend)
    monkeypatch.setenv("BIASREPAIR_BACKEND", "ray")
    assert backend_name() == "ray" and backend_name("local") == "local"  # the flag wins over the variable
    with pytest.raises(UserError, match="unknown backend 'dask'"):
        backend_name("dask")


def test_map_keeps_the_order_of_the_tasks(cluster):
    # fn(shared, task) must be importable by the workers: operator.sub is, a function of this test file is not
    tasks = list(range(20))
    assert (
        cluster.map(operator.sub, tasks, 100)
        == LocalBackend().map(operator.sub, tasks, 100)
        == [100 - t for t in tasks]
    )


def test_auto_on_ray_gives_the_local_answer(cluster, demo_dir):
    b = load_bundle(demo_dir / "model")
    names = b.meta.class_names
    ce = load_dataset(demo_dir / "counterexamples", names).subset(range(16))
    data = prepare_data(b, ce, load_dataset(demo_dir / "eval", names))
    cfg = make_config("cpt", CFG)
    local = choose_strength(b, data, "cpt", cfg, torch.device("cpu"), seed=3).to_json()
    typed = []
    on_ray = choose_strength(
        b, data, "cpt", cfg, torch.device("cpu"), seed=3, backend=cluster, progress=typed.append
    ).to_json()
    events = [e.to_json() for e in typed]
    assert on_ray["chosen"] == local["chosen"] and on_ray["code"] == local["code"]
    assert on_ray["runs"] == local["runs"] and on_ray["skipped"] == local["skipped"]
    assert len(on_ray["candidates"]) == len(local["candidates"])
    for r, q in zip(on_ray["candidates"], local["candidates"], strict=True):
        assert r["strength"] == q["strength"] and r["safe"] == q["safe"] and r["stopped_early"] == q["stopped_early"]
        assert r["cv_accuracy"] == pytest.approx(q["cv_accuracy"]) and r["agreement"] == pytest.approx(q["agreement"])
    assert {e["strength"] for e in events if "strength" in e} <= set(CANDIDATES)


def test_benchmark_grid_on_ray_gives_the_local_rows(cluster, tmp_path):
    from core.bench.benchmark import run_benchmark
    from core.bench.suites import load_suite

    suite = load_suite("photo", tmp_path / "suite")
    suite.load_pixels()
    kw = dict(auto=True, sweep=False, paper=False, device="cpu", max_steps=5, log=lambda s: None)
    local = run_benchmark(suite, [2], 2, ["cpt", "last_layer"], backend=LocalBackend(), **kw)
    on_ray = run_benchmark(suite, [2], 2, ["cpt", "last_layer"], backend=cluster, **kw)
    assert len(local) == 6  # 2 draws × (cpt, last_layer, cpt_auto)
    assert list(on_ray["method"]) == list(local["method"]) and list(on_ray["seed"]) == list(local["seed"])
    assert list(on_ray["steps"]) == list(local["steps"])
    assert list(on_ray["stop_reason"]) == list(local["stop_reason"])
    for col in ("strength", "accuracy", "worst_group", "kept_decisions", "changed_predictions"):
        assert on_ray[col].tolist() == pytest.approx(local[col].tolist(), nan_ok=True), col


def test_a_workbench_repair_on_ray_is_cancelled(cluster, tmp_path, demo_dir, monkeypatch):
    home = tmp_path / "home"
    seed_demo_cache(home, demo_dir)
    store = Store(home)
    # The runs worker process joins this file's Ray instance and submits the run to it.
    monkeypatch.setenv("BIASREPAIR_BACKEND", "ray")
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    try:
        pid = open_demo_here(store, ALICE)
        label_top(store, pid, 8)
        rid = runs.submit_run(store, pid, "cpt", dict(LONG_RUN), ALICE)
        wait_for(lambda: len(store.progress(rid)) >= 3, timeout=300)
        assert store.run(rid)["status"] == "running"
        runs.cancel_run(store, rid, ALICE)
        wait_for(lambda: store.run(rid)["status"] != "running", timeout=120)
        assert store.run(rid)["status"] == "cancelled"
        assert max(p["step"] for p in store.progress(rid)) < LONG_RUN["max_steps"]
        log = jobs.worker_log(store, "runs").read_text()
        assert f"run {rid}: submitted to Ray" in log
        assert any(e["action"] == "run_cancelled" for e in store.audit_events(pid))
    finally:
        jobs.stop_spawned_workers()


def test_sharded_evaluation_on_ray_keeps_the_order(cluster, demo_dir):
    from core.engine.inference import predict_dataset, predict_sharded

    b = load_bundle(demo_dir / "model")
    ds = load_dataset(demo_dir / "eval", b.meta.class_names)
    assert len(ds) > 3 * 64  # several shards, the last one short
    local = predict_dataset(b.model, ds, b.meta, torch.device("cpu"))
    on_ray = predict_sharded(b.model, ds, b.meta, cluster, "cpu", shard_images=64)
    assert on_ray.shape == local.shape
    assert (on_ray.argmax(1) == local.argmax(1)).all() and on_ray == pytest.approx(local, abs=1e-5)


def test_workbench_evaluations_are_sharded_on_an_existing_cluster(cluster, tmp_path, demo_dir, monkeypatch):
    """With BIASREPAIR_BACKEND=ray and RAY_ADDRESS, the task worker's evaluation and pool predictions go to the
    cluster in shards and give the local answers; without RAY_ADDRESS they stay in the process."""
    import numpy as np

    from core.app import compute, prediction_tasks
    from core.engine import inference

    store, project = demo_store(tmp_path / "home", demo_dir)
    pid = project["id"]
    mid, did = project["base_model_id"], project["eval_dataset_id"]
    local = np.load(store.evaluation(mid, did)["predictions_path"])["predictions"]
    local_metrics = store.evaluation(mid, did)["metrics"]
    pool_id = store.datasets(pid, role="pool")[0]["id"]
    local_pool = np.load(compute.pool_predictions(store, {"model_id": mid, "dataset_id": pool_id}, ALICE)["path"])

    maps = []
    real_map = RayBackend.map
    monkeypatch.setattr(
        RayBackend, "map", lambda self, fn, tasks, *a: maps.append(len(tasks)) or real_map(self, fn, tasks, *a)
    )
    monkeypatch.setattr(inference, "SHARD_IMAGES", 256)
    monkeypatch.setenv("BIASREPAIR_BACKEND", "ray")
    assert prediction_tasks.sharding_backend(10_000) is None  # no existing cluster named: no Ray instance for a task
    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    assert prediction_tasks.sharding_backend(511) is None  # under two shards: not worth the trip
    with contextlib.closing(sqlite3.connect(store.db_path)) as con, con:
        con.execute("DELETE FROM evaluations WHERE model_id = ? AND dataset_id = ?", (mid, did))
    compute.evaluate(store, {"model_id": mid, "dataset_id": did}, ALICE)
    on_ray = np.load(store.evaluation(mid, did)["predictions_path"])["predictions"]
    assert (on_ray == local).all() and store.evaluation(mid, did)["metrics"] == pytest.approx(local_metrics)
    pool = np.load(compute.pool_predictions(store, {"model_id": mid, "dataset_id": pool_id}, ALICE)["path"])
    assert (pool["predictions"] == local_pool["predictions"]).all()
    assert pool["confidences"] == pytest.approx(local_pool["confidences"], abs=1e-5)
    assert len(maps) == 2 and all(n >= 2 for n in maps), maps  # both went to the cluster, in shards


def test_sweep_on_ray_writes_the_local_table(cluster, demo_dir, tmp_path):
    import csv

    from core.cli import main

    def sweep(backend: str) -> list[dict]:
        out = tmp_path / backend
        args = ["sweep", "--model", str(demo_dir / "model"), "--counterexamples", str(demo_dir / "counterexamples"),
                "--eval", str(demo_dir / "eval"), "--strengths", "100", "10000", "--max-steps", "8",
                "--min-steps", "2", "--device", "cpu", "--backend", backend, "--out", str(out)]  # fmt: skip
        assert main(args) == 0
        assert (out / "strength_100" / "metrics.json").exists() and (out / "strength_10000" / "metrics.json").exists()
        with open(out / "sweep.csv", encoding="utf-8") as fh:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]

    local, on_ray = sweep("local"), sweep("ray")
    assert [r["strength"] for r in on_ray] == ["100.0", "10000.0"]
    assert [r["steps"] for r in on_ray] == [r["steps"] for r in local]
    for r, q in zip(on_ray, local, strict=True):
        for key in ("accuracy", "worst_group_accuracy", "kept_decisions"):
            assert float(r[key]) == pytest.approx(float(q[key])), key


def _queued_run(tmp_path, demo_dir, monkeypatch) -> tuple[Store, int]:
    """A store with one queued repair and no worker to take it (the test serves it itself)."""
    home = tmp_path / "home"
    seed_demo_cache(home, demo_dir)
    store = Store(home)
    pid = open_demo_here(store, ALICE)
    label_top(store, pid, 8)
    jobs.stop_spawned_workers()
    monkeypatch.setattr(jobs, "ensure_worker", lambda *a, **k: None)
    return store, runs.submit_run(store, pid, "cpt", dict(LONG_RUN), ALICE)


@contextlib.contextmanager
def _serving(store, execute):
    """The Ray runs worker serving in a thread; leaving stops it as SIGTERM or the server going away would."""
    stop = threading.Event()
    serving = threading.Thread(target=RayRuns(store, os.getpid(), execute).serve, args=(stop, 60.0))
    serving.start()
    try:
        yield
    finally:
        stop.set()
        serving.join()


def test_a_ray_task_whose_worker_dies_fails_its_run(cluster, tmp_path, demo_dir, monkeypatch):
    from tests.ray_helpers import die_in_worker

    store, rid = _queued_run(tmp_path, demo_dir, monkeypatch)
    RayRuns(store, os.getpid(), die_in_worker).serve(threading.Event(), idle_exit=0.5)
    run = store.run(rid)
    assert run["status"] == "failed"
    assert "the Ray task running it ended without a result" in run["error"]
    assert any(e["action"] == "run_failed" for e in store.audit_events(run["project_id"]))


def test_a_ray_task_that_ignores_its_cancel_flag_is_cancelled_by_ray(cluster, tmp_path, demo_dir, monkeypatch):
    from tests.ray_helpers import ignore_cancel

    store, rid = _queued_run(tmp_path, demo_dir, monkeypatch)
    with _serving(store, ignore_cancel):
        wait_for(lambda: store.run(rid)["status"] == "running", timeout=120)
        runs.cancel_run(store, rid, ALICE)
        wait_for(lambda: store.run(rid)["status"] != "running", timeout=120)
    assert store.run(rid)["status"] == "cancelled"


def test_a_stopped_server_marks_its_ray_runs_interrupted(cluster, tmp_path, demo_dir, monkeypatch):
    store, rid = _queued_run(tmp_path, demo_dir, monkeypatch)
    with _serving(store, execute_run):
        wait_for(lambda: len(store.progress(rid)) >= 1, timeout=300)  # the repair is stepping on Ray
    assert store.run(rid)["status"] == "interrupted"


def test_perf_scale_section_reports_ratios_and_equal_results(cluster, tmp_path, demo_dir):
    import argparse

    from core.bench.scale import scale_figures
    from core.bench.suites import demo_suite_at

    # 5 steps run every code path the ratios and the equality need (both backends, early exit and the full sweep)
    args = argparse.Namespace(scale_cpus=2, scale_seeds=1, scale_shots=[2], scale_max_steps=5)
    suite = demo_suite_at({name: demo_dir / name for name in ("model", "eval", "pool")})  # the session's built demo
    section, lines = scale_figures(args, tmp_path, suite)
    assert section["ray_cpus"] == 2 and section["grid_tasks"] == 2  # 1 draw × 1 size × (cpt, auto)
    for key in ("auto_efficiency", "auto_full_efficiency", "grid_efficiency"):
        assert section[key] > 0
    assert section["auto_same_choice"] and section["grid_same_rows"]
    assert section["max_metric_difference"] == pytest.approx(0.0, abs=1e-9)
    assert any("overhead per task" in line for line in lines)
