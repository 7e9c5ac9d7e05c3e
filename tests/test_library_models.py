"""timm and transformers model folders in (docs/FORMATS.md): loaded with their class names, input size and
normalisation, giving the library's own outputs; sharded weights; the workbench's zip upload; every file or
key that could run code refused with one line; the page process reads the configs without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.app.demo import CLASS_NAMES, MEAN, STD
from core.errors import UserError
from core.formats.bundle import bundle_from_files, load_bundle, load_model_file
from core.formats.libmeta import read_model_zip
from core.formats.meta import ModelFormat
from tests import library_models as lm

ROOT = Path(__file__).resolve().parent.parent
X = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("libs")
    return {
        "timm_vit": lm.save_timm(lm.timm_vit(), root / "timm_vit"),
        "timm_resnet": lm.save_timm(lm.timm_resnet(), root / "timm_resnet"),
        "hf_vit_sharded": lm.save_hf(lm.hf_vit(), root / "hf_vit", shard="20KB"),
        "hf_resnet": lm.save_hf(lm.hf_resnet(), root / "hf_resnet"),
    }


BUILDERS = {
    "timm_vit": lm.timm_vit,
    "timm_resnet": lm.timm_resnet,
    "hf_vit_sharded": lm.hf_vit,
    "hf_resnet": lm.hf_resnet,
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_library_folder_loads_with_its_own_names_size_and_normalisation(folders, name):
    bundle = load_bundle(folders[name])
    meta = bundle.meta
    assert meta.format is (ModelFormat.TIMM if name.startswith("timm") else ModelFormat.TRANSFORMERS)
    assert meta.class_names == CLASS_NAMES and meta.num_classes == 10
    assert meta.input_size == [3, 28, 28]
    assert meta.mean == pytest.approx(MEAN) and meta.std == pytest.approx(STD)
    assert meta.architecture.split(":")[0] in ("timm", "transformers")
    with torch.no_grad():
        ours = bundle.model(X)
    assert torch.equal(ours, lm.logits(BUILDERS[name](), X))  # the same random init, saved and reloaded


def test_sharded_weights_are_read_from_every_shard(folders):
    shards = sorted(p.name for p in folders["hf_vit_sharded"].glob("model-*.safetensors"))
    assert len(shards) > 1 and (folders["hf_vit_sharded"] / "model.safetensors.index.json").is_file()
    bundle = load_bundle(folders["hf_vit_sharded"])
    assert set(bundle.sha256) >= set(shards)


def test_a_library_zip_is_read_as_the_workbench_upload_reads_it(folders):
    for name in ("timm_resnet", "hf_vit_sharded"):
        raw = lm.folder_zip(folders[name], {"README.md": b"# my model", ".gitattributes": b"*"})
        files = read_model_zip(raw, "m.zip")
        assert "README.md" not in files and "config.json" in files
        bundle = bundle_from_files(files, "m.zip")
        assert torch.equal(bundle.model(X), load_bundle(folders[name]).model(X))


def test_timm_folder_without_label_names_is_accepted_with_a_note(tmp_path):
    bundle = load_bundle(lm.save_timm(lm.timm_resnet(), tmp_path / "t", label_names=None))
    assert bundle.meta.class_names == [str(i) for i in range(10)]
    assert any("names no classes" in n for n in bundle.notes)


@pytest.mark.parametrize("bad", ["modeling_vit.py", "pytorch_model.bin", "weights.pt", "old.pth", "x.pkl", "last.ckpt"])
def test_a_file_that_could_run_code_is_refused_with_one_line(folders, tmp_path, bad):
    raw = lm.folder_zip(folders["hf_resnet"], {bad: b"anything"})
    with pytest.raises(UserError, match=rf"^{bad.replace('.', '[.]')} is refused: ") as err:
        read_model_zip(raw, "m.zip")
    assert "\n" not in str(err.value) and err.value.key == "library_file_refused"
    folder = shutil.copytree(folders["timm_resnet"], tmp_path / "f")
    (folder / bad).write_bytes(b"anything")
    with pytest.raises(UserError, match="is refused"):
        load_bundle(folder)


@pytest.mark.parametrize("key", ["auto_map", "custom_pipelines", "trust_remote_code"])
def test_a_config_asking_for_code_is_refused(folders, tmp_path, key):
    folder = shutil.copytree(folders["hf_resnet"], tmp_path / "f")
    config = json.loads((folder / "config.json").read_text())
    config[key] = {"AutoModelForImageClassification": "modeling.MyNet"} if key != "trust_remote_code" else True
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=f"config.json is refused: {key}") as err:
        load_bundle(folder)
    assert err.value.key == "library_remote_code"
    with pytest.raises(UserError, match="is refused"):
        read_model_zip(lm.folder_zip(folder), "m.zip")


def test_timm_model_args_that_load_files_are_refused(folders, tmp_path):
    folder = shutil.copytree(folders["timm_resnet"], tmp_path / "f")
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["checkpoint_path"] = "/etc/passwd"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="model_args 'checkpoint_path' is refused"):
        load_bundle(folder)


def test_unknown_architectures_and_non_classifiers_are_refused(folders, tmp_path):
    folder = shutil.copytree(folders["timm_resnet"], tmp_path / "t")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "no_such_net"}))
    with pytest.raises(UserError, match="has no architecture 'no_such_net'"):
        load_bundle(folder)
    folder = shutil.copytree(folders["hf_resnet"], tmp_path / "h")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["ResNetModel"]}))
    with pytest.raises(UserError, match="only image classifiers"):
        load_bundle(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(UserError, match="needs preprocessor_config.json"):
        load_bundle(folder)


def test_weights_that_do_not_fit_the_config_are_refused(folders, tmp_path):
    folder = shutil.copytree(folders["hf_resnet"], tmp_path / "h")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_sizes": [8, 32]}))
    with pytest.raises(UserError, match="do not fit ResNetForImageClassification"):
        load_bundle(folder)
    folder = shutil.copytree(folders["timm_resnet"], tmp_path / "t")
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no model.safetensors"):
        load_bundle(folder)


def test_every_cli_model_option_takes_a_library_folder(folders):
    assert load_model_file(str(folders["timm_vit"])).meta.architecture == "timm:vit_tiny_patch16_224"


def test_the_page_process_checks_a_library_upload_without_torch(folders):
    code = f"""
