"""The standard suite's transformer: a small timm VisionTransformer trained from scratch on the tagged digits,
kept as a timm folder that timm itself loads, and loaded as a benchmark suite (docs/BENCHMARKS.md). Trained
here for one epoch on 256 digits (the suite's recipe is 15 epochs on 5,000)."""

from __future__ import annotations

import json

import numpy as np
import torch

from core.bench import standard_suite as ss
from core.bench.suites import SUITE_GROUPS, SUITES, load_suite, prepare_suite_data
from core.formats.meta import ModelFormat


def test_the_vit_suite_builds_a_timm_folder_and_loads(tmp_path, monkeypatch):
    import timm

    monkeypatch.setenv("BIASREPAIR_CACHE", str(tmp_path / "cache"))
    assert "standard-vit" in SUITES and "standard-vit" in SUITE_GROUPS["standard"]
    model_dir = ss.cache_dir() / "standard-vit"
    info = ss.train_standard_model("standard-vit", model_dir, epochs=1, n_images=256, log=lambda _m: None)
    assert (info["train_images"], info["epochs"]) == (256, 1)
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors", "train_info.json"]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["model_args"] == ss.VIT_ARGS

    suite = load_suite("standard-vit", tmp_path / "work")  # the cached model above: nothing is trained again
    assert suite.title.startswith("timm vit_tiny_patch16_224 from scratch on tagged MNIST")
    meta = suite.bundle.meta
    assert meta.format is ModelFormat.TIMM and meta.input_size == [3, 28, 28] and len(meta.class_names) == 10
    assert sorted(p.name for p in (tmp_path / "work" / "standard-vit" / "model").iterdir()) == [
        "config.json", "model.safetensors",
    ]  # fmt: skip
    blocks = [m for m in suite.bundle.model.modules() if type(m).__name__ == "Block"]
    assert len(blocks) == ss.VIT_ARGS["depth"]
    # timm's own loader reads the suite's model folder and gives its outputs.
    theirs = timm.create_model(f"local-dir:{tmp_path / 'work' / 'standard-vit' / 'model'}", pretrained=True).eval()
    x = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(theirs(x), suite.bundle.model(x))
    # Counterexamples contradict the tag, and a draw's data are ready for a repair.
    assert suite.pool_conflicting.any() and not suite.pool_conflicting.all()
    idx = np.flatnonzero(suite.pool_conflicting)[:4]
    data = prepare_suite_data(suite, idx, with_unlabeled=False)
    assert data.x_ce.shape == (4, 3, 28, 28) and data.reference is not None and len(data.x_eval) > 0
