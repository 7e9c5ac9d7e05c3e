"""Model bundle metadata and packaging, without torch (docs/DESIGN.md §5).

What ``model.json`` says (:class:`BundleMeta`), how a bundle zip is read safely and written, and
which file types are refused because loading them can run code. The workbench's page process uses
this module to check an upload before handing it to the worker, where :mod:`core.formats.bundle`
loads the weights with torch.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from core.errors import UserError
from core.formats.limits import MAX_CLASSES, MAX_INPUT_PIXELS, MAX_INPUT_SIDE
from core.formats.zipsafety import read_zip_members, zip_names

# The allow-list of architectures a bundle may name (built by core.formats.architectures).
ARCHITECTURE_NAMES = (
    "small_cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_b_16",
)
META_KEYS = ("architecture", "num_classes", "class_names", "input_size", "mean", "std")
MAX_MODEL_BYTES = 600 * 1024 * 1024  # vit_b_16 is ~350 MB in fp32; leave head-room, refuse bigger
REFUSED_SUFFIXES = {
    ".pt2": "a .pt2 export is a program, not weights; loading it can run code",
    ".ts": "TorchScript archives hold code that runs when loaded",
    ".pkl": "pickle files can run arbitrary code when loaded",
    ".pickle": "pickle files can run arbitrary code when loaded",
}


class ModelFormat(Enum):
    """The layouts of a model folder (docs/FORMATS.md): ours, a timm folder, a transformers folder."""

    BUNDLE = "bundle"  # model.json + model.safetensors
    TIMM = "timm"  # config.json (architecture, pretrained_cfg) + model.safetensors
    TRANSFORMERS = "transformers"  # config.json (model_type) + preprocessor_config.json + model.safetensors


@dataclass(frozen=True)
class LibrarySource:
    """The library configuration of a timm or transformers folder, kept as read so that the network can
    be built again from the library's registry and the repaired model leaves in the layout it came in."""

    format: ModelFormat
    config: dict
    preprocessor: dict | None = None

    def to_json(self) -> dict:
        return {"format": self.format.value, "config": self.config, "preprocessor": self.preprocessor}

    @classmethod
    def from_json(cls, data: dict) -> LibrarySource:
        return cls(ModelFormat(data["format"]), dict(data["config"]), data.get("preprocessor"))


@dataclass(frozen=True)
class BundleMeta:
    """What ``model.json`` says about the model: everything needed to build and feed it. For a timm or
    transformers folder, ``library`` keeps its configuration and ``architecture`` reads
    ``timm:<name>`` or ``transformers:<model_type>`` (core/formats/libmeta.py)."""

    architecture: str
    num_classes: int
    class_names: list[str]
    input_size: list[int]
    mean: list[float]
    std: list[float]
    library: LibrarySource | None = field(default=None, compare=False)

    @property
    def format(self) -> ModelFormat:
        return ModelFormat.BUNDLE if self.library is None else self.library.format

    @classmethod
    def from_dict(cls, data: object) -> BundleMeta:
        """Validate a parsed model.json, naming the first problem found."""
        if not isinstance(data, dict):
            raise UserError("model.json must hold a JSON object", "meta_not_object")
        _check_keys(data)
        num_classes, names = _checked_classes(data)
        size = _checked_input_size(data["input_size"])
        for key in ("mean", "std"):
            vals = data[key]
            if not isinstance(vals, list) or len(vals) != size[0] or not all(_finite_number(v) for v in vals):
                raise UserError(f"model.json {key} must be a list of {size[0]} numbers")
        if any(v <= 0 for v in data["std"]):
            raise UserError("model.json std values must be positive")
        if not isinstance(data["architecture"], str):
            raise UserError("model.json architecture must be a string")
        return cls(
            architecture=data["architecture"],
            num_classes=num_classes,
            class_names=list(names),
            input_size=list(size),
            mean=[float(v) for v in data["mean"]],
            std=[float(v) for v in data["std"]],
        )

    def to_dict(self) -> dict:
        """The six keys of model.json (a library folder's configuration is not among them)."""
        return {k: getattr(self, k) for k in META_KEYS}


def _check_keys(data: dict) -> None:
    """model.json has exactly :data:`META_KEYS`."""
    missing = [k for k in META_KEYS if k not in data]
    if missing:
        raise UserError(f"model.json is missing key(s): {', '.join(missing)}", "meta_missing", keys=", ".join(missing))
    extra = sorted(set(data) - set(META_KEYS))
    if extra:
        raise UserError(f"model.json has unknown key(s): {', '.join(extra)}", "meta_unknown", keys=", ".join(extra))


