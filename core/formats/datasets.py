"""Image datasets: a manifest or a folder per class, from a folder or a .zip (docs/DESIGN.md §5).

``manifest.csv`` has columns ``path,label[,attribute][,split]``; ``path`` is relative to the
manifest and ``label`` is a class name or a class index. Without a manifest, each sub-folder named
after a class holds that class's images. Every row that cannot be used is *reported* with its
reason, never silently dropped; a dataset with any rejected row is refused as a whole (with all
reasons listed) unless the caller asks to keep the good rows.

Images are validated with Pillow (format PNG/JPEG, bounded pixel count) before decoding, then
resized to the bundle's input size and normalised with its mean and std.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.errors import UserError
from core.formats.limits import max_image_pixels, max_images, max_unzipped_bytes
from core.formats.manifest import (
    IMAGE_SUFFIXES,
    MAX_MANIFEST_BYTES,
    Record,
    listed_paths,
    parse_label,
    read_manifest,
    short,
    write_manifest,
)
from core.formats.scratch import prefix as scratch_prefix
from core.formats.zipsafety import ZipReader, ZipSource

ALLOWED_FORMATS = {"PNG", "JPEG"}
_scratch: ContextVar[Path | None] = ContextVar("biasrepair_scratch", default=None)


class UnpackedFolder:
    """A temporary folder a dataset zip was unpacked into, removed when :meth:`remove` is called or,
    failing that, when no dataset refers to it any more (or the interpreter exits)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), ignore_errors=True)

    def remove(self) -> None:
        self._finalizer()


