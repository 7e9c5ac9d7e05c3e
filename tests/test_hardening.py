"""Hostile or malformed inputs are refused (docs/ARCHITECTURE.md, "Untrusted input") with one line (exit 2 on the CLI, a UserError
in the workbench), never a traceback, and leave nothing behind. One regression test per case."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image, PngImagePlugin
from safetensors.torch import load_file, save_file

from core.app import compute, uploads
from core.app.store import Store
from core.cli import main
from core.errors import UserError
from core.formats.architectures import build_model
from core.formats.bundle import BundleMeta, build_and_validate, load_bundle, load_model_file
from core.formats.datasets import dataset_from_zip_bytes, load_dataset, open_image
from core.formats.meta import parse_meta_json, read_bundle_zip
from core.formats.zipsafety import read_zip_members
from tests.conftest import TINY_CLASSES, TINY_META
from tests.wb_helpers import ALICE, make_zip

CLASSES = TINY_CLASSES
GOOD_META = TINY_META


def png_bytes(colour=(255, 0, 0), size=(12, 12), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG", **save)
    return buf.getvalue()


def cli_refuses(argv: list[str], capsys) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr. Returns that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture()
def no_temp_left(tmp_path, monkeypatch):
    """Route temporary folders into a fresh one, and check it is empty afterwards."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    yield temp
    assert list(temp.iterdir()) == []


# ---- model metadata --------------------------------------------------------------------------
DEEP = b'{"a": ' * 5000 + b"1" + b"}" * 5000
HUGE_INT = json.dumps({**GOOD_META, "num_classes": 0}).replace('"num_classes": 0', '"num_classes": ' + "9" * 5000)


@pytest.mark.parametrize(
    "raw, words",
    [
        (DEEP, "nested too deeply"),
        (HUGE_INT.encode(), "cannot be read"),
        (json.dumps({**GOOD_META, "class_names": ["chat", "chien", "renard"]}).encode("latin-1"), "JSON"),
        (json.dumps({**GOOD_META, "class_names": ["gâteau", "b", "c"]}, ensure_ascii=False).encode("latin-1"), "UTF-8"),
        (json.dumps({**GOOD_META, "mean": [10**4000, 0, 0]}).encode(), "mean"),
    ],
    ids=["nested", "5000-digit-int", "latin1-ascii-ok-but-bad-json", "latin1", "int-too-big-for-float"],
)
def test_meta_parser_refuses(raw, words):
    if words == "JSON":  # plain ASCII Latin-1 is valid UTF-8; make it invalid JSON instead
        raw = raw[:-1]
    with pytest.raises(UserError, match=words):
        parse_meta_json(raw)


@pytest.mark.parametrize("content", [DEEP, HUGE_INT.encode(), '{"architecture": "é"}'.encode("latin-1")])
def test_cli_meta_file_refused_in_one_line(tiny_bundle_dir, tiny_dataset_dir, tmp_path, capsys, content):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes((tiny_bundle_dir / "model.safetensors").read_bytes())
    meta = tmp_path / "meta.json"
    meta.write_bytes(content)
    line = cli_refuses(
        [
            "evaluate",
            "--model",
            str(weights),
            "--meta",
            str(meta),
            "--data",
            str(tiny_dataset_dir),
            "--out",
            str(tmp_path / "m.json"),
        ],
        capsys,
    )
    assert "meta.json" in line


