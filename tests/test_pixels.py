"""Decoded evaluation images kept in the store (core/app/pixels.py): decoded once, read back equal; some rows of
a set read out of the whole set's copy, or decoded on their own when they are not exactly rows of it."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from core.app import pixels
from core.app.store import Store
from core.engine import inference
from core.formats.datasets import load_dataset, load_pixels, write_manifest_dataset
from tests.conftest import TINY_CLASSES, make_images


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


def _cache_files(store: Store) -> int:
    return len(list(store.artifact_dir(pixels.PIXELS_DIR).glob("*.npy")))


def test_rows_of_the_set_are_read_out_of_the_whole_sets_cache(tmp_path, tiny_dataset_dir, tiny_meta, monkeypatch):
    store = Store(tmp_path / "home")
    whole = load_dataset(tiny_dataset_dir, list(TINY_CLASSES))
    rows = whole.subset([7, 2, 5])
    pixels.eval_images(store, whole, tiny_meta)  # decoded for the project's first repair

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(inference, "iter_pixel_batches", no_decoding)
    got = pixels.rows_of_set(store, whole, rows, tiny_meta)
    expected = inference.normalize(load_pixels(rows, tiny_meta.input_size), tiny_meta.mean, tiny_meta.std)
    assert torch.equal(got[0:3], expected)
    assert _cache_files(store) == 1  # the whole set's copy, none of the rows' own


def test_rows_not_exactly_in_the_set_get_their_own_decoded_copy(tmp_path, tiny_dataset_dir, tiny_meta):
    """The fallback: rows whose images are not one row each of the whole set (another folder with the same
    file names, a path the set lists twice or not at all) are decoded from their own files, never read out
    of the whole set's copy at a wrong place."""
    store = Store(tmp_path / "home")
    names = list(TINY_CLASSES)
    whole = load_dataset(tiny_dataset_dir, names)
    pixels.eval_images(store, whole, tiny_meta)  # the whole set's copy exists, as after a repair
    # The same file names in another folder, other images.
    other_dir = write_manifest_dataset(tmp_path / "other", make_images(12, seed=1), [names[i % 3] for i in range(12)])
    other = load_dataset(other_dir, names).subset([0, 3])
    twice = dataclasses.replace(whole, records=[whole.records[0], *whole.records])  # row 0's path listed twice
    cases = {
        "another folder": (whole, other),
        "a path listed twice": (twice, whole.subset([0, 1])),
        "a path the set lacks": (whole.subset([1, 2, 3]), whole.subset([0, 2])),
    }
    for case, (of, rows) in cases.items():
        got = pixels.rows_of_set(store, of, rows, tiny_meta)
        expected = load_pixels(rows, tiny_meta.input_size)
        assert len(got) == len(rows), case
        assert torch.equal(got[0 : len(rows)], inference.normalize(expected, tiny_meta.mean, tiny_meta.std)), case
