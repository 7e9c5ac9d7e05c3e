"""The demo model's answers on the demo's evaluation rows and pool, kept beside the built demo.

Opening the demo predicts 7,000 images with its model (the evaluation set and the pool): most of the time "Open
the demo" takes. The answers depend only on the model's bytes, the images' bytes, which rows are predicted, the
kind of device and the code that reads and predicts them. The first store that opens a built demo keeps them in
the demo's folder (``answers/<key>/``), and every later store that opens the same build (the demo opened again
after a reset, a new workbench home seeded from the same build, each test's store) reads them instead. The key
is a hash of all of the above, so a changed file or changed inference code is a new key: nothing stale is read.
The metrics are always computed again from the kept answers; only the predictions are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.formats.meta import file_sha256, sha256_bytes

ANSWERS_DIR = "answers"
EVAL_FILE = "evaluation.npz"
POOL_FILE = "pool.npz"
# The code whose change changes an answer: image reading and preprocessing, the architectures, prediction.
_CODE = ("core/formats/datasets.py", "core/formats/architectures.py", "core/engine/inference.py")
_ROOT = Path(__file__).resolve().parents[2]


def answers_key(model_sha: dict[str, str], eval_sha: str, rows: list[str], pool_sha: str, device: str) -> str:
    """The key of one set of answers: the model's file hashes, the two image folders' hashes, the evaluation
    rows predicted (their paths, in order), the device kind and the hashes of the prediction code."""
    code = [file_sha256(_ROOT / f) for f in _CODE]
    parts = [sorted(model_sha.items()), eval_sha, sha256_bytes("\n".join(rows).encode()), pool_sha, device, code]
    return sha256_bytes(json.dumps(parts).encode())[:32]


@dataclass(frozen=True)
class DemoAnswers:
    """The kept answers of one key in a built demo's folder (they may not exist yet)."""

    folder: Path

    @classmethod
    def of(cls, demo_root: Path, key: str) -> DemoAnswers:
        return cls(Path(demo_root) / ANSWERS_DIR / key)

    def complete(self) -> bool:
        return (self.folder / EVAL_FILE).is_file() and (self.folder / POOL_FILE).is_file()

    def evaluation(self, n_rows: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The kept (predictions, confidences) of the evaluation rows; None if absent or not ``n_rows`` long."""
        return _read(self.folder / EVAL_FILE, n_rows) if self.complete() else None

    def pool(self, n_items: int) -> tuple[np.ndarray, np.ndarray] | None:
        return _read(self.folder / POOL_FILE, n_items) if self.complete() else None

    def keep(self, evaluation_npz: Path, pool_npz: Path) -> None:
        """Keep a store's two answer files here. Written to a side folder and renamed, so a reader sees the
        whole set or none; when another process kept the same key first, its copy stays."""
        if self.complete():
            return
        tmp = self.folder.with_name(f"{self.folder.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copyfile(evaluation_npz, tmp / EVAL_FILE)
        shutil.copyfile(pool_npz, tmp / POOL_FILE)
        try:
            tmp.rename(self.folder)
        except OSError:  # kept meanwhile by another process
            shutil.rmtree(tmp, ignore_errors=True)


def _read(path: Path, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            preds, conf = np.asarray(z["predictions"]), np.asarray(z["confidences"])
    except (OSError, KeyError, ValueError):
        return None
    return (preds, conf) if len(preds) == n and len(conf) == n else None