@dataclass
class ImageDataset:
    """A validated list of records under ``root``, plus every row that was rejected and why.

    A dataset loaded from a zip owns the temporary folder it was unpacked into (``unpacked``): the
    folder is removed by :meth:`close` (or leaving a ``with`` block), else once neither the dataset
    nor any :meth:`subset` of it is referenced any more."""

    root: Path
    records: list[Record]
    class_names: list[str]
    rejected: list[str] = field(default_factory=list)
    unpacked: UnpackedFolder | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.records)

    def __enter__(self) -> ImageDataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the temporary folder of a dataset loaded from a zip (nothing for a folder)."""
        if self.unpacked is not None:
            self.unpacked.remove()

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)

    @property
    def attributes(self) -> list[str | None]:
        return [r.attribute for r in self.records]

    def subset(self, indices) -> ImageDataset:
        return ImageDataset(self.root, [self.records[i] for i in indices], self.class_names, [], self.unpacked)

    def image_path(self, i: int) -> Path:
        return self.root / self.records[i].path


_filters_lock = threading.Lock()


def _quiet_pillow_bomb_warning() -> None:
    """Pillow warns (two lines on stderr) about an image over ``Image.MAX_IMAGE_PIXELS`` just before
    :func:`open_image` refuses it in one line of its own, so the warning only repeats the refusal: it is
    ignored. Added when first needed, and again if something (a test harness) has put the filters back."""
    bomb = Image.DecompressionBombWarning
    if not any(f[0] == "ignore" and f[2] is bomb for f in warnings.filters):
        with _filters_lock:
            warnings.filterwarnings("ignore", category=bomb)


def _too_big(name: str, limit: int, w: int | None = None, h: int | None = None) -> UserError:
    if w is None or h is None:  # Pillow's own check refused it before its size could be read here
        return UserError(
            f"{name} has more than twice the limit of {limit} pixels (BIASREPAIR_MAX_IMAGE_PIXELS)",
            "image_too_many_pixels",
            name=name,
            limit=limit,
        )
    return UserError(
        f"{name} is {w}×{h} pixels, more than the limit of {limit} (BIASREPAIR_MAX_IMAGE_PIXELS)",
        "image_too_big",
        name=name,
        w=w,
        h=h,
    )


def _refusal(exc: BaseException, name: str, limit: int) -> UserError | None:
    """What a failure while opening an image says to the person who gave it (None: a bug, kept as it is)."""
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, Image.DecompressionBombError):  # Pillow's own check: over twice the limit
        return _too_big(name, limit)
    if isinstance(exc, (UnidentifiedImageError, OSError, SyntaxError)):
        return UserError(
            f"{name} is not a readable PNG or JPEG image ({exc.__class__.__name__})", "image_unreadable", name=name
        )
    if isinstance(exc, (ValueError, EOFError, MemoryError)):  # e.g. "Decompressed data too large" (a text chunk)
        detail = " ".join(str(exc).split())[:80]
        return UserError(
            f"{name} is not a usable PNG or JPEG image ({detail or exc.__class__.__name__})",
            "image_unreadable",
            name=name,
        )
    return None


def open_image(data: bytes | Path, name: str) -> Image.Image:
    """Decode an image file after checking it is really a PNG or JPEG of sane size; a refusal is one
    :class:`UserError` (never a Pillow warning besides it), and leaves the file closed."""
    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check, as a backstop to the one below
    _quiet_pillow_bomb_warning()
    img = None
    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        if img.format not in ALLOWED_FORMATS:
            raise UserError(
                f"{name} is a {img.format} image; only PNG and JPEG are accepted",
                "image_format",
                name=name,
                format=str(img.format),
            )
        w, h = img.size
        if w * h > limit:
            raise _too_big(name, limit, w, h)
        img.load()
    except BaseException as exc:
        if img is not None:
            img.close()  # not left open for the garbage collector to find
        why = _refusal(exc, name, limit)
        if why is None:
            raise
        raise why from None
    return img


def _read_class_folders(root: Path, class_names: list[str]) -> tuple[list[Record], list[str]]:
    records: list[Record] = []
    rejected: list[str] = []
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise UserError("dataset has neither manifest.csv nor one folder per class", "dataset_layout")
    root_resolved = root.resolve()
    for d in subdirs:
        try:
            label = parse_label(d.name, class_names)
        except UserError as exc:
            rejected.append(f"folder {short(d.name)}/: {exc}")
            continue
        if root_resolved not in d.resolve().parents:
            rejected.append(f"folder {short(d.name)}/: a link to a folder outside the dataset; refused")
            continue
        for f in sorted(d.rglob("*")):
            rel = f.relative_to(root).as_posix()
            if f.is_symlink() and root_resolved not in f.resolve().parents:
                rejected.append(f"{short(rel)}: a link to a file outside the dataset; refused")
                continue
            if not f.is_file():
                continue
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                rejected.append(f"{rel}: not a .png/.jpg/.jpeg file")
                continue
            records.append(Record(path=rel, label=label))
    return records, rejected


def dataset_root(path: Path) -> Path:
    """The folder holding manifest.csv: the given folder, or its single sub-folder."""
    if (path / "manifest.csv").is_file():
        return path
    entries = [p for p in path.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "manifest.csv").is_file():
        return entries[0]
    return path


@contextlib.contextmanager
def unpacked_zips() -> Iterator[Path]:
    """A scratch folder for every dataset zip :func:`load_dataset` unpacks inside this block, removed
    when the block ends however it ends (the CLI runs each command in one, so no
    ``biasrepair-dataset-*`` folder outlives it; one whose process was killed is swept by
    :func:`core.formats.scratch.sweep_stale` at the next start)."""
    scratch = Path(tempfile.mkdtemp(prefix=scratch_prefix("dataset")))
    token = _scratch.set(scratch)
    try:
        yield scratch
    finally:
        _scratch.reset(token)
        shutil.rmtree(scratch, ignore_errors=True)


def load_dataset(
    path: str | Path, class_names: list[str], *, keep_good_rows: bool = False, verify_images: bool = True
) -> ImageDataset:
    """Load a dataset folder (or a .zip, unpacked safely into a fresh temporary folder).

    A zip's folder is removed always: by ``ds.close()`` or ``with load_dataset(...) as ds:``, else
    when the dataset is no longer referenced (or the interpreter exits), and at the latest with the
    :func:`unpacked_zips` block when one is open. A refused zip leaves nothing behind.

    With ``verify_images`` every image is opened and checked (PNG/JPEG, readable); bad files are
    reported like bad rows. Raises :class:`UserError` listing all problems unless
    ``keep_good_rows`` is set, in which case they are kept in ``rejected``.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"dataset not found: {path}")
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise UserError(f"{path.name} is not a dataset: give a folder or a .zip", "dataset_not_zip", name=path.name)
        scratch = _scratch.get()
        folder = UnpackedFolder(tempfile.mkdtemp(prefix=scratch_prefix("dataset"), dir=scratch))
        try:
            ds = dataset_from_zip_bytes(path, path.name, class_names, folder.path, keep_good_rows=keep_good_rows)
        except BaseException:
            folder.remove()  # a refused zip leaves nothing behind
            raise
        ds.unpacked = folder
        return ds
    return _load_folder(path, class_names, keep_good_rows=keep_good_rows, verify_images=verify_images)


