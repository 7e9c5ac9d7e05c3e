"""The photo suite: real CIFAR-10 photos with a colour cast that the model learned as a shortcut.

The demo's shortcut is *local* (a small coloured tag in one corner). This suite's is *global*:
every pixel of a photo is blended towards a tint colour, like the white balance of one camera or
the scanner of one hospital. In the training photos the tint agrees with the class most of the
time (:data:`TRAIN_AGREEMENT`); in the evaluation photos it is random, so the tint-conflicting
groups expose the bias. Four classes (airplane, automobile, frog, horse) keep the model small
enough to retrain on 2 CPU cores in seconds.

The photos are 4,000 of the 10,000 CIFAR-10 test images (Krizhevsky 2009), 1,000 per class,
copied byte for byte from ``shared/data/cifar10`` into ``assets/photo/cifar4-jpg.zip`` (see
ATTRIBUTION.md there) by ``python scripts/build_photo_assets.py``, which also trains the shipped
model (:func:`train_photo_model`). Everything is seeded and deterministic on CPU.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.app.demo import write_suite
from core.engine.training import random_hflip, train_classifier
from core.formats.architectures import SmallCNN
from core.formats.bundle import BundleMeta, save_bundle

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "photo"
ZIP_PATH = ASSETS / "cifar4-jpg.zip"
MODEL_DIR = ASSETS / "model"

CLASS_NAMES = ["airplane", "automobile", "frog", "horse"]
# One tint per class, far apart in colour.
TINTS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (235, 215, 40)}
TINT_NAMES = list(TINTS)
TINT_STRENGTH = 0.3  # share of the tint colour in each pixel
TRAIN_AGREEMENT = 0.9
MEAN = [0.49, 0.49, 0.45]
STD = [0.22, 0.22, 0.24]
N_TRAIN, N_EVAL, N_VAL = 2000, 1400, 200  # the rest (600) is the pool
POOL_CONFLICT_SHARE = 0.85
N_COUNTER = 16


def read_photos() -> tuple[np.ndarray, np.ndarray]:
    """All photos of the reduced copy: uint8 [4000,32,32,3] and int64 labels, in a fixed order."""
    images, labels = [], []
    with zipfile.ZipFile(ZIP_PATH) as zf:
        for name in sorted(zf.namelist()):
            if not name.endswith(".jpg"):
                continue
            cls = name.split("/")[-2]
            images.append(np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB"), dtype=np.uint8))
            labels.append(CLASS_NAMES.index(cls))
    return np.stack(images), np.array(labels, dtype=np.int64)


def add_tint(images: np.ndarray, tint_idx: np.ndarray, strength: float = TINT_STRENGTH) -> np.ndarray:
    """Blend every pixel of each image [N,H,W,3] towards its tint colour."""
    palette = np.array(list(TINTS.values()), dtype=np.float32)
    out = images.astype(np.float32) * (1 - strength) + palette[tint_idx][:, None, None, :] * strength
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def photo_meta() -> BundleMeta:
    return BundleMeta("small_cnn", len(CLASS_NAMES), CLASS_NAMES, [3, 32, 32], MEAN, STD)


def _splits(seed: int = 0):
    images, labels = read_photos()
    perm = np.random.default_rng(seed).permutation(len(labels))
    train = perm[:N_TRAIN]
    ev = perm[N_TRAIN : N_TRAIN + N_EVAL]
    pool = perm[N_TRAIN + N_EVAL :]
    return images, labels, train, ev, pool


def _conflicting(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = len(CLASS_NAMES)
    return (labels + rng.integers(1, k, size=len(labels))) % k


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div(255.0)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def train_photo_model(out_dir: str | Path = MODEL_DIR, epochs: int = 12, seed: int = 0) -> dict:
    """Train SmallCNN on the 2,000 tinted training photos (tint agrees with the class 90 %).

    Adam, lr 2e-3, batch 64, random horizontal flips, ``epochs`` epochs; seeded.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 7)
    images, labels, train, _, _ = _splits()
    y_np = labels[train]
    tints = np.where(rng.random(len(train)) < TRAIN_AGREEMENT, y_np, _conflicting(y_np, rng))
    x = _to_tensor(add_tint(images[train], tints))
    y = torch.from_numpy(y_np)
    model = SmallCNN(len(CLASS_NAMES), 3)
    train_classifier(model, x, y, epochs=epochs, lr=2e-3, seed=seed, augment=random_hflip)
    save_bundle(model.state_dict(), photo_meta(), out_dir)
    info = {
        "train_images": int(len(x)),
        "epochs": epochs,
        "tint_agreement": TRAIN_AGREEMENT,
        "tint_strength": TINT_STRENGTH,
        "seed": seed,
        "train_tint_agreement_measured": float((tints == y_np).mean()),
    }
    (Path(out_dir) / "train_info.json").write_text(json.dumps(info, indent=2))
    return info


def photo_splits(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Evaluation (random tints; ``val`` and ``test`` rows), pool (85 % tint-conflicting) and 16
    default counterexamples (tint-conflicting pool photos, class-balanced)."""
    rng = np.random.default_rng(seed + 1)
    images, labels, _, ev, pool = _splits()
    k = len(CLASS_NAMES)
    eval_tint = rng.integers(0, k, size=len(ev))
    pool_lab = labels[pool]
    pool_tint = np.where(rng.random(len(pool)) < POOL_CONFLICT_SHARE, _conflicting(pool_lab, rng), pool_lab)
    conflict = np.flatnonzero(pool_tint != pool_lab)
    counter: list[int] = []
    for c in range(N_COUNTER):
        counter.append(next(j for j in conflict if pool_lab[j] == c % k and j not in counter))
    split = np.array(["val"] * N_VAL + ["test"] * (N_EVAL - N_VAL))
    return {
        "eval": {"images": images[ev], "labels": labels[ev], "tints": eval_tint, "split": split},
        "pool": {"images": images[pool], "labels": pool_lab, "tints": pool_tint},
        "counterexamples": {"images": images[pool][counter], "labels": pool_lab[counter], "tints": pool_tint[counter]},
    }


def build_photo(out_dir: str | Path) -> dict[str, Path]:
    """Write ``model/``, ``eval/``, ``pool/`` and ``counterexamples/`` like :func:`core.app.demo.build_demo`."""
    parts = {
        name: {
            "rgb": add_tint(part["images"], part["tints"]),
            "labels": [CLASS_NAMES[i] for i in part["labels"]],
            "attributes": [TINT_NAMES[t] for t in part["tints"]],
            "split": list(part["split"]) if "split" in part else None,
        }
        for name, part in photo_splits().items()
    }
    return write_suite(out_dir, MODEL_DIR, parts)