def test_bundle_zip_with_deep_model_json_refused_in_workbench_leaving_nothing(tmp_path, tiny_bundle_dir):
    store = Store(tmp_path / "home")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.json", DEEP)
        zf.writestr("model.safetensors", (tiny_bundle_dir / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match="nested too deeply"):
        uploads.upload_model_zip(store, buf.getvalue(), "m.zip", ALICE)
    assert not (store.artifacts / "incoming").exists() or not any((store.artifacts / "incoming").iterdir())
    assert store.projects() == []


def test_input_smaller_than_kernels_is_refused():
    meta = BundleMeta("convnext_tiny", 2, ["a", "b"], [3, 2, 2], [0.5] * 3, [0.25] * 3)
    state = build_model("convnext_tiny", 2).state_dict()
    with pytest.raises(UserError, match=r"cannot run on input_size \[3, 2, 2\]"):
        build_and_validate(meta, state, source="x", sha256={})


# ---- weight types ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.int8])
def test_non_float_weights_refused(tiny_bundle_dir, tiny_dataset_dir, tmp_path, capsys, dtype):
    state = load_file(str(tiny_bundle_dir / "model.safetensors"))
    state["classifier.weight"] = (state["classifier.weight"] * 10).to(dtype)
    save_file(state, str(tiny_bundle_dir / "model.safetensors"))
    with pytest.raises(UserError, match="floating point"):
        load_bundle(tiny_bundle_dir)
    line = cli_refuses(
        [
            "evaluate",
            "--model",
            str(tiny_bundle_dir),
            "--data",
            str(tiny_dataset_dir),
            "--out",
            str(tmp_path / "m.json"),
        ],
        capsys,
    )
    assert "classifier.weight" in line


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_cast_and_say_so(tiny_bundle_dir, dtype):
    state = load_file(str(tiny_bundle_dir / "model.safetensors"))
    save_file(
        {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()},
        str(tiny_bundle_dir / "model.safetensors"),
    )
    b = load_bundle(tiny_bundle_dir)
    assert b.notes == [f"weights stored as {str(dtype).replace('torch.', '')} were converted to float32"]
    assert all(p.dtype == torch.float32 for p in b.model.parameters())


def test_non_float_weights_refused_in_workbench_leaving_nothing(tmp_path, tiny_bundle_dir):
    store = Store(tmp_path / "home")
    state = load_file(str(tiny_bundle_dir / "model.safetensors"))
    state["classifier.bias"] = state["classifier.bias"].to(torch.bool)
    staged = store.artifact_dir("incoming") / "model_x"
    staged.mkdir()
    (staged / "model.json").write_bytes((tiny_bundle_dir / "model.json").read_bytes())
    save_file(state, str(staged / "model.safetensors"))
    payload = {"staged": str(staged), "filename": "m.zip", "weights": "model.safetensors"}
    with pytest.raises(UserError, match="bool"):
        compute.register_model(store, payload, ALICE)
    assert not staged.exists() and store.projects() == []


# ---- zips --------------------------------------------------------------------------------------
def _zip(files: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    return make_zip(files, method)


def _patch_central(raw: bytes, offset: int, fmt: str, value: int) -> bytes:
    """Change one field of the first central-directory header (and the local header's twin)."""
    out = bytearray(raw)
    c = raw.index(b"PK\x01\x02")
    struct.pack_into(fmt, out, c + offset, value)
    local_offsets = {8: 6, 10: 8}  # flags, method: central offset → local offset
    if offset in local_offsets:
        struct.pack_into(fmt, out, local_offsets[offset], value)
    return bytes(out)


MANIFEST = b"path,label\na.png,cat\n"


def _bad_zips() -> dict[str, tuple[bytes, str]]:
    good = {"manifest.csv": MANIFEST, "a.png": png_bytes()}
    lying = _patch_central(_zip(good), 24, "<I", 5)  # uncompressed size of manifest.csv: 5 bytes
    encrypted = _patch_central(_zip(good), 8, "<H", 0x1)
    method = _patch_central(_zip(good), 10, "<H", 99)
    deflated = _zip({"manifest.csv": MANIFEST * 50, "a.png": png_bytes()})
    start = deflated.index(b"manifest.csv") + len("manifest.csv")  # data follows the local header's name
    corrupt = deflated[:start] + b"\xff" * 12 + deflated[start + 12 :]
    return {
        "lying-size": (lying, "damaged"),
        "encrypted": (encrypted, "encrypted"),
        "unsupported-method": (method, "compression method 99"),
        "corrupt-deflate": (corrupt, "damaged"),
        "dot-member": (_zip({**good, ".": b"x"}), "no usable name"),
        "file-and-folder": (_zip({**good, "b": b"x", "b/c.png": png_bytes()}), "both a file and a folder"),
        "name-too-long": (_zip({**good, "x" * 300 + ".png": png_bytes()}), "longer than 255 bytes"),
        "same-name-twice": (_dup_zip(good), "more than once"),
    }


def _dup_zip(good: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in good.items():
            zf.writestr(name, data)
        with pytest.warns(UserWarning):
            zf.writestr("a.png", png_bytes((0, 0, 255)))
    return buf.getvalue()


@pytest.mark.parametrize("case", sorted(_bad_zips()))
def test_bad_zip_refused_everywhere_leaving_nothing(case, tmp_path, capsys, tiny_bundle_dir, no_temp_left):
    raw, words = _bad_zips()[case]
    with pytest.raises(UserError, match=words):
        read_zip_members(raw, "d.zip")
    target = tmp_path / "x"
    with pytest.raises(UserError, match=words):
        dataset_from_zip_bytes(raw, "d.zip", CLASSES, target)
    assert not target.exists() or not any(p.is_file() for p in target.rglob("*"))
    z = tmp_path / "d.zip"
    z.write_bytes(raw)
    line = cli_refuses(
        ["evaluate", "--model", str(tiny_bundle_dir), "--data", str(z), "--out", str(tmp_path / "m.json")], capsys
    )
    assert "d.zip" in line


def test_bad_bundle_zip_member_refused():
    raw = _patch_central(
        _zip({"model.json": json.dumps(GOOD_META).encode(), "model.safetensors": b"x" * 100}), 8, "<H", 1
    )
    with pytest.raises(UserError, match="encrypted"):
        read_bundle_zip(raw, "m.zip")


# ---- images ------------------------------------------------------------------------------------
def _ztxt_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "A" * 5_000_000, zip=True)
    return png_bytes(pnginfo=info)


def _iccp_png() -> bytes:
    return png_bytes(icc_profile=b"\0" * 5_000_000)


@pytest.mark.parametrize("make", [_ztxt_png, _iccp_png], ids=["zTXt", "iCCP"])
def test_png_with_huge_compressed_chunk_refused(make, tmp_path, tiny_bundle_dir, capsys):
    data = make()
    with pytest.raises(UserError, match="a.png"):
        open_image(data, "a.png")
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "manifest.csv").write_bytes(MANIFEST)
    (ds / "a.png").write_bytes(data)
    cli_refuses(
        ["evaluate", "--model", str(tiny_bundle_dir), "--data", str(ds), "--out", str(tmp_path / "m.json")], capsys
    )


def test_png_with_huge_chunk_refused_in_pool_upload(tmp_path):
    store = Store(tmp_path / "home")
    pid = store.create_project("p", ALICE)
    with pytest.raises(UserError, match="a.png"):
        uploads.upload_pool_zip(store, pid, _zip({"a.png": _ztxt_png()}), "pool.zip", ALICE)
    with pytest.raises(UserError, match="a.png"):
        uploads.upload_single_images(store, pid, [("a.png", _iccp_png())], "", ALICE)
    assert store.datasets(pid) == []
    assert not (store.artifacts / "incoming").exists() or not any((store.artifacts / "incoming").iterdir())


@pytest.mark.parametrize("side, words", [(50, "is 50×50 pixels, more than the limit of 2000"),
                                         (80, "has more than twice the limit of 2000 pixels")])  # fmt: skip
def test_an_image_over_the_pixel_limit_is_one_line_naming_the_limit(side, words, tmp_path, tiny_bundle_dir):
    """Pillow's DecompressionBombWarning (over the limit) would print two lines before the refusal, and its
    DecompressionBombError (over twice the limit) read as an unreadable image: a real CLI process, real stderr."""
    ds = _manifest_dataset(tmp_path / "ds", MANIFEST)
    (ds / "a.png").write_bytes(png_bytes(size=(side, side)))
    done = subprocess.run(
        [sys.executable, "-m", "core", "evaluate", "--model", str(tiny_bundle_dir), "--data", str(ds),
         "--out", str(tmp_path / "m.json")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "BIASREPAIR_MAX_IMAGE_PIXELS": "2000", "PYTHONWARNINGS": "default"},
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "a.png" in lines[0], done.stderr
    assert "BIASREPAIR_MAX_IMAGE_PIXELS" in lines[0]


# ---- manifests ---------------------------------------------------------------------------------
def _manifest_dataset(root: Path, manifest: bytes) -> Path:
    root.mkdir()
    (root / "a.png").write_bytes(png_bytes())
    (root / "manifest.csv").write_bytes(manifest)
    return root


@pytest.mark.parametrize(
    "manifest, words",
    [
        ("path,label\na.png,²\n".encode(), "unknown label"),
        (b"path,label\na.png,cat,extra,more\n", "2 more field"),
        (b"path,label\na.png,cat\n" + b"b.png," + b"x" * 200_000 + b"\n", "line 3 cannot be read"),
        ("path,label,attribute\na.png,cat,rouge foncé\n".encode("latin-1"), "not UTF-8"),
        (b"path,label\n" + b"d" * 256 + b"/a.png,cat\n", "longer than 255 bytes"),
    ],
    ids=["unicode-digit", "extra-fields", "200k-field", "latin1", "long-component"],
)
def test_bad_manifest_refused_in_one_line(manifest, words, tmp_path, tiny_bundle_dir, capsys):
    ds = _manifest_dataset(tmp_path / "ds", manifest)
    with pytest.raises(UserError, match=words):
        load_dataset(ds, CLASSES)
    line = cli_refuses(
        ["evaluate", "--model", str(tiny_bundle_dir), "--data", str(ds), "--out", str(tmp_path / "m.json")], capsys
    )
    assert len(line) < 2000


def test_bad_manifest_in_eval_upload_leaves_nothing(tmp_path, tiny_bundle_dir):
    store = Store(tmp_path / "home")
    staged = store.artifact_dir("incoming") / "model_x"
    staged.mkdir()
    for name in ("model.json", "model.safetensors"):
        (staged / name).write_bytes((tiny_bundle_dir / name).read_bytes())
    pid = compute.register_model(
        store, {"staged": str(staged), "filename": "m.zip", "weights": "model.safetensors"}, ALICE
    )["project_id"]
    raw = _zip({"manifest.csv": b"path,label\na.png,cat,1,2\n", "a.png": png_bytes()})
    with pytest.raises(UserError, match="more field"):
        uploads.upload_eval_zip(store, pid, raw, "eval.zip", ALICE)
    assert store.datasets(pid) == []
    assert not any((store.artifacts / "incoming").iterdir())


def test_duplicate_manifest_paths_refused_or_deduplicated_with_a_reason(tmp_path):
    ds = _manifest_dataset(tmp_path / "ds", b"path,label\na.png,cat\n./a.png,dog\na.png,cat\n")
    with pytest.raises(UserError, match="listed once"):
        load_dataset(ds, CLASSES)
    kept = load_dataset(ds, CLASSES, keep_good_rows=True)
    assert len(kept) == 1 and len(kept.rejected) == 2
    assert all("same image as line 2" in r for r in kept.rejected)


def test_folder_mode_refuses_symlink_to_file_outside(tmp_path):
    (tmp_path / "secret.png").write_bytes(png_bytes())
    ds = tmp_path / "ds"
    (ds / "cat").mkdir(parents=True)
    (ds / "cat" / "a.png").write_bytes(png_bytes())
    os.symlink(tmp_path / "secret.png", ds / "cat" / "b.png")
    with pytest.raises(UserError, match="outside the dataset"):
        load_dataset(ds, CLASSES)
    kept = load_dataset(ds, CLASSES, keep_good_rows=True)
    assert [r.path for r in kept.records] == ["cat/a.png"]


def test_folder_mode_refuses_symlinked_class_folder_outside(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.png").write_bytes(png_bytes())
    ds = tmp_path / "ds"
    (ds / "cat").mkdir(parents=True)
    (ds / "cat" / "a.png").write_bytes(png_bytes())
    os.symlink(tmp_path / "elsewhere", ds / "dog")
    with pytest.raises(UserError, match="outside the dataset"):
        load_dataset(ds, CLASSES)


def test_meta_file_helper_used_by_load_model_file(tmp_path, tiny_bundle_dir):
    meta = tmp_path / "meta.json"
    meta.write_bytes(b"\xff\xfe{}")
    with pytest.raises(UserError, match="UTF-8"):
        load_model_file(str(tiny_bundle_dir / "model.safetensors"), str(meta))
