"""model.json validation and bundle loading."""

from __future__ import annotations

import json

import pytest
import torch

from core.errors import UserError
from core.formats.bundle import BundleMeta, load_bundle, read_bundle_zip

GOOD = {
    "architecture": "small_cnn",
    "num_classes": 3,
    "class_names": ["a", "b", "c"],
    "input_size": [3, 12, 12],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.2, 0.2, 0.2],
}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"class_names": ["a", "b"]}, "2 class_names"),
        ({"class_names": ["a", "a", "b"]}, "duplicates"),
        ({"input_size": [3, 12]}, "input_size"),
        ({"input_size": [2, 12, 12], "mean": [0, 0], "std": [1, 1]}, "1 or 3 channels"),
        ({"std": [0.2, 0.0, 0.2]}, "positive"),
        ({"mean": [0.5]}, "mean"),
        ({"extra": 1}, "unknown key"),
    ],
)
def test_meta_validation_names_the_problem(change, words):
    with pytest.raises(UserError, match=words):
        BundleMeta.from_dict({**GOOD, **change})


def test_missing_key():
    d = dict(GOOD)
    del d["std"]
    with pytest.raises(UserError, match="missing key.*std"):
        BundleMeta.from_dict(d)


def test_load_records_sha256_and_freezes(tiny_bundle_dir):
    import hashlib

    b = load_bundle(tiny_bundle_dir)
    expected = hashlib.sha256((tiny_bundle_dir / "model.safetensors").read_bytes()).hexdigest()
    assert b.sha256["model.safetensors"] == expected
    assert not any(p.requires_grad for p in b.model.parameters())
    assert not b.model.training


def test_missing_weight_key_is_refused(tiny_bundle_dir):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_bundle_dir / "model.safetensors"))
    state.pop("classifier.bias")
    save_file(state, str(tiny_bundle_dir / "model.safetensors"))
    with pytest.raises(UserError, match="classifier.bias"):
        load_bundle(tiny_bundle_dir)


def test_non_finite_weights_refused(tiny_bundle_dir):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_bundle_dir / "model.safetensors"))
    state["classifier.bias"] = torch.full_like(state["classifier.bias"], float("nan"))
    save_file(state, str(tiny_bundle_dir / "model.safetensors"))
    with pytest.raises(UserError, match="non-finite"):
        load_bundle(tiny_bundle_dir)


def test_zip_without_weights(tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.json", json.dumps(GOOD))
    with pytest.raises(UserError, match="no model.safetensors"):
        read_bundle_zip(buf.getvalue(), "m.zip")
