"""Engineer-facing upload errors: a dataset given as the model, weights of another architecture, and
the weights form starting on the architecture the file's keys match (docs/WORKBENCH.md, "Upload errors an
engineer can act on")."""

from __future__ import annotations

import io
import json

import pytest
import torch
from safetensors.torch import save as st_save_bytes

from core.app import jobs, projects, uploads
from core.app.i18n import error_text
from core.errors import UserError
from core.formats import weightkeys
from core.formats.architectures import SmallCNN, build_model
from core.formats.bundle import BundleMeta, bundle_from_state_file
from core.formats.meta import ARCHITECTURE_NAMES, read_bundle_zip
from core.formats.zipsafety import zip_names
from tests.conftest import TINY_META
from tests.test_pages import _app
from tests.wb_helpers import make_zip, seed_demo_cache


def _meta(architecture: str, n: int = 3, size: int = 32) -> BundleMeta:
    return BundleMeta.from_dict(
        {**TINY_META, "architecture": architecture, "num_classes": n, "input_size": [3, size, size]}
    )


def _pt(state: dict, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("resnet18", 3, 3).state_dict()


def test_a_dataset_zip_given_as_the_model_is_called_a_dataset_not_too_many_entries():
    # 100 images and a manifest: more entries than a bundle may hold, so the old message was the limit.
    files = {f"data/img_{i}.png": b"\x89PNG" for i in range(100)}
    files["data/manifest.csv"] = b"path,label\n"
    raw = make_zip(files)
    assert len(zip_names(raw, "eval.zip")) > 64
    with pytest.raises(UserError) as info:
        read_bundle_zip(raw, "eval.zip")
    assert info.value.key == "bundle_is_dataset" and info.value.params["images"] == 100
    assert "looks like a dataset" in str(info.value) and "not a model" in str(info.value)
    assert "entries" not in str(info.value)
    ja = error_text(info.value, "ja")
    assert "データセット" in ja and "eval.zip" in ja and "100" in ja


def test_a_small_pool_zip_without_a_manifest_is_a_dataset_too_and_a_bundle_is_not():
    with pytest.raises(UserError) as info:
        read_bundle_zip(make_zip({"a.jpg": b"x", "b.JPEG": b"y"}), "pool.zip")
    assert info.value.key == "bundle_is_dataset" and info.value.params["images"] == 2
    # A bundle that happens to carry a preview image is still read as a bundle.
    files = read_bundle_zip(
        make_zip({"model.json": json.dumps(TINY_META).encode(), "model.safetensors": b"0", "preview.png": b"p"}),
        "m.zip",
    )
    assert sorted(files) == ["model.json", "model.safetensors"]
    # A zip with neither images nor model files keeps the "has no model.json" message.
    with pytest.raises(UserError) as info:
        read_bundle_zip(make_zip({"notes.txt": b"hello"}), "m.zip")
    assert info.value.key == "bundle_missing"


def test_the_key_table_is_each_allowed_architectures_real_keys():
    table = weightkeys.architecture_keys()
    assert sorted(table) == sorted(ARCHITECTURE_NAMES)
    for name in ARCHITECTURE_NAMES:
        with torch.device("meta"):
            keys = set(build_model(name, 7, 3).state_dict())
        assert table[name] == keys, (
            f"core/formats/architecture_keys.json is stale for {name}; run scripts/architecture_keys.py"
        )


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt_legacy"])
def test_the_architecture_is_guessed_from_the_files_keys_without_loading_it(fmt):
    state = _resnet18_state()
    raw = {
        "safetensors": lambda: st_save_bytes(state),
        "pt": lambda: _pt(state),
        "pt_legacy": lambda: _pt(state, legacy=True),
    }[fmt]()
    name = "w.safetensors" if fmt == "safetensors" else "w.pt"
    assert weightkeys.weight_keys(raw, name) == set(state)
    assert uploads.guess_weights_architecture(raw, name) == "resnet18"
    small = SmallCNN(3, 3).state_dict()
    small_raw = st_save_bytes(small) if fmt == "safetensors" else _pt(small, legacy=fmt == "pt_legacy")
    assert uploads.guess_weights_architecture(small_raw, name) == "small_cnn"


def test_a_resnet34_is_told_apart_from_a_resnet18_whose_keys_it_contains():
    with torch.device("meta"):
        keys34 = set(build_model("resnet34", 3, 3).state_dict())
    assert weightkeys.best_match(keys34).architecture == "resnet34"
    assert weightkeys.best_match(set(_resnet18_state())).architecture == "resnet18"


def test_unreadable_or_unrelated_files_give_no_guess():
    assert uploads.guess_weights_architecture(b"not a weights file", "w.safetensors") is None
    assert uploads.guess_weights_architecture(b"garbage", "w.pt") is None
    assert uploads.guess_weights_architecture(st_save_bytes({"foo": torch.zeros(2)}), "w.safetensors") is None


def test_weights_of_another_architecture_get_a_summary_naming_the_match():
    state = _resnet18_state()
    with pytest.raises(UserError) as info:
        bundle_from_state_file(_pt(state), "resnet.pt", _meta("small_cnn"))
    exc = info.value
    assert exc.key == "weights_wrong_architecture"
    assert exc.params["guess"] == "resnet18" and exc.params["matched"] == exc.params["total"] == len(state)
    assert exc.params["missing"] == 20 and exc.params["unexpected"] == len(state)
    message = str(exc)
    assert "choose resnet18" in message and "20 of its keys are missing" in message
    assert len(message) < 500  # a summary with a few examples, not the wall of keys
    assert message.count("layer") <= weightkeys.EXAMPLES
    ja = error_text(exc, "ja")
    assert "resnet18" in ja and "small_cnn" in ja and "アーキテクチャ" in ja


def test_a_deeper_model_of_the_same_family_is_named():
    state = _resnet18_state()
    with pytest.raises(UserError) as info:
        bundle_from_state_file(st_save_bytes(state), "resnet.safetensors", _meta("resnet34"))
    exc = info.value
    assert exc.key == "weights_wrong_architecture" and exc.params["guess"] == "resnet18"
    assert exc.params["unexpected"] == 0 and exc.params["missing"] == 218 - 122


def test_a_few_missing_keys_of_the_right_architecture_are_listed_without_a_guess(tiny_bundle_dir):
    state = SmallCNN(3, 3).state_dict()
    state.pop("classifier.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(UserError) as info:
        bundle_from_state_file(st_save_bytes(state), "w.safetensors", _meta("small_cnn", size=12))
    exc = info.value
    assert exc.key == "weights_wrong_keys"
    assert exc.params["missing_examples"] == "classifier.bias" and exc.params["unexpected_examples"] == "extra.weight"
    assert "guess" not in exc.params and "choose" not in str(exc)
    assert "classifier.bias" in error_text(exc, "ja")


@pytest.fixture()
def store(tmp_path, demo_dir, monkeypatch):
    home = tmp_path / "home"
    seed_demo_cache(home, demo_dir)
    monkeypatch.setenv("BIASREPAIR_HOME", str(home))
    yield projects.get_store(home)
    jobs.stop_spawned_workers()


def test_the_model_page_starts_the_form_on_the_matching_architecture_and_names_a_dataset(store):
    at = _app(lang="ja")
    raw = st_save_bytes(_resnet18_state())
    assert at.selectbox(key="w_arch").value != "resnet18"
    at.file_uploader(key="up_weights").set_value(("net.safetensors", raw, "application/octet-stream")).run()
    assert not at.exception
    assert at.selectbox(key="w_arch").value == "resnet18"
    assert any("resnet18" in c.value for c in at.caption)

    files = {f"eval/{i}.png": b"png" for i in range(80)}
    at.file_uploader(key="up_bundle").set_value(("eval.zip", make_zip(files), "application/zip")).run()
    at.button(key="load_bundle").click().run()
    errors = [e.value for e in at.error]
    assert any("eval.zip はモデルではなくデータセット（画像 80 枚）" in e for e in errors), errors
    assert store.projects() == []
