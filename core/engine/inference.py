"""Running a model on images: normalised tensors, batched logits, and a bundle's evaluation.

The torch half of evaluation. The numbers themselves (per-group accuracy, kept decisions) come from
:mod:`core.engine.metrics`, which is plain numpy so that the workbench's page process can use it
without loading torch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from core.engine.devices import autocast, select_device
from core.engine.metrics import DEFAULT_MIN_GROUP_COUNT, group_metrics
from core.formats.datasets import ImageDataset, iter_pixel_batches, load_pixels
from core.formats.limits import eval_batch_size

SHARD_IMAGES = 2048  # images per task when a parallel backend evaluates a set in shards
GPU_BATCH = 1024  # images per forward pass on an accelerator
# On the CPU a batch whose input is about 2 MB keeps its activations in the cache: the demo's CNN ran over 7,000
# images 5× faster at 128 a batch than at 1,024, a ResNet-18 at 32 px 1.3× (one thread, same logits bit for bit).
CPU_BATCH_BYTES = 2 << 20


def normalize(pixels: np.ndarray | torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 [N,C,H,W] → float32 normalised tensor, as the model expects."""
    x = torch.as_tensor(pixels).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


class DiskImages:
    """A set of images for a run, decoded once into an unnamed file on disk and read back in batches.

    It stands where a normalised float tensor [N,C,H,W] of the whole set used to: ``len(x)``,
    ``x[a:b]``, ``x[indices]`` (numpy or torch) give normalised float tensors of just those images,
    so a run's memory holds one batch of the evaluation, validation and reference images at a time,
    however many there are. The decoded uint8 pixels live in an anonymous temporary file (already
    unlinked, so nothing is left behind even if the process is killed); the operating system keeps
    the parts in use in its page cache. Decoding happens once, so the loop's repeated validation
    checks and reference minibatches do not decode PNGs again.

    :meth:`subset` views some rows of the same file (the reported and the validation rows of one
    evaluation set). ``batch`` is how many images :func:`predict_logits` takes at a time
    (``BIASREPAIR_EVAL_BATCH``)."""

    def __init__(self, pixels: np.ndarray, mean, std, indices: np.ndarray | None = None, batch: int | None = None):
        self.pixels = pixels
        self.mean, self.std = list(mean), list(std)
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        self.batch = batch or eval_batch_size()

    @classmethod
    def decode(
        cls, dataset: ImageDataset, meta, batch: int | None = None, into: np.ndarray | None = None
    ) -> DiskImages:
        """Decode a dataset's images ``batch`` at a time into a new anonymous file, or into ``into``
        (a uint8 [N,C,H,W] array the caller made, e.g. a memory-mapped .npy file it keeps)."""
        size = batch or eval_batch_size()
        shape = (len(dataset), *meta.input_size)
        if into is not None:
            pixels = into
        elif not len(dataset):
            pixels = np.empty(shape, dtype=np.uint8)
        else:
            with tempfile.TemporaryFile(prefix="biasrepair-pixels-") as fh:  # the mapping outlives the name
                pixels = np.memmap(fh, dtype=np.uint8, mode="w+", shape=shape)
        start = 0
        for part in iter_pixel_batches(dataset, meta.input_size, size):
            pixels[start : start + len(part)] = part
            start += len(part)
        return cls(pixels, meta.mean, meta.std, batch=size)

    def subset(self, indices) -> DiskImages:
        rows = np.asarray(indices, dtype=np.int64)
        return DiskImages(
            self.pixels, self.mean, self.std, rows if self.indices is None else self.indices[rows], self.batch
        )

    def __len__(self) -> int:
        return len(self.pixels) if self.indices is None else len(self.indices)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.pixels.shape[1:])

    def __getitem__(self, key) -> torch.Tensor:
        return self.read(key)

    def read(self, key, device: torch.device | None = None) -> torch.Tensor:
        """Rows ``key`` as a normalised float tensor on ``device`` (default the CPU). To a GPU the uint8
        pixels travel and are normalised there: a quarter of the bytes of float32, and no float pass on
        one CPU thread (the same IEEE float32 operations, so the same values)."""
        if isinstance(key, torch.Tensor):
            key = key.cpu().numpy()
        if isinstance(key, slice) and self.indices is None:
            part = np.array(self.pixels[key])
        else:
            rows = np.asarray(key) if self.indices is None else self.indices[key]
            part = self.pixels[np.atleast_1d(rows)]
        pixels = torch.from_numpy(part)
        if device is not None and device.type != "cpu":
            pixels = pixels.to(device)
        return normalize(pixels, self.mean, self.std)


def rows_on(x, key, device: torch.device) -> torch.Tensor:
    """Rows ``key`` of a preloaded tensor or of :class:`DiskImages`, normalised, on ``device``."""
    return x.read(key, device) if isinstance(x, DiskImages) else x[key].to(device)


def load_tensors(dataset: ImageDataset, meta) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as a normalised float tensor and labels as a long tensor, for a bundle's metadata."""
    pixels = load_pixels(dataset, meta.input_size)
    return normalize(pixels, meta.mean, meta.std), torch.as_tensor(dataset.labels)


