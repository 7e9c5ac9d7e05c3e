"""Dataset loading: manifest and folder-per-class layouts, zips, and reporting of every bad row."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.engine.inference import load_tensors
from core.errors import UserError
from core.formats.datasets import dataset_from_zip_bytes, load_dataset, open_image
from core.formats.zipsafety import read_zip_members

CLASSES = ["cat", "dog", "fox"]


def png_bytes(colour=(255, 0, 0), size=(12, 12), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def test_folder_per_class_layout(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            (tmp_path / cls / f"{i}.jpg").write_bytes(png_bytes(fmt="JPEG"))
    ds = load_dataset(tmp_path, CLASSES)
    assert len(ds) == 6 and sorted(set(ds.labels.tolist())) == [0, 1]


def test_labels_by_index_and_attributes(tiny_dataset_dir):
    text = (tiny_dataset_dir / "manifest.csv").read_text().replace(",cat,", ",0,")
    (tiny_dataset_dir / "manifest.csv").write_text(text)
    ds = load_dataset(tiny_dataset_dir, CLASSES)
    assert ds.labels[0] == 0 and set(ds.attributes) == {"red", "blue"}


def test_keep_good_rows_reports_every_bad_one(tiny_dataset_dir):
    lines = (tiny_dataset_dir / "manifest.csv").read_text().splitlines()
    lines.append("images/nothing.png,cat,red")
    lines.append("images/img_00001.png,zebra,red")
    lines.append("notes.txt,cat,red")
    (tiny_dataset_dir / "manifest.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match="3 unusable row"):
        load_dataset(tiny_dataset_dir, CLASSES)
    ds = load_dataset(tiny_dataset_dir, CLASSES, keep_good_rows=True)
    assert len(ds) == 12 and len(ds.rejected) == 3
    joined = " | ".join(ds.rejected)
    assert "missing" in joined and "zebra" in joined and "notes.txt" in joined


def test_zip_with_top_folder_and_tensors(tmp_path, tiny_meta):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("set/manifest.csv", "path,label,attribute\na.png,dog,x\nb.png,fox,y\n")
        zf.writestr("set/a.png", png_bytes((0, 255, 0), (30, 20)))
        zf.writestr("set/b.png", png_bytes((0, 0, 255)))
    ds = dataset_from_zip_bytes(buf.getvalue(), "set.zip", CLASSES, tmp_path / "x")
    x, y = load_tensors(ds, tiny_meta)
    assert tuple(x.shape) == (2, 3, 12, 12) and y.tolist() == [1, 2]
    # green image, normalised with mean 0.5 / std 0.25: G channel = (1 - 0.5) / 0.25 = 2
    assert np.allclose(x[0, 1].numpy(), 2.0) and np.allclose(x[0, 0].numpy(), -2.0)


def test_manifest_path_outside_dataset_is_rejected(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "secret.png").write_bytes(png_bytes())
    (tmp_path / "ds" / "manifest.csv").write_text("path,label\n../secret.png,cat\n")
    with pytest.raises(UserError, match="outside the dataset"):
        load_dataset(tmp_path / "ds", CLASSES)


def test_gif_and_symlink_refused(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="GIF")
    with pytest.raises(UserError, match="GIF"):
        open_image(buf.getvalue(), "x.png")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        info = zipfile.ZipInfo("link.png")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UserError, match="symbolic link"):
        read_zip_members(zbuf.getvalue(), "l.zip")


def test_missing_columns_named(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,class\n")
    with pytest.raises(UserError, match="path,label"):
        load_dataset(tmp_path, CLASSES)
