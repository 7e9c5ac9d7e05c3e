"""Shortcuts that are not a colour: a grey mark whose *position* or *shape* follows the class.

The demo's and the photo suite's shortcuts are colours (a coloured tag, a colour cast). A repair idea that only helps
against colour (colour jitter, say) would look good on them and fail elsewhere. These two shortcuts carry no colour at
all; the mark is white with black edges, the same in every image, and only where it is, or what shape it has, says
something about the class:

* **corner** (on the photo suite's CIFAR-10 photos): a 6×6 px white square with a black border in one of the four
  corners, the corner following the class (airplane top-left, automobile top-right, frog bottom-left, horse
  bottom-right) in 90 % of training photos, like a watermark or a scanner's ruler that sits in a different place
  for each source. Attributes: ``top-left`` … ``bottom-right``.
* **shape** (on the demo's MNIST digits): a 6×6 px white mark in the top-left corner, a hollow square (``ring``) on
  digits 0–4 and a ``cross`` on 5–9 in 99 % of training digits, like a stamp whose form differs between two offices.

The images, labels, splits (evaluation with its ``val`` rows, pool, default counterexamples) and the attribute
*draws* are exactly those of the source suites (:func:`core.bench.photo_suite.photo_splits`,
:func:`core.app.demo.demo_splits`); only what is drawn on the image differs. Built by
:mod:`core.bench.standard_suite` (parts ``mark-resnet18`` and ``shape-mobilenet``).
"""

from __future__ import annotations

import numpy as np

from core.app import demo
from core.bench import photo_suite as ps

MARK = 6  # the mark's side in pixels
CORNERS = ["top-left", "top-right", "bottom-left", "bottom-right"]  # index = the class whose corner it is
SHAPES = ["ring", "cross"]  # index = the digit half (0–4, 5–9) whose mark it is
AGREEING_CORNER = CORNERS  # per photo class: the corner that agrees with it
AGREEING_SHAPE = [SHAPES[t] for t in demo.CLASS_TAG]  # per digit: the shape that agrees with it


def _corner_origin(corner: int, size: int) -> tuple[int, int]:
    top = 1 if corner in (0, 1) else size - 1 - MARK
    left = 1 if corner in (0, 2) else size - 1 - MARK
    return top, left


def add_corner_marks(images: np.ndarray, corner_idx: np.ndarray) -> np.ndarray:
    """Photos [N,H,W,3] with a white, black-edged MARK×MARK square in each image's corner."""
    out = images.copy()
    size = images.shape[1]
    patch = np.zeros((MARK, MARK, 3), dtype=np.uint8)
    patch[1:-1, 1:-1] = 255
    for i, c in enumerate(np.asarray(corner_idx)):
        top, left = _corner_origin(int(c), size)
        out[i, top : top + MARK, left : left + MARK] = patch
    return out


def _shape_patch(shape: int) -> np.ndarray:
    patch = np.zeros((MARK, MARK), dtype=np.uint8)
    if shape == 0:  # ring: a hollow square
        patch[[0, -1], :] = 255
        patch[:, [0, -1]] = 255
    else:  # cross: two diagonals
        idx = np.arange(MARK)
        patch[idx, idx] = 255
        patch[idx, MARK - 1 - idx] = 255
    return patch


def add_shape_marks(gray: np.ndarray, shape_idx: np.ndarray) -> np.ndarray:
    """Grey digits [N,28,28] → RGB [N,28,28,3] with a white ring or cross in the top-left corner."""
    rgb = np.repeat(gray[..., None], 3, axis=3).copy()
    patches = [_shape_patch(s) for s in range(len(SHAPES))]
    for i, s in enumerate(np.asarray(shape_idx)):
        rgb[i, 1 : 1 + MARK, 1 : 1 + MARK, :] = patches[int(s)][..., None]
    return rgb


def training_data(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The biased training set of ``kind`` (corner or shape): uint8 RGB [N,H,W,3], labels, agreeing mask.

    The attribute draws are the source suites' own (the photo suite's tints, the demo's tag colours)."""
    if kind == "corner":
        rng = np.random.default_rng(7)  # the photo suite's draw (train_photo_model: seed 0 + 7)
        images, labels, train, _, _ = ps._splits()
        y = labels[train]
        corners = np.where(rng.random(len(train)) < ps.TRAIN_AGREEMENT, y, ps._conflicting(y, rng))
        return add_corner_marks(images[train], corners), y, corners == y
    if kind == "shape":
        images, labels = demo.read_mnist_train_5k()
        shapes = demo.biased_colours(labels, demo.TRAIN_AGREEMENT, np.random.default_rng(0))
        return add_shape_marks(images, shapes), labels, shapes == demo.CLASS_TAG[labels]
    raise ValueError(kind)


def parts(kind: str) -> dict[str, dict]:
    """The evaluation (with ``val`` rows), pool and counterexample parts of ``kind`` for
    :func:`core.app.demo.write_suite`."""
    if kind == "corner":
        return {
            name: {
                "rgb": add_corner_marks(p["images"], p["tints"]),
                "labels": [ps.CLASS_NAMES[i] for i in p["labels"]],
                "attributes": [CORNERS[t] for t in p["tints"]],
                "split": list(p["split"]) if "split" in p else None,
            }
            for name, p in ps.photo_splits().items()
        }
    if kind == "shape":
        return {
            name: {
                "rgb": add_shape_marks(p["images"], p["colours"]),
                "labels": [demo.CLASS_NAMES[i] for i in p["labels"]],
                "attributes": [SHAPES[c] for c in p["colours"]],
                "split": list(p["split"]) if "split" in p else None,
            }
            for name, p in demo.demo_splits().items()
        }
    raise ValueError(kind)