import sys
from core.formats.libmeta import meta_from_files, read_model_zip
from tests.library_models import folder_zip
from pathlib import Path
meta = meta_from_files(read_model_zip(folder_zip(Path({str(folders["hf_vit_sharded"])!r})), "m.zip"))
assert meta.class_names[0] == "zero", meta
heavy = [m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "transformers", "safetensors")]
assert not heavy, heavy
"""
    # tests.library_models imports torch; the page-side check must not, so it is zipped by hand here
    code = code.replace("from tests.library_models import folder_zip\n", _FOLDER_ZIP)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


_FOLDER_ZIP = """
import io, zipfile
def folder_zip(folder):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, arcname="m/" + f.name)
    return buf.getvalue()
"""


def test_the_workbench_takes_a_library_zip_and_keeps_its_layout(tmp_path, demo_dir, folders):
    from core.app import jobs, uploads
    from core.app.store import Store
    from core.app.stored_models import stored_bundle
    from tests.wb_helpers import ALICE, seed_demo_cache

    home = tmp_path / "home"
    seed_demo_cache(home, demo_dir)
    store = Store(home)
    try:
        bad = shutil.copytree(folders["hf_vit_sharded"], tmp_path / "bad")
        (bad / "pytorch_model.bin").write_bytes(b"x")
        with pytest.raises(UserError, match="pytorch_model.bin is refused"):
            uploads.upload_model_zip(store, lm.folder_zip(bad), "bad.zip", ALICE)
        assert store.projects() == []
        pid = uploads.upload_model_zip(store, lm.folder_zip(folders["hf_vit_sharded"]), "vit.zip", ALICE)
        model = store.model(store.project(pid)["base_model_id"])
        assert sorted(p.name for p in Path(model["path"]).iterdir()) == [
            "config.json", "model.safetensors", "preprocessor_config.json",
        ]  # fmt: skip
        assert model["meta"]["class_names"] == CLASS_NAMES
        assert torch.equal(stored_bundle(store, model["id"]).model(X), lm.logits(lm.hf_vit(), X))
    finally:
        jobs.stop_spawned_workers()
