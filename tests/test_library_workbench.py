"""The workbench on timm and transformers folders (ViTs whose blocks output tokens, and a timm ResNet):
uploaded as a zip, repaired, previewed at a lower strength α on the Review page's slider, saved at that α
in the layout it came in, and looked at for suspected groups (docs/FORMATS.md, docs/DISCOVERY.md)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core.app import compute, interpolated_runs, jobs, pool, runs, suspected_groups, uploads
from core.app.store import Store
from core.app.stored_models import stored_bundle
from core.app.worker import execute_run
from core.engine import group_features
from core.engine.inference import normalize, predict_logits
from core.engine.weight_interpolation import interpolated_model
from core.formats.bundle import load_bundle
from core.formats.datasets import load_dataset, load_pixels
from core.formats.meta import ModelFormat
from tests import library_models as lm
from tests.wb_helpers import ALICE, FAST_RUN, make_zip, seed_demo_cache, strip_attributes, zip_folder_bytes

SAVERS = {
    "timm_vit": lambda out: lm.save_timm(lm.timm_vit(), out),
    "hf_vit": lambda out: lm.save_hf(lm.hf_vit(), out),
}


@pytest.fixture()
def store(tmp_path, demo_dir):
    home = tmp_path / "home"
    seed_demo_cache(home, demo_dir)
    yield Store(home)
    jobs.stop_spawned_workers()


def _eval_slice(demo_dir: Path, every: int = 6, attributes: bool = True) -> bytes:
    """About 650 of the demo's evaluation images (both splits), as a user's zip."""
    files = strip_attributes(demo_dir / "eval") if not attributes else None
    lines = (demo_dir / "eval" / "manifest.csv").read_text().splitlines()
    if files is not None:
        lines = files["manifest.csv"].decode().splitlines()
    kept = lines[:1] + lines[1::every]
    out = {"manifest.csv": "\n".join(kept).encode()}
    for line in kept[1:]:
        rel = line.split(",")[0]
        out[rel] = (demo_dir / "eval" / rel).read_bytes()
    return make_zip(out)


def _library_project(store, demo_dir, tmp_path, kind: str, attributes: bool = True) -> int:
    folder = SAVERS[kind](tmp_path / kind)
    pid = uploads.upload_model_zip(store, lm.folder_zip(folder), f"{kind}.zip", ALICE)
    uploads.upload_eval_zip(store, pid, _eval_slice(demo_dir, attributes=attributes), "eval.zip", ALICE)
    uploads.upload_pool_zip(store, pid, zip_folder_bytes(demo_dir / "pool"), "pool.zip", ALICE)
    return pid


def _pool_truth(demo_dir: Path) -> dict[str, str]:
    with open(demo_dir / "pool" / "manifest.csv", encoding="utf-8") as fh:
        return {r["path"]: r["label"] for r in csv.DictReader(fh)}


def _run_now(store, pid) -> int:
    rid = runs.submit_run(store, pid, "cpt", dict(FAST_RUN), ALICE, start_worker=False)
    claimed = store.claim_next_run(os.getpid())
    assert claimed["id"] == rid
    assert execute_run(store, claimed) == "done", store.run(rid)["error"]
    return rid


@pytest.mark.parametrize("kind", list(SAVERS))
def test_the_strength_slider_previews_and_saves_a_library_repair(store, demo_dir, tmp_path, kind):
    jobs.stop_spawned_workers()  # every task below runs in this process
    pid = _library_project(store, demo_dir, tmp_path, kind)
    truth = _pool_truth(demo_dir)
    for c in pool.candidates(store, pid)[:6]:
        pool.set_label(store, pid, c["key"], truth[c["path"]], ALICE)
    rid = _run_now(store, pid)
    run = store.run(rid)
    assert interpolated_runs.can_interpolate(run)
    base = stored_bundle(store, run["model_id"])
    repaired = load_bundle(Path(run["out_dir"]) / "model")
    assert repaired.meta.format is base.meta.format is not ModelFormat.BUNDLE
    # The preview at α = 0.5 gives the answers of θ + ½δ on the run's evaluation rows, computed here.
    compute._PREVIEW_INPUTS.clear()
    half = json.loads(Path(compute.alpha_preview(store, {"run_id": rid, "alpha": 0.5}, "tester")["path"]).read_text())
    rows = runs.prediction_rows(store, rid)
    ds = load_dataset(runs.eval_root(store, run), base.meta.class_names)
    by_path = {r.path: i for i, r in enumerate(ds.records)}
    pixels = load_pixels(ds, base.meta.input_size)[[by_path[r["path"]] for r in rows]]
    x = normalize(pixels, base.meta.mean, base.meta.std)
    want = (
        predict_logits(interpolated_model(base.model, repaired.state_dict(), 0.5), x, torch.device("cpu"))
        .argmax(1)
        .numpy()
    )
    assert half["after"] == want.tolist()
    assert compute.alpha_grid(store, {"run_id": rid}, "tester") == {"complete": True}
    zero = json.loads(interpolated_runs.preview_file(run, 0.0).read_text())
    assert zero["after"] == [r["before"] for r in rows] and zero["metrics"]["changed_predictions"] == 0
    # Saved at α = 0.5: a run whose model is θ + ½δ in the folder's own layout.
    new = store.run(compute.save_alpha_run(store, {"run_id": rid, "alpha": 0.5}, "tester")["run_id"])
    saved = load_bundle(Path(new["out_dir"]) / "model")
    assert saved.meta.format is base.meta.format
    assert sorted(p.name for p in (Path(new["out_dir"]) / "model").iterdir()) == sorted(
        p.name for p in (Path(run["out_dir"]) / "model").iterdir()
    )
    with torch.no_grad():
        np.testing.assert_array_equal(saved.model(x).argmax(1).numpy(), want)


TOKEN_STAGES = {  # the patch embedding's map, then each transformer block's tokens (17 = 16 patches + class)
    "timm_vit": [("patch_embed.proj", (32, 4, 4)), ("blocks.0", (17, 32))],
    "hf_vit": [("vit.embeddings.patch_embeddings.projection", (32, 4, 4)), ("vit.layers.0", (17, 32))],
}


@pytest.mark.parametrize("kind", list(SAVERS))
def test_suspected_groups_read_a_vits_tokens(store, demo_dir, tmp_path, kind):
    """Discovery on a ViT: every transformer block's tokens are a stage (mean and spread over the tokens
    of each channel), beside the classifier's input, and no map made inside a block (attention's
    per-head keys are 4-D) is one; a project without attributes gets its suspected groups."""
    jobs.stop_spawned_workers()
    pid = _library_project(store, demo_dir, tmp_path, kind, attributes=False)
    assert not suspected_groups.has_attributes(store, pid)
    model = stored_bundle(store, store.project(pid)["base_model_id"]).model
    x = torch.randn(5, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    head = group_features.classifier_layer(model)
    assert group_features._stage_modules(model, x, head) == TOKEN_STAGES[kind]
    feats, _, widths = group_features.embed_blocks(model, x, "cpu")
    assert widths == (64, 64, 32) and feats.shape == (5, 160)
    block = dict(model.named_modules())[TOKEN_STAGES[kind][1][0]]
    out = []
    hook = block.register_forward_hook(lambda _m, _i, o: out.append((o[0] if isinstance(o, tuple) else o).detach()))
    with torch.no_grad():
        model(x)
    hook.remove()
    by_hand = torch.cat([out[-1].mean(1), out[-1].std(1)], 1).numpy()
    np.testing.assert_allclose(feats[:, 64:128], by_hand, rtol=1e-4, atol=1e-5)
    groups = suspected_groups.project_groups(store, pid)
    assert groups is not None and all(g["files"] and g["label_name"] in lm.CLASS_NAMES for g in groups)
