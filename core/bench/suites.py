"""Benchmark suites: a biased model, an unbiased evaluation set and a pool to draw counterexamples from.

Each suite is built from files in the repository (no downloads) and says which pool images
contradict its shortcut, so :mod:`core.bench.benchmark` can draw counterexample sets of any size, the
same draws for every method. Each also knows how to retrain its base model from scratch on the
model's own training set, the cost :mod:`core.bench.perf` compares a repair with.

* ``demo``: MNIST digits with a coloured corner tag (a *local* shortcut, like a calibration chart);
  :mod:`core.app.demo`.
* ``photo``: CIFAR-10 photos with a global colour cast per class (a *global* shortcut, like a
  camera's white balance or a hospital's scanner); :mod:`core.bench.photo_suite`.
* ``standard-resnet18`` and ``standard-mobilenet`` (together: ``--suite standard``): torchvision
  ResNet-18 on the photos and MobileNetV3-small on the digits, trained here from scratch;
  :mod:`core.bench.standard_suite`.
* ``standard-vit``: a transformer, a small timm VisionTransformer trained here from scratch on the tagged
  digits, kept as a timm folder; :mod:`core.bench.standard_suite`.

Every suite also has *reference images* (``reference_pixels``): typical unlabelled inputs drawn from
its training distribution, for the function-space anchor and the label-free kept estimate. They are
never evaluation rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.app.demo import AGREEING_TAG, build_demo, train_demo_model
from core.bench import marks
from core.bench import photo_suite as ps
from core.bench import standard_suite as ss
from core.engine.checksplit import split_dataset
from core.engine.inference import normalize
from core.engine.loop import PreparedData
from core.engine.old_answers import OldAnswers
from core.errors import UserError
from core.formats.bundle import ModelBundle, load_bundle
from core.formats.datasets import ImageDataset, load_dataset, load_pixels


@dataclass
class Suite:
    name: str
    title: str
    shortcut: str
    bundle: ModelBundle
    eval_set: ImageDataset
    pool: ImageDataset
    pool_conflicting: np.ndarray  # bool per pool image: its attribute contradicts the shortcut
    retrain: Callable[..., dict]  # (folder, seed=0): train the same base model from scratch into a folder
    eval_pixels: np.ndarray | None = None
    pool_pixels: np.ndarray | None = None
    reference_pixels: np.ndarray | None = None  # uint8 [N,C,H,W], typical unlabelled images
    # The base model's answers on the rows every draw shares (evaluation, check split), predicted once per suite.
    old: OldAnswers = field(default_factory=OldAnswers, repr=False, compare=False)
    # Those draw-independent image sets, normalised once: a draw's PreparedData holds these very tensors.
    shared_tensors: dict[str, torch.Tensor | None] = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        """A parallel backend's copy of the suite leaves the normalised tensors behind (its workers normalise
        their own from the uint8 pixels, a quarter of the bytes)."""
        return {**self.__dict__, "shared_tensors": {}}

    def shared(self, name: str, make: Callable[[], torch.Tensor | None]) -> torch.Tensor | None:
        """The draw-independent tensor ``name``, made by ``make`` the first time."""
        if name not in self.shared_tensors:
            self.shared_tensors[name] = make()
        return self.shared_tensors[name]

    def load_pixels(self) -> None:
        """Decode the evaluation and pool images once (uint8), so runs share them."""
        size = self.bundle.meta.input_size
        if self.eval_pixels is None:
            self.eval_pixels = load_pixels(self.eval_set, size)
        if self.pool_pixels is None:
            self.pool_pixels = load_pixels(self.pool, size)


def _conflicting(ds: ImageDataset, attribute_of_label: list[str]) -> np.ndarray:
    return np.array([r.attribute != attribute_of_label[r.label] for r in ds.records], dtype=bool)


def demo_suite(workdir: Path) -> Suite:
    return demo_suite_at(build_demo(workdir / "demo"))


def demo_suite_at(paths: dict[str, Path]) -> Suite:
    """The demo suite on a demo already built: the folders :func:`core.app.demo.build_demo` returns (or
    ``python -m core demo`` writes) by name."""
    bundle = load_bundle(paths["model"])
    names = bundle.meta.class_names
    pool = load_dataset(paths["pool"], names)
    return Suite(
        name="demo",
        title="Tagged MNIST (local shortcut: a coloured corner tag)",
        shortcut="corner tag colour (red for 0–4, blue for 5–9) agrees with the digit in 99% of training images",
        bundle=bundle,
        eval_set=load_dataset(paths["eval"], names),
        pool=pool,
        pool_conflicting=_conflicting(pool, AGREEING_TAG),
        retrain=lambda out, seed=0: train_demo_model(out, seed=seed),
        reference_pixels=ss.reference_pixels("demo"),
    )


def photo_suite(workdir: Path) -> Suite:

    paths = ps.build_photo(workdir / "photo")
    bundle = load_bundle(paths["model"])
    names = bundle.meta.class_names
    pool = load_dataset(paths["pool"], names)
    return Suite(
        name="photo",
        title="Tinted CIFAR-10 photos (global shortcut: a colour cast per class)",
        shortcut=f"colour cast agrees with the class in {ps.TRAIN_AGREEMENT:.0%} of training images",
        bundle=bundle,
        eval_set=load_dataset(paths["eval"], names),
        pool=pool,
        pool_conflicting=_conflicting(pool, ps.TINT_NAMES),
        retrain=lambda out, seed=0: ps.train_photo_model(out, seed=seed),
        reference_pixels=ss.reference_pixels("photo"),
    )


# source: (the attribute that agrees with each class, what the data are, the shortcut in words)
SHORTCUTS = {
    "photo": (ps.TINT_NAMES, "tinted CIFAR-10 photos", "colour cast agrees with the class in 90% of training images"),
    "demo": (AGREEING_TAG, "tagged MNIST", "corner tag colour agrees with the digit's half in 99% of training images"),
    "corner": (
        marks.AGREEING_CORNER,
        "CIFAR-10 photos with a grey corner mark",
        "the corner of a white mark (no colour) agrees with the class in 90% of training images",
    ),
    "shape": (
        marks.AGREEING_SHAPE,
        "MNIST with a white stamp",
        "the shape of a white stamp (ring for 0–4, cross for 5–9; no colour) agrees with the digit in 99% of "
        "training images",
    ),
}


def standard_suite(part: str) -> Callable[[Path], Suite]:
    def build(workdir: Path) -> Suite:
        arch, source, _, _ = ss.PARTS[part]
        paths = ss.build_standard(part, workdir / part)
        bundle = load_bundle(paths["model"])
        names = bundle.meta.class_names
        pool = load_dataset(paths["pool"], names)
        agreeing, data_title, shortcut = SHORTCUTS[source]
        library = "timm" if arch.startswith("timm:") else "torchvision"
        return Suite(
            name=part,
            title=f"{library} {arch.removeprefix('timm:')} from scratch on {data_title}",
            shortcut=shortcut,
            bundle=bundle,
            eval_set=load_dataset(paths["eval"], names),
            pool=pool,
            pool_conflicting=_conflicting(pool, agreeing),
            retrain=lambda out, seed=0: ss.train_standard_model(part, out, seed=seed),
            reference_pixels=ss.reference_pixels(source),
        )

    return build


SUITES: dict[str, Callable[[Path], Suite]] = {
    "demo": demo_suite,
    "photo": photo_suite,
    "standard-resnet18": standard_suite("standard-resnet18"),
    "standard-mobilenet": standard_suite("standard-mobilenet"),
    "mark-resnet18": standard_suite("mark-resnet18"),
    "shape-mobilenet": standard_suite("shape-mobilenet"),
    "standard-vit": standard_suite("standard-vit"),
}
# A name that stands for several suites, run one after the other by the benchmark.
SUITE_GROUPS: dict[str, list[str]] = {
    "standard": ["standard-resnet18", "standard-mobilenet", "standard-vit"],  # two CNNs and a transformer
    "nocolour": ["mark-resnet18", "shape-mobilenet"],  # shortcuts that are not a colour (core.bench.marks)
}


def load_suite(name: str, workdir: str | Path) -> Suite:
    if name not in SUITES:
        raise UserError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    return SUITES[name](work)


def prepare_suite_data(suite: Suite, idx: np.ndarray, with_unlabeled: bool = True) -> PreparedData:
    """PreparedData for one draw: counterexamples from the pool, the reported evaluation rows, the check split
    (the evaluation set's ``split=val`` rows, :mod:`core.engine.checksplit`), and the pool's images without labels
    and the suite's reference images. Only a method under the ``check`` rule steers by the check split; the
    benchmark reports on the other rows.

    Every part but the counterexamples is the same for every draw: those are normalised once per suite and shared
    (:meth:`Suite.shared`), and so are the base model's answers on them (``suite.old``,
    :class:`core.engine.old_answers.OldAnswers`), which every draw's repairs then predict once in all."""
    suite.load_pixels()
    meta = suite.bundle.meta
    rep, val, split = split_dataset(suite.eval_set)
    attributes = suite.eval_set.attributes  # the whole set's list, built once (not once per row)
    labels = suite.eval_set.labels

    def norm(pixels: np.ndarray | None) -> torch.Tensor | None:
        return None if pixels is None else normalize(pixels, meta.mean, meta.std)

    return PreparedData(
        x_ce=normalize(suite.pool_pixels[idx], meta.mean, meta.std),
        y_ce=torch.as_tensor(suite.pool.labels[idx]),
        x_eval=suite.shared("eval", lambda: norm(suite.eval_pixels[rep])),
        y_eval=labels[rep],
        attr_eval=[attributes[i] for i in rep],
        eval_indices=rep,
        unlabeled=suite.shared("unlabeled", lambda: norm(suite.pool_pixels)) if with_unlabeled else None,
        reference=suite.shared("reference", lambda: norm(suite.reference_pixels)),
        x_val=suite.shared("val", lambda: norm(suite.eval_pixels[val])) if len(val) else None,
        y_val=labels[val] if len(val) else None,
        attr_val=[attributes[i] for i in val] if len(val) else None,
        split=split,
        old=suite.old,
    )
