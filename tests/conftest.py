"""Shared fixtures: a tiny model bundle and the real demo, built once per session (once per xdist worker).

Every test under ``tests/e2e/`` gets the ``e2e`` marker here, so ``pytest -m "not e2e"`` is the fast
loop without a browser.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.formats.architectures import SmallCNN  # noqa: E402
from core.formats.bundle import BundleMeta, save_bundle  # noqa: E402
from core.formats.datasets import write_manifest_dataset  # noqa: E402

# Under pytest-xdist the workers run at once: each runs torch on its share of the cores, as the workbench's own
# workers do (core.app.worker.torch_threads), instead of every worker on every core; so do the commands they start.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(_threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))

E2E_DIR = ROOT / "tests" / "e2e"
TINY_CLASSES = ["cat", "dog", "fox"]
TINY_META = {  # a valid model.json for a 3-class small_cnn at 12 px
    "architecture": "small_cnn",
    "num_classes": 3,
    "class_names": TINY_CLASSES,
    "input_size": [3, 12, 12],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
}


def pytest_collection_modifyitems(config, items) -> None:
    """Mark every browser test (the ``tests/e2e/`` folder) ``e2e``."""
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


def unlearnable(dataset, predictions: list[int], n_classes: int = 10):
    """The dataset with each image relabelled to a class that is neither its truth, the model's answer
    nor any other image's new label: no held-out fold can be fixed from the others."""
    used: set[int] = set()
    records = []
    for r, p in zip(dataset.records, predictions):
        label = next(c for c in range(n_classes) if c not in (r.label, p) and c not in used)
        used.add(label)
        records.append(dataclasses.replace(r, label=label))
    return dataclasses.replace(dataset, records=records)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    from core.cli import main

    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out)]) == 0  # through the CLI, as a user would build it
    return out


@pytest.fixture()
def home(tmp_path, demo_dir, monkeypatch) -> Path:
    """A workbench home (BIASREPAIR_HOME) with the demo cache seeded, for the page tests; the
    workers it starts are stopped afterwards."""
    from core.app import jobs
    from tests.wb_helpers import seed_demo_cache

    h = tmp_path / "home"
    seed_demo_cache(h, demo_dir)
    monkeypatch.setenv("BIASREPAIR_HOME", str(h))
    monkeypatch.setenv("BIASREPAIR_DEMO_PREBUILD", "0")  # a test that opens the demo builds it; the others need none
    yield h
    jobs.stop_spawned_workers()


@pytest.fixture()
def tiny_meta() -> BundleMeta:
    return BundleMeta("small_cnn", 3, list(TINY_CLASSES), [3, 12, 12], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])


@pytest.fixture()
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = SmallCNN(3, 3, width=8).eval()
    # Non-trivial BatchNorm statistics so "BN frozen" is observable.
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture()
def tiny_bundle_dir(tmp_path, tiny_meta) -> Path:
    torch.manual_seed(0)
    model = SmallCNN(3, 3)
    return save_bundle(model.state_dict(), tiny_meta, tmp_path / "bundle")


def make_images(n: int, seed: int = 0, size: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, size=(n, size, size, 3), dtype=np.uint8)


@pytest.fixture()
def tiny_dataset_dir(tmp_path) -> Path:
    n = 12
    labels = [TINY_CLASSES[i % 3] for i in range(n)]
    attrs = ["red" if i % 2 else "blue" for i in range(n)]
    return write_manifest_dataset(tmp_path / "data", make_images(n), labels, attrs)
