"""A timm and a transformers ViT (token outputs) repaired with CPT through ``python -m core repair``: the
repaired model leaves in the layout it came in and the library itself loads it with our outputs
(docs/FORMATS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.cli import main
from core.formats.bundle import load_bundle
from core.formats.meta import ModelFormat
from tests import library_models as lm

ROOT = Path(__file__).resolve().parent.parent
X = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(2))
STEPS = ["--max-steps", "3", "--min-steps", "1", "--stop-rule", "none", "--user", "tester", "--quiet"]


def repair_args(demo_dir: Path, model: Path, out: Path) -> list[str]:
    return [
        "repair", "--model", str(model), "--counterexamples", str(demo_dir / "counterexamples"),
        "--reference", str(demo_dir / "reference"), "--out", str(out), "--method", "cpt", *STEPS,
    ]  # fmt: skip


def _changed(before: torch.nn.Module, after: torch.nn.Module) -> bool:
    a, b = before.state_dict(), after.state_dict()
    return any(not torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["timm_vit", "timm_resnet"])
def test_a_repaired_timm_model_stays_a_timm_folder_that_timm_loads(tmp_path, demo_dir, kind):
    import timm

    base_dir = lm.save_timm(getattr(lm, kind)(), tmp_path / "base")
    assert main(repair_args(demo_dir, base_dir, tmp_path / "run")) == 0
    out = tmp_path / "run" / "model"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert (tmp_path / "run" / "delta.safetensors").is_file()
    ours = load_bundle(out)
    assert ours.meta.format is ModelFormat.TIMM and ours.meta.class_names == load_bundle(base_dir).meta.class_names
    assert _changed(load_bundle(base_dir).model, ours.model)
    theirs = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(theirs(X), ours.model(X))


def test_a_repaired_transformers_vit_stays_a_transformers_folder_through_the_cli(tmp_path, demo_dir):
    from transformers import AutoModelForImageClassification

    base_dir = lm.save_hf(lm.hf_vit(), tmp_path / "base", shard="20KB")
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "core", *repair_args(demo_dir, base_dir, run)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "method cpt" in proc.stdout
    out = run / "model"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vit" and config["id2label"]["0"] == "zero"
    ours = load_bundle(out)
    assert _changed(load_bundle(base_dir).model, ours.model)
    theirs = AutoModelForImageClassification.from_pretrained(out, attn_implementation="eager").eval()
    with torch.no_grad():
        assert torch.equal(theirs(pixel_values=X).logits, ours.model(X))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "cpt" and metrics["steps"] == 3
