"""A new user with a timm classifier folder, in a real browser at 1280×720: the folder uploaded as a zip on the
Model page, an evaluation set and candidate images added, four counterexamples labelled, a repair started by a
curator and approved by someone else (four eyes), then exported as ONNX and in the timm layout with its model
card. The whole flow runs in English; the exports are made again after switching to Japanese, and their model
card is then in Japanese. What the pages
did is read back from the store and the downloaded files (docs/FORMATS.md)."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from core.app import pool, projects, verdict
from core.app.runs import run_metrics
from core.app.store import Store
from core.formats.bundle import bundle_from_files
from core.formats.libmeta import read_model_zip
from core.formats.meta import ModelFormat
from tests import library_models as lm
from tests.e2e.conftest import nav, screen_shot, settle, sign_in, sign_out
from tests.optional import need
from tests.wb_helpers import make_zip, wait_for, zip_folder_bytes

need("playwright")  # skips this file where playwright is missing, except in CI (tests/optional.py)

VIEW = {"width": 1280, "height": 720}
PROGRESS = re.compile(r"[Ss]t(ep|opped at step) \d+ of at most \d+")


def _upload(pg, key: str, path: Path, button: str) -> None:
    from playwright.sync_api import expect

    settle(pg)
    pg.locator(f".st-key-{key} input[type=file]").set_input_files(str(path))
    settle(pg)
    load = pg.locator(f".st-key-{button} button")
    expect(load).to_be_enabled(timeout=60_000)
    load.click()


@pytest.fixture()
def files(tmp_path, demo_dir) -> dict[str, Path]:
    """The user's timm folder zipped, a slice of the demo's evaluation set, and the demo's pool."""
    folder = lm.save_timm(lm.timm_vit(), tmp_path / "my_vit")
    lines = (demo_dir / "eval" / "manifest.csv").read_text().splitlines()
    kept = lines[:1] + lines[1::8]
    ev = {"manifest.csv": "\n".join(kept).encode()}
    for line in kept[1:]:
        ev[line.split(",")[0]] = (demo_dir / "eval" / line.split(",")[0]).read_bytes()
    out = {"model": tmp_path / "my_vit.zip", "eval": tmp_path / "eval.zip", "pool": tmp_path / "pool.zip"}
    out["model"].write_bytes(lm.folder_zip(folder))
    out["eval"].write_bytes(make_zip(ev))
    out["pool"].write_bytes(zip_folder_bytes(demo_dir / "pool"))
    return out


def _truth(demo_dir: Path) -> dict[str, str]:
    with open(demo_dir / "pool" / "manifest.csv", encoding="utf-8") as fh:
        return {r["path"]: r["label"] for r in csv.DictReader(fh)}


def _label(pg, store, pid, truth: dict[str, str], n: int) -> None:
    """Label the top n candidates with the quick-labelling buttons, with their true class."""
    names = projects.project_summary(store, pid)["class_names"]
    for i in range(n):
        top = next(c for c in pool.candidates(store, pid) if c["label"] is None)
        pg.locator(f".st-key-quick_{names.index(truth[top['path']])} button").click()
        wait_for(lambda k=i + 1: len(store.labels(pid)) == k, timeout=60)
        settle(pg)


def _download(pg, button: str) -> bytes:
    with pg.expect_download() as dl:
        pg.get_by_role("button", name=button).click()
    data = Path(dl.value.path()).read_bytes()
    settle(pg)
    return data


