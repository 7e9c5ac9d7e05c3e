"""Rebuild the photo suite's assets: the reduced CIFAR-10 copy and the biased model.

``python scripts/build_photo_assets.py [--copy-from ../shared/data/cifar10/cifar10-test-jpg.zip]``

1. With ``--copy-from``: copy the 4,000 test photos of the suite's four classes, byte for byte,
   into ``assets/photo/cifar4-jpg.zip`` (stored, in name order, fixed timestamps: reproducible).
2. Train the tint-biased SmallCNN into ``assets/photo/model/`` (deterministic on CPU, one thread).
"""

import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.bench.photo_suite import CLASS_NAMES, MODEL_DIR, ZIP_PATH, train_photo_model  # noqa: E402


def copy_photos(src: Path) -> int:
    n = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(ZIP_PATH, "w", zipfile.ZIP_STORED) as zout:
        for name in sorted(zin.namelist()):
            parts = name.split("/")
            if len(parts) == 3 and parts[1] in CLASS_NAMES and name.endswith(".jpg"):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                zout.writestr(info, zin.read(name))
                n += 1
    return n


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copy-from", type=Path, help="the shared CIFAR-10 test zip")
    args = ap.parse_args()
    if args.copy_from:
        print(f"copied {copy_photos(args.copy_from)} photos into {ZIP_PATH}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    info = train_photo_model(MODEL_DIR)
    print(json.dumps(info, indent=2))
    print(f"wrote {MODEL_DIR} in {time.perf_counter() - t0:.1f} s")