def forward_batch(image_shape, device: torch.device) -> int:
    """How many images of ``image_shape`` (C, H, W) one forward pass takes on ``device``: :data:`GPU_BATCH` on an
    accelerator, on the CPU the power of two whose float input is nearest below :data:`CPU_BATCH_BYTES` (16 to
    1,024)."""
    if device.type != "cpu":
        return GPU_BATCH
    per_image = 4 * int(np.prod(image_shape))
    return int(min(GPU_BATCH, max(16, 2 ** int(np.floor(np.log2(max(CPU_BATCH_BYTES / per_image, 1.0)))))))


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch_size: int | None = None):
    """Logits for a preloaded tensor (or :class:`DiskImages`, read its own ``batch`` at a time), in
    batches (default :func:`forward_batch`), on ``device``; returned as float32 on the CPU."""
    model.eval()
    batch_size = batch_size or forward_batch(tuple(x.shape[1:]), device)
    if isinstance(x, DiskImages):
        batch_size = min(batch_size, x.batch)
    outs = []
    for start in range(0, len(x), batch_size):
        xb = rows_on(x, slice(start, start + batch_size), device)
        with autocast(device):
            outs.append(model(xb).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0)


@dataclass
class EvalResult:
    """The metrics dict M plus per-example predictions, confidences and class probabilities."""

    metrics: dict
    predictions: np.ndarray
    confidences: np.ndarray
    probabilities: np.ndarray


def evaluate_model(
    model: torch.nn.Module,
    x: torch.Tensor,
    y,
    attributes,
    class_names: list[str],
    device: torch.device,
    min_group_count: int = DEFAULT_MIN_GROUP_COUNT,
) -> EvalResult:
    model = model.to(device)
    probs = torch.softmax(predict_logits(model, x, device), dim=1).numpy()
    preds = probs.argmax(axis=1)
    m = group_metrics(y, preds, attributes, class_names, min_group_count)
    return EvalResult(m, preds, probs.max(axis=1), probs)


def predict_dataset(
    model: torch.nn.Module,
    dataset: ImageDataset,
    meta,
    device: torch.device,
    batch_size: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Class probabilities [N,K] of a dataset, streamed from disk ``batch_size`` images at a time
    (default ``BIASREPAIR_EVAL_BATCH``): only one batch of decoded images is in memory at once, so
    memory grows with the number of classes per image, not with the pixels of the whole set."""
    size = batch_size or eval_batch_size()
    model = model.to(device)
    parts = []
    for pixels in iter_pixel_batches(dataset, meta.input_size, size, on_batch):
        x = normalize(pixels, meta.mean, meta.std)
        parts.append(torch.softmax(predict_logits(model, x, device, batch_size=size), dim=1).numpy())
        del x
    return np.concatenate(parts) if parts else np.zeros((0, len(meta.class_names)), dtype=np.float32)


@dataclass
class _Shards:
    """What every shard of a sharded prediction needs; sent once to the backend's workers."""

    model: torch.nn.Module
    meta: object
    device: str
    batch_size: int | None


def _predict_shard(shared: _Shards, shard: ImageDataset) -> np.ndarray:
    return predict_dataset(shared.model, shard, shared.meta, select_device(shared.device), shared.batch_size)


def predict_sharded(
    model: torch.nn.Module, dataset: ImageDataset, meta, backend, device: str = "auto",
    shard_images: int | None = None, batch_size: int | None = None,
) -> np.ndarray:  # fmt: skip
    """Class probabilities [N,K] of a dataset, its rows split into shards of ``shard_images`` (default
    :data:`SHARD_IMAGES`), each a task of
    ``backend`` (:mod:`core.engine.backends`), gathered in the dataset's order. The model goes to the
    workers once; each worker reads its shard's image files itself, so they must be at the same path on
    every node (a shared folder). ``device`` is resolved on each worker (a GPU task picks its GPU)."""
    n, size = len(dataset), shard_images or SHARD_IMAGES
    shards = [dataset.subset(range(i, min(i + size, n))) for i in range(0, n, size)]
    gpus = 1 if backend.cluster_gpus() >= 1 else 0
    parts = backend.map(_predict_shard, shards, _Shards(model, meta, device, batch_size), gpus)
    return np.concatenate(parts) if parts else np.zeros((0, len(meta.class_names)), dtype=np.float32)


def evaluate_bundle(
    bundle,
    dataset: ImageDataset,
    device="auto",
    pixels=None,
    min_group_count=None,
    batch_size: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    backend=None,
) -> EvalResult:
    """Evaluate a loaded bundle on a dataset. Images are streamed from disk in batches (see
    :func:`predict_dataset`) unless ``pixels`` are passed in, already decoded (the benchmark's cache).
    ``on_batch(done, total)`` reports progress. A parallel ``backend`` predicts the set in shards on its
    workers (:func:`predict_sharded`); the metrics are computed here on the gathered predictions."""
    dev = select_device(device) if isinstance(device, str) else device
    count = DEFAULT_MIN_GROUP_COUNT if min_group_count is None else min_group_count
    try:
        if pixels is None and backend is not None and backend.parallel:
            name = device if isinstance(device, str) else device.type
            probs = predict_sharded(bundle.model, dataset, bundle.meta, backend, name, batch_size=batch_size)
            if on_batch is not None:
                on_batch(len(dataset), len(dataset))
            preds = probs.argmax(axis=1)
            m = group_metrics(dataset.labels, preds, dataset.attributes, bundle.meta.class_names, count)
            return EvalResult(m, preds, probs.max(axis=1), probs)
        if pixels is not None:
            x = normalize(pixels, bundle.meta.mean, bundle.meta.std)
            return evaluate_model(
                bundle.model, x, dataset.labels, dataset.attributes, bundle.meta.class_names, dev, count
            )
        probs = predict_dataset(bundle.model, dataset, bundle.meta, dev, batch_size, on_batch)
        preds = probs.argmax(axis=1)
        m = group_metrics(dataset.labels, preds, dataset.attributes, bundle.meta.class_names, count)
        return EvalResult(m, preds, probs.max(axis=1), probs)
    finally:
        bundle.model.to("cpu")