def _load_folder(
    path: Path,
    class_names: list[str],
    *,
    keep_good_rows: bool,
    verify_images: bool = True,
    name: str | None = None,
    also_rejected: tuple[str, ...] = (),
) -> ImageDataset:
    root = dataset_root(path)
    if (root / "manifest.csv").is_file():
        records, rejected = read_manifest(root, class_names)
    else:
        records, rejected = _read_class_folders(root, class_names)
    rejected = [*also_rejected, *rejected]
    name = name or path.name
    limit = max_images()
    if len(records) > limit:
        raise UserError(
            f"dataset {name} has {len(records)} images, more than the limit of {limit} (BIASREPAIR_MAX_IMAGES)"
        )
    if verify_images:
        good = []
        for r in records:
            try:
                open_image(root / r.path, r.path)
                good.append(r)
            except UserError as exc:
                rejected.append(str(exc))
        records = good
    if rejected and not keep_good_rows:
        shown = "; ".join(rejected[:5]) + (f"; and {len(rejected) - 5} more" if len(rejected) > 5 else "")
        raise UserError(
            f"dataset {name} has {len(rejected)} unusable row(s): {shown}",
            "dataset_rows",
            name=name,
            n=len(rejected),
            rows=shown,
        )
    if not records:
        raise UserError(f"dataset {name} holds no usable images", "dataset_empty", name=name)
    return ImageDataset(root=root, records=records, class_names=list(class_names), rejected=rejected)


def _zip_top(names: list[str]) -> str:
    """The prefix of a zip's dataset root: ``""``, or ``"top/"`` when everything sits in one folder
    that holds the manifest (as :func:`dataset_root` finds it on disk)."""
    if "manifest.csv" in names:
        return ""
    tops = {n.split("/", 1)[0] for n in names if not n.startswith((".", "__MACOSX"))}
    if len(tops) == 1:
        top = next(iter(tops))
        if f"{top}/manifest.csv" in names:
            return f"{top}/"
    return ""


def dataset_from_zip_bytes(
    raw: ZipSource,
    name: str,
    class_names: list[str],
    extract_to: str | Path,
    *,
    keep_good_rows: bool = False,
    max_total: int | None = None,
    max_files: int | None = None,
    before_extract: Callable[[int], None] | None = None,
) -> ImageDataset:
    """Safely unpack a dataset zip into ``extract_to`` and load it (see :func:`load_dataset`).

    Only what the dataset uses is unpacked: with a manifest, the manifest and the files it lists;
    without one, the images in the class folders. Other members are never decompressed, whatever
    size they claim. The declared sizes of what is unpacked are checked against ``max_total``
    (default ``BIASREPAIR_MAX_UNZIPPED_MB``) before anything is written, and again while writing.
    ``before_extract(bytes)`` is called with the declared size of what will be unpacked, before
    anything is (the workbench checks its disk budget there)."""
    limit = max_unzipped_bytes() if max_total is None else max_total
    n_images = max_images()
    entries = 2 * n_images + 64 if max_files is None else max_files  # images, their folders, a manifest
    target = Path(extract_to)
    also_rejected: list[str] = []
    with ZipReader(raw, name, max_files=entries) as zf:
        names = list(zf.members)
        if not names:
            raise UserError(f"{name} is empty")
        prefix = _zip_top(names)
        manifest = f"{prefix}manifest.csv"
        if manifest in zf.members:
            listed = listed_paths(zf.read(manifest, min(limit, MAX_MANIFEST_BYTES)), prefix)
            chosen = [manifest, *(n for n in names if n in listed)]
        else:
            chosen = []
            for n in names:
                if "/" not in n or n.startswith("."):
                    continue  # a file at the root belongs to no class; hidden folders are skipped
                if Path(n).suffix.lower() in IMAGE_SUFFIXES:
                    chosen.append(n)
                else:
                    also_rejected.append(f"{short(n)}: not a .png/.jpg/.jpeg file")
        if len(chosen) > n_images + 1:
            raise UserError(
                f"{name} has {len(chosen) - 1} images, more than the limit of {n_images} (BIASREPAIR_MAX_IMAGES)"
            )
        if before_extract is not None:
            before_extract(zf.declared(chosen, limit))
        target.mkdir(parents=True, exist_ok=True)
        zf.extract(chosen, target, limit)
    return _load_folder(
        target, class_names, keep_good_rows=keep_good_rows, name=name, also_rejected=tuple(also_rejected)
    )