def _checked_classes(data: dict) -> tuple[int, list]:
    """model.json's ``num_classes`` and ``class_names``, checked against each other and the limit."""
    num_classes = data["num_classes"]
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise UserError(f"model.json num_classes must be an integer ≥ 2, got {str(num_classes)[:40]!r}")
    if num_classes > MAX_CLASSES:
        # Checked before anything is built: a head this wide would not fit in memory.
        raise UserError(f"model.json declares {str(num_classes)[:20]} classes, more than the limit of {MAX_CLASSES}")
    names = data["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise UserError("model.json class_names must be a list of non-empty strings")
    if len(names) != num_classes:
        raise UserError(f"model.json lists {len(names)} class_names but num_classes is {num_classes}")
    if len(set(names)) != len(names):
        raise UserError("model.json class_names has duplicates")
    return num_classes, names


def _checked_input_size(size: object) -> list[int]:
    """model.json's ``input_size``: [C, H, W] of positive integers, 1 or 3 channels, within the limits."""
    if (
        not isinstance(size, list)
        or len(size) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise UserError(f"model.json input_size must be [C, H, W] of positive integers, got {str(size)[:60]}")
    if max(size[1:]) > MAX_INPUT_SIDE or size[1] * size[2] > MAX_INPUT_PIXELS:
        raise UserError(
            f"model.json input_size {str(size[1])[:20]}×{str(size[2])[:20]} is larger than the limit "
            f"({MAX_INPUT_SIDE} pixels a side, {MAX_INPUT_PIXELS} pixels in all)"
        )
    if size[0] not in (1, 3):
        raise UserError(f"model.json input_size must have 1 or 3 channels, got {size[0]}")
    return size


def _finite_number(v: object) -> bool:
    """A JSON number that fits a float and is finite (an int too big for a float is refused)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (a model's weights need not fit in memory twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


MAX_BUNDLE_ZIP_ENTRIES = 64  # model.json, the weights, a README and the odd folder entry or resource fork
MAX_META_BYTES = 1024 * 1024  # a real model.json is a few hundred bytes; 1000 classes stay far below this


def parse_meta_json(raw: bytes, name: str = "model.json") -> BundleMeta:
    """Parse and validate model.json bytes; every malformed input is a :class:`UserError`."""
    if len(raw) > MAX_META_BYTES:
        raise UserError(f"{name} is larger than {MAX_META_BYTES // 1024} KB; it cannot be a model description")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{name} is not UTF-8 text (byte {exc.start}); save it as UTF-8", "meta_utf8", name=name
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{name} is not valid JSON: {exc}", "meta_json", name=name, detail=str(exc)) from None
    except RecursionError:
        raise UserError(f"{name} is nested too deeply to be a model description") from None
    except ValueError as exc:  # e.g. an integer with thousands of digits
        raise UserError(f"{name} holds a value that cannot be read: {str(exc).splitlines()[0][:120]}") from None
    return BundleMeta.from_dict(data)


def read_meta_file(path: str | Path) -> BundleMeta:
    """model.json from a file (the CLI's ``--meta``), with a one-line reason when it cannot be used."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_META_BYTES:
            raise UserError(f"{p.name} is larger than {MAX_META_BYTES // 1024} KB; it cannot be a model description")
        raw = p.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_meta_json(raw, p.name)


def check_refused_name(name: str) -> None:
    suffix = Path(name).suffix.lower()
    if suffix in REFUSED_SUFFIXES:
        raise UserError(
            f"{Path(name).name} is refused: {REFUSED_SUFFIXES[suffix]}", "refused_file", name=Path(name).name
        )


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def check_not_dataset(names: list[str], archive: str) -> None:
    """Refuse a dataset zip (images, a manifest.csv, no model.json or model.safetensors) given as a model."""
    bases = {n.rsplit("/", 1)[-1] for n in names}
    if bases & {"model.json", "model.safetensors"}:
        return
    images = sum(1 for n in names if n.lower().endswith(IMAGE_SUFFIXES) and not n.startswith("__MACOSX/"))
    if images or "manifest.csv" in bases:
        raise UserError(
            f"{archive} looks like a dataset ({images} images), not a model: a model bundle is a "
            "zip with model.json and model.safetensors. Upload the model first; an evaluation set or "
            "candidate images go in their own upload boxes",
            "bundle_is_dataset",
            name=archive,
            images=images,
        )


def read_bundle_zip(raw: bytes, name: str = "bundle.zip") -> dict[str, bytes]:
    """Pull model.json and model.safetensors out of a zip, at its root or in one top folder.

    A zip with no model files but images or a manifest.csv is an evaluation set or a pool uploaded in
    the wrong place, and is refused saying so (not by the 64-entry limit a bundle has)."""
    check_not_dataset(zip_names(raw, name), name)
    members = read_zip_members(raw, name, max_total=MAX_MODEL_BYTES + 2**20, max_files=MAX_BUNDLE_ZIP_ENTRIES)
    found: dict[str, bytes] = {}
    for member, data in members.items():
        base = member.rsplit("/", 1)[-1]
        check_refused_name(base)
        if base in ("model.json", "model.safetensors"):
            if base in found:
                raise UserError(f"{name} holds more than one {base}", "bundle_twice", name=name, file=base)
            found[base] = data
    for needed in ("model.json", "model.safetensors"):
        if needed not in found:
            raise UserError(f"{name} has no {needed}", "bundle_missing", name=name, file=needed)
    return found


def bundle_zip_bytes(bundle_dir: str | Path) -> bytes:
    """Zip a bundle folder (model.json, model.safetensors) for download."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("model.json", "model.safetensors"):
            zf.write(Path(bundle_dir) / name, arcname=name)
    return buf.getvalue()
