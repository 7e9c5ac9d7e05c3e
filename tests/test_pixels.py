"""Decoded evaluation images kept in the store (core/app/pixels.py): decoded once, read back equal."""

from __future__ import annotations

import numpy as np
import torch

from core.app import pixels
from core.app.store import Store
from core.engine import inference
from core.formats.datasets import load_dataset, load_pixels
from tests.conftest import TINY_CLASSES


def test_a_set_is_decoded_once_and_read_back_equal(tmp_path, tiny_dataset_dir, tiny_meta, monkeypatch):
    store = Store(tmp_path / "home")
    ds = load_dataset(tiny_dataset_dir, list(TINY_CLASSES))
    first = pixels.eval_images(store, ds, tiny_meta)
    expected = load_pixels(ds, tiny_meta.input_size)
    assert np.array_equal(np.asarray(first.pixels), expected)
    assert len(list(store.artifact_dir(pixels.PIXELS_DIR).glob("*.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(inference, "iter_pixel_batches", no_decoding)
    again = pixels.eval_images(store, ds, tiny_meta)  # a later run, another process: read from the store
    assert np.array_equal(np.asarray(again.pixels), expected)
    assert torch.equal(again[0:3], first[0:3])  # the same normalised tensors
    assert len(list(store.artifact_dir(pixels.PIXELS_DIR).glob("*.npy"))) == 1
