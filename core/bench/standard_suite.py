"""The standard-architecture suite: torchvision models trained here from scratch on a planted shortcut.

The demo and photo suites use the repository's small CNN (29k parameters). This suite asks whether
a repair keeps what works on the architectures people actually ship: BatchNorm everywhere, dropout,
squeeze-and-excitation, 1.5–11 M parameters. Two parts, each a :class:`core.bench.suites.Suite`:

* ``standard-resnet18``: torchvision ``resnet18`` (11.2 M parameters) on the photo suite's tinted
  CIFAR-10 photos (global colour-cast shortcut, 90 % agreement in training), 32×32 px.
* ``standard-mobilenet``: torchvision ``mobilenet_v3_small`` (1.5 M parameters, BatchNorm,
  dropout, SE blocks) on the demo's tagged MNIST digits (corner-tag shortcut, 99 % agreement), 28×28 px.
* ``standard-vit``: a transformer, timm's ``VisionTransformer`` with small dimensions (:data:`VIT_ARGS`:
  4×4 px patches, so 49 tokens and a class token; width 64, 4 blocks, 4 heads; 0.14 M parameters, LayerNorm,
  no BatchNorm) on the same tagged digits. Its blocks output tokens, not feature maps. It is saved as a
  timm folder (``config.json`` + ``model.safetensors``, docs/FORMATS.md), the layout a user brings.

Both are built with ``weights=None`` (nothing downloaded) and trained on the same training images
as the small-CNN suites, with the same evaluation set, pool and validation rows, so the numbers
compare across suites. Training is seeded and single-threaded, so a rebuild gives the same weights.
The trained weights are too large to ship (ResNet-18: 45 MB), so they are built on first use and
cached under :func:`cache_dir` (git-ignored), with progress printed to stderr; about 2 to 9 minutes
each on one CPU core.

**Reference images** (:func:`reference_pixels`, also for the demo and photo suites): unlabelled
*typical* inputs for the function-space anchor and the label-free kept estimate. They are drawn
from the suite's training images with the training distribution's shortcut (agreeing as often as
in training), i.e. the kind of image the model meets in use. They are never evaluation rows, so no
reported number is computed on an image the repair was anchored on.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from core import settings
from core.app import demo
from core.bench import marks
from core.bench import photo_suite as ps
from core.engine.inference import normalize
from core.engine.runfolder import BUNDLE_WEIGHTS
from core.engine.training import random_hflip
from core.formats.architectures import build_model
from core.formats.bundle import BundleMeta, save_bundle
from core.formats.datasets import write_manifest_dataset
from core.formats.libmeta import library_meta
from core.formats.libraries import library_model
from core.formats.meta import LibrarySource, ModelFormat

N_REFERENCE = 512
CACHE_VERSION = 1

PARTS = {
    # part name: (architecture, data, epochs, lr)
    "standard-resnet18": ("resnet18", "photo", 15, 1e-3),
    "standard-mobilenet": ("mobilenet_v3_small", "demo", 8, 2e-3),
    # Shortcuts that are not a colour (core.bench.marks): a mark's corner on the photos, its shape on the digits.
    "mark-resnet18": ("resnet18", "corner", 15, 1e-3),
    "shape-mobilenet": ("mobilenet_v3_small", "shape", 8, 2e-3),
    # A transformer (timm's VisionTransformer, VIT_ARGS), saved as a timm folder.
    "standard-vit": ("timm:vit_tiny_patch16_224", "demo", 15, 1e-3),
}
# The small ViT's dimensions: timm's vit_tiny_patch16_224 recipe shrunk for 28×28 digits.
VIT_ARGS = {"img_size": 28, "patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0}
PHOTO_SOURCES = ("photo", "corner")  # sources built on the CIFAR-10 photos (the others on the MNIST digits)


def cache_dir() -> Path:
    """Where built base models are cached: ``$BIASREPAIR_CACHE`` or ``.cache/`` in the repository."""
    env = settings.CACHE.get()
    root = Path(env) if env else Path(__file__).resolve().parents[2] / ".cache"
    return root / f"standard_suite_v{CACHE_VERSION}"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- training data per source suite ---------------------------------------------------------------
def training_data(source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The source suite's biased training set: uint8 RGB [N,H,W,3], labels, agreeing-attribute mask."""
    if source == "photo":
        rng = np.random.default_rng(7)  # the same draw train_photo_model makes (seed 0 + 7)
        images, labels, train, _, _ = ps._splits()
        y = labels[train]
        tints = np.where(rng.random(len(train)) < ps.TRAIN_AGREEMENT, y, ps._conflicting(y, rng))
        return ps.add_tint(images[train], tints), y, tints == y
    if source == "demo":
        rgb, labels, colours = demo.training_images()
        return rgb, labels, colours == demo.CLASS_TAG[labels]
    return marks.training_data(source)


def reference_pixels(source: str, n: int = N_REFERENCE, seed: int = 123) -> np.ndarray:
    """``n`` typical unlabelled images (uint8 [n,3,H,W]) from ``source``'s training distribution."""
    rgb, _, _ = training_data(source)
    idx = np.sort(np.random.default_rng(seed).choice(len(rgb), size=min(n, len(rgb)), replace=False))
    return np.ascontiguousarray(rgb[idx].transpose(0, 3, 1, 2))