def split_eval(dataset: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the reported rows and of the validation rows (``split == "val"``)."""
    splits = np.array([(r.split or "").lower() for r in dataset.records])
    val = np.flatnonzero(splits == "val")
    rep = np.flatnonzero(splits != "val")
    return rep, val


def image_to_array(img: Image.Image, input_size: list[int]) -> np.ndarray:
    """Resize and convert one image to uint8 [C,H,W] at the bundle's input size."""
    c, h, w = input_size
    img = img.convert("RGB" if c == 3 else "L")
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    if c == 1:
        arr = arr[None, :, :]
    else:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def load_pixels(dataset: ImageDataset, input_size: list[int]) -> np.ndarray:
    """All images of a dataset as one uint8 array [N,C,H,W] (compact; cache this). For a set that
    is only read once, :func:`iter_pixel_batches` keeps memory bounded instead."""
    out = np.empty((len(dataset), *input_size), dtype=np.uint8)
    for i, r in enumerate(dataset.records):
        out[i] = image_to_array(open_image(dataset.root / r.path, r.path), input_size)
    return out


def iter_pixel_batches(
    dataset: ImageDataset,
    input_size: list[int],
    batch_size: int,
    on_batch: Callable[[int, int], None] | None = None,
) -> Iterator[np.ndarray]:
    """The images of a dataset decoded from disk ``batch_size`` at a time, as uint8 [b,C,H,W] arrays,
    so that memory does not grow with the number of images. ``on_batch(done, total)`` is called after
    each batch has been used (for a progress bar)."""
    total = len(dataset)
    for start in range(0, total, batch_size):
        records = dataset.records[start : start + batch_size]
        out = np.empty((len(records), *input_size), dtype=np.uint8)
        for i, r in enumerate(records):
            out[i] = image_to_array(open_image(dataset.root / r.path, r.path), input_size)
        yield out
        if on_batch is not None:
            on_batch(start + len(records), total)


def write_manifest_dataset(
    out_dir: str | Path,
    images: np.ndarray,
    labels: list[str],
    attributes: list[str | None] | None = None,
    splits: list[str | None] | None = None,
    prefix: str = "img",
) -> Path:
    """Write uint8 images [N,H,W,C] or [N,H,W] as PNGs plus manifest.csv; used by the demo."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, arr in enumerate(images):
        rel = f"images/{prefix}_{i:05d}.png"
        Image.fromarray(arr).save(out / rel, optimize=False, compress_level=1)
        row = {"path": rel, "label": labels[i]}
        if attributes is not None:
            row["attribute"] = attributes[i] or ""
        if splits is not None:
            row["split"] = splits[i] or ""
        rows.append(row)
    cols = (
        ["path", "label"]
        + (["attribute"] if attributes is not None else [])
        + (["split"] if splits is not None else [])
    )
    write_manifest(out, rows, cols)
    return out
