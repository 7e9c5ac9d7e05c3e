"""Decoded evaluation images kept in the store: each set of rows is decoded from its image files once,
for every run, α preview and worker process that uses it."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from core.app.budget import BudgetError, check_budget
from core.app.store import Store
from core.engine.inference import DiskImages
from core.formats.datasets import ImageDataset
from core.formats.meta import sha256_bytes

PIXELS_DIR = "pixels"


def eval_images(store: Store, ds: ImageDataset, meta) -> DiskImages:
    """A set of evaluation rows, decoded: read from the store's ``pixels/`` cache, a memory-mapped .npy
    of uint8 pixels per (rows, input size), written the first time a run or an α preview needs them, so
    that a fresh worker process and every later run of the project skip the decoding. It is read a
    batch at a time, so memory does not grow with the set. When the store's disk budget has no room
    for it, the images are decoded into an anonymous temporary file instead."""
    key = json.dumps([str(ds.root), list(meta.input_size), [r.path for r in ds.records]])
    f = store.artifact_dir(PIXELS_DIR) / f"{sha256_bytes(key.encode())[:24]}.npy"
    shape = (len(ds), *meta.input_size)
    if not len(ds):
        return DiskImages.decode(ds, meta)  # nothing to keep (and an empty file cannot be mapped)
    if not f.is_file():
        try:
            check_budget(store, math.prod(shape), "decoded evaluation images")
        except BudgetError:
            return DiskImages.decode(ds, meta)
        tmp = f.with_name(f"{f.stem}.{os.getpid()}.tmp.npy")
        try:
            DiskImages.decode(ds, meta, into=np.lib.format.open_memmap(tmp, "w+", np.uint8, shape))
            tmp.replace(f)  # whole or not at all
        finally:
            tmp.unlink(missing_ok=True)
    return DiskImages(np.load(f, mmap_mode="r"), meta.mean, meta.std)


def rows_of_set(store: Store, whole: ImageDataset, rows: ImageDataset, meta) -> DiskImages:
    """``rows`` (some rows of the evaluation set ``whole``, by path: a run's reported rows) read from the
    whole set's decoded cache, the one every repair of the project reads, so no second copy is decoded and
    kept. When a path of ``rows`` is not exactly one row of ``whole``, ``rows`` get a cache of their own."""
    where: dict[str, list[int]] = {}
    for i, r in enumerate(whole.records):
        where.setdefault(r.path, []).append(i)
    if any(len(where.get(r.path, ())) != 1 for r in rows.records) or str(rows.root) != str(whole.root):
        return eval_images(store, rows, meta)
    return eval_images(store, whole, meta).subset([where[r.path][0] for r in rows.records])