def _meta(arch: str, source: str) -> BundleMeta:
    if source in PHOTO_SOURCES:
        meta = BundleMeta(arch, len(ps.CLASS_NAMES), ps.CLASS_NAMES, [3, 32, 32], ps.MEAN, ps.STD)
    else:
        meta = BundleMeta(arch, 10, demo.CLASS_NAMES, [3, 28, 28], demo.MEAN, demo.STD)
    if not arch.startswith("timm:"):
        return meta
    config = {  # what timm's own save_for_hf writes for this model
        "architecture": arch.removeprefix("timm:"),
        "num_classes": meta.num_classes,
        "label_names": meta.class_names,
        "model_args": VIT_ARGS,
        "pretrained_cfg": {"input_size": meta.input_size, "mean": meta.mean, "std": meta.std},
    }
    return library_meta(LibrarySource(ModelFormat.TIMM, config))


def new_model(part: str) -> torch.nn.Module:
    """``part``'s network with random initial weights (torchvision, or timm for the ViT)."""
    arch, source, _, _ = PARTS[part]
    meta = _meta(arch, source)
    return library_model(meta) if meta.library is not None else build_model(arch, meta.num_classes)


def train_standard_model(
    part: str, out_dir: str | Path, seed: int = 0, log=_log, epochs: int | None = None, n_images: int | None = None
) -> dict:
    """Train ``part``'s model from scratch on its biased training set; save it (a bundle, or a timm
    folder for the ViT). ``epochs`` and ``n_images`` (the first images of the training set) shrink the
    recipe, for tests only: the suite's cached model is always trained with the recipe of :data:`PARTS`."""
    arch, source, recipe_epochs, lr = PARTS[part]
    epochs = epochs or recipe_epochs
    meta = _meta(arch, source)
    rgb, y_np, agree = (a[:n_images] for a in training_data(source))
    x = normalize(rgb.transpose(0, 3, 1, 2), meta.mean, meta.std)
    y = torch.from_numpy(y_np)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = new_model(part)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * ((len(x) + 63) // 64))
        g = torch.Generator().manual_seed(seed)
        augment = random_hflip if source == "photo" else None  # a flip would move the corner mark
        t0 = time.perf_counter()
        model.train()
        for ep in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            total = 0.0
            for start in range(0, len(x), 64):
                idx = perm[start : start + 64]
                xb = x[idx] if augment is None else augment(x[idx], g)
                loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            log(f"  {part}: epoch {ep + 1}/{epochs}  loss {total / len(x):.3f}  ({time.perf_counter() - t0:.0f} s)")
        model.eval()
    finally:
        torch.set_num_threads(threads)
    save_bundle(model.state_dict(), meta, out_dir)
    info = {
        "part": part,
        "architecture": arch,
        "data": source,
        "train_images": int(len(x)),
        "epochs": epochs,
        "lr": lr,
        "seed": seed,
        "shortcut_agreement_measured": float(agree.mean()),
        "seconds": time.perf_counter() - t0,
    }
    (Path(out_dir) / "train_info.json").write_text(json.dumps(info, indent=2))
    return info


def base_model_dir(part: str, log=_log) -> Path:
    """The cached base model of ``part``, trained on first use (a few minutes, progress on stderr)."""
    out = cache_dir() / part
    if not (out / BUNDLE_WEIGHTS).is_file():
        log(f"building the {part} base model (once; cached in {out}) …")
        tmp = out.with_name(out.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        train_standard_model(part, tmp, log=log)
        tmp.rename(out)
    return out


def build_standard(part: str, out_dir: str | Path) -> dict[str, Path]:
    """Write ``model/``, ``eval/``, ``pool/``, ``counterexamples/`` and ``reference/`` for ``part``.

    Evaluation set, pool and counterexamples are the source suite's own (same images, same
    attributes, same ``val`` rows); ``reference/`` holds the typical unlabelled images.
    """
    _, source, _, _ = PARTS[part]
    model_dir = base_model_dir(part)
    if source in ("corner", "shape"):
        parts, names = marks.parts(source), ps.CLASS_NAMES if source == "corner" else demo.CLASS_NAMES
    elif source == "photo":
        parts = {
            name: {
                "rgb": ps.add_tint(p["images"], p["tints"]),
                "labels": [ps.CLASS_NAMES[i] for i in p["labels"]],
                "attributes": [ps.TINT_NAMES[t] for t in p["tints"]],
                "split": list(p["split"]) if "split" in p else None,
            }
            for name, p in ps.photo_splits().items()
        }
        names = ps.CLASS_NAMES
    else:
        parts = {
            name: {
                "rgb": demo.add_tags(p["images"], p["colours"]),
                "labels": [demo.CLASS_NAMES[i] for i in p["labels"]],
                "attributes": [demo.COLOUR_NAMES[c] for c in p["colours"]],
                "split": list(p["split"]) if "split" in p else None,
            }
            for name, p in demo.demo_splits().items()
        }
        names = demo.CLASS_NAMES
    paths = demo.write_suite(out_dir, model_dir, parts)
    ref = reference_pixels(source).transpose(0, 2, 3, 1)
    # Reference images carry no meaningful label: the manifest format needs one, so every row gets
    # the first class name, and nothing reads it (the anchor uses images only).
    target = Path(out_dir) / "reference"
    write_manifest_dataset(target, ref, [names[0]] * len(ref), prefix="reference")
    paths["reference"] = target
    return paths
