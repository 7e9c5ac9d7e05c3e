""" "More like this" (core/app/similar.py, core/engine/neighbours.py): the nearest pool images in the model's own
penultimate feature space, computed once per model and pool by the task worker and cached on disk, and the
Counterexamples page showing them in the gallery to label."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.app import pool, projects, similar
from core.engine.group_features import classifier_layer
from core.engine.neighbours import penultimate_features
from core.formats.bundle import load_bundle
from core.formats.datasets import ImageDataset, Record
from tests.test_pages import _app
from tests.wb_helpers import ALICE, open_demo_here, pool_truth


def _images(folder) -> list:
    return sorted(p for p in folder.rglob("*.png"))


def test_the_nearest_images_are_the_near_duplicates_and_the_same_kind(demo_dir, tmp_path):
    """On the demo's small CNN: each of four pool images has a near-duplicate (a few pixels changed) among
    twenty others; its nearest neighbour is that duplicate, and its next ones are mostly of its own class."""
    bundle = load_bundle(demo_dir / "model")
    pool_files = _images(demo_dir / "pool")[:20]
    folder = tmp_path / "pool"
    folder.mkdir()
    records, rng = [], np.random.default_rng(0)
    for i, f in enumerate(pool_files):
        img = np.asarray(Image.open(f).convert("RGB"))
        Image.fromarray(img).save(folder / f"{i}.png")
        records.append(Record(f"{i}.png", 0, None))
        if i < 4:
            dup = img.copy()
            ys, xs = rng.integers(0, img.shape[0], 6), rng.integers(0, img.shape[1], 6)
            dup[ys, xs] = 255 - dup[ys, xs]
            Image.fromarray(dup).save(folder / f"{i}_dup.png")
            records.append(Record(f"{i}_dup.png", 0, None))
    feats = penultimate_features(bundle, ImageDataset(folder, records, []))
    assert feats.shape == (24, classifier_layer(bundle.model).in_features)
    names = [r.path for r in records]
    for i in range(4):
        near = similar.nearest(feats, names.index(f"{i}.png"), 3)
        assert names[near[0]] == f"{i}_dup.png", [names[j] for j in near]
        assert names.index(f"{i}.png") not in near


def test_more_like_this_on_the_demo_project_is_cached_per_model_and_pool(home):
    store = projects.get_store(home)
    pid = open_demo_here(store, ALICE)
    cands = pool.candidates(store, pid)
    key = cands[0]["key"]
    near = similar.more_like_this(store, pid, key, ALICE)
    assert len(near) == similar.MORE_LIKE_THIS and key not in near and len(set(near)) == len(near)
    assert set(near) <= {c["key"] for c in cands}
    files = list(store.artifact_dir("pool_features").glob("m*_d*_n*.npy"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    assert similar.more_like_this(store, pid, key, ALICE) == near  # read from the cache, same answer
    assert files[0].stat().st_mtime_ns == mtime
    # Same-group images: the look-alikes of the likeliest counterexample share its attribute (the shortcut) far
    # more often than the pool does; those of an image the model is sure of share its true class.
    by_key, truth = {c["key"]: c for c in cands}, pool_truth(store, pid)
    base_rate = sum(c["attribute"] == cands[0]["attribute"] for c in cands) / len(cands)
    same = sum(by_key[k]["attribute"] == cands[0]["attribute"] for k in near) / len(near)
    assert same >= 0.9 and same > base_rate + 0.25, (same, base_rate)
    sure = max(cands, key=lambda c: c["confidence"])
    near_sure = similar.more_like_this(store, pid, sure["key"], ALICE)
    assert sum(truth[by_key[k]["path"]] == truth[sure["path"]] for k in near_sure) >= 10


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_counterexamples_page_shows_more_like_this_to_label(home, lang):
    store = projects.get_store(home)
    pid = open_demo_here(store, ALICE)
    at = _app("views/counterexamples.py", lang=lang, user="alice")
    first = pool.candidates(store, pid)[0]["key"]
    at.button(key=f"like_{first}").click().run()
    assert not at.exception
    near = similar.more_like_this(store, pid, first, ALICE)
    shown = [b.key.removeprefix("like_") for b in at.button if b.key and b.key.startswith("like_")]
    assert shown == near
    # Label one of them from the gallery: it becomes a counterexample.
    at.button(key=f"focus_{near[0]}").click().run()
    at.button(key="quick_3").click().run()
    assert any(f"{c['dataset_id']}:{c['item_path']}" == near[0] for c in store.labels(pid))
    at.button(key="ce_like_back").click().run()
    assert [b.key for b in at.button if b.key and b.key.startswith("like_")][0] == f"like_{first}"