def test_a_timm_folder_from_upload_to_an_approved_onnx_export(server, browser, files, demo_dir):
    ctx = browser.new_context(viewport=VIEW, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    store = Store(server.home)
    pg.goto(server.url)
    sign_in(pg, "alice")
    _upload(pg, "up_bundle", files["model"], "load_bundle")
    pg.get_by_text("Model my_vit.zip loaded and checked.").wait_for()
    settle(pg)
    pid = store.projects()[0]["id"]
    model = store.model(store.project(pid)["base_model_id"])
    assert (
        model["meta"]["architecture"] == "timm:vit_tiny_patch16_224" and model["meta"]["class_names"] == lm.CLASS_NAMES
    )
    assert sorted(p.name for p in Path(model["path"]).iterdir()) == ["config.json", "model.safetensors"]
    _upload(pg, "up_eval", files["eval"], "load_eval")
    pg.get_by_text("Where the model goes wrong").wait_for(timeout=120_000)
    settle(pg)
    screen_shot(pg, "library_1_model_en")

    nav(pg, "2 · Counterexamples", "Add more candidate images")
    pg.get_by_text("Add more candidate images").click()
    _upload(pg, "up_pool", files["pool"], "load_pool")
    pg.get_by_text("Images from pool.zip added to the gallery.").wait_for()
    pg.get_by_text("Quick labelling").first.wait_for()
    settle(pg)
    _label(pg, store, pid, _truth(demo_dir), 4)
    pg.get_by_text("The project's counterexamples (4)").wait_for()
    screen_shot(pg, "library_2_counterexamples_en")

    nav(pg, "3 · Repair", "How much may the model change?")
    pg.get_by_role("button", name="Start the repair").click()
    pg.get_by_text("Repair #1 submitted").wait_for()
    pg.get_by_text("Finished (").wait_for(timeout=300_000)
    settle(pg)
    assert pg.locator("[data-testid=stException]").count() == 0
    screen_shot(pg, "library_3_repair_en")
    run = store.runs(pid)[0]
    assert run["status"] == "done" and run["created_by"] == "alice"

    # Four eyes: alice started the repair, so she may not approve it; mia (an approver) does.
    sign_out(pg)
    sign_in(pg, "mia")
    nav(pg, "4 · Review", "Rules used:")
    screen_shot(pg, "library_4_review_en")
    pg.locator(".st-key-approve_comment textarea").fill("The ViT no longer follows the corner tag.")
    if verdict.judge(run_metrics(store, run["id"])).flagged:
        pg.get_by_text("I understand the risk and approve anyway").click()
        pg.locator(".st-key-override_reason textarea").fill("a test model with random weights")
    pg.get_by_role("button", name="Approve").click()
    pg.get_by_text("Repair #1 approved").wait_for()
    settle(pg)
    assert store.run(run["id"])["decision"] == "approved"

    exported = {"en": (_download(pg, "Export the repaired model"), _download(pg, "Export as ONNX"))}
    screen_shot(pg, "library_5_exported_en")
    pg.get_by_text("日本語").click()
    pg.get_by_text("判定基準").first.wait_for()
    settle(pg)
    exported["ja"] = (_download(pg, "修復後のモデルを書き出す"), _download(pg, "ONNX として書き出す"))
    screen_shot(pg, "library_5_exported_ja")
    ctx.close()

    x = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    repaired = Path(store.run(run["id"])["out_dir"]) / "model"
    for lang, (timm_zip, onnx_zip) in exported.items():
        # The repaired model leaves as a timm folder with its model card, the same weights as the run's.
        ours = bundle_from_files(read_model_zip(timm_zip, "export.zip"), "export.zip")
        assert ours.meta.format is ModelFormat.TIMM
        with torch.no_grad():
            assert torch.equal(
                ours.model(x), bundle_from_files(read_model_zip(zip_folder_bytes(repaired)), "r").model(x)
            )
        with zipfile.ZipFile(io.BytesIO(timm_zip)) as zf:
            card = zf.read(next(n for n in zf.namelist() if n.endswith("README.md"))).decode()
        assert "base_model" in card and "mia" in card
        # the card is written in the workbench's language at the time of the export
        assert ("## 想定する用途" in card) == (lang == "ja") and ("## Intended use" in card) == (lang == "en")
        # ONNX: the model, its check against PyTorch, and the card.
        with zipfile.ZipFile(io.BytesIO(onnx_zip)) as zf:
            names = {n.rsplit("/", 1)[-1]: n for n in zf.namelist()}
            assert {"model.onnx", "onnx_check.json", "README.md"} <= set(names)
            assert zf.read(names["README.md"]).decode() == card
            check = json.loads(zf.read(names["onnx_check.json"]))
            onnx_bytes = zf.read(names["model.onnx"])
        assert check["max_abs_diff"] <= 1e-4, (lang, check)
        sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, ours.model(x).numpy(), atol=1e-4)
    actions = [(e["actor"], e["action"]) for e in store.audit_events(pid)]
    assert ("mia", "approved") in actions and actions.count(("mia", "exported")) == 4
