"""Model bundles: load, validate and save (DESIGN.md §5).

A bundle is a folder or a .zip holding ``model.json`` and ``model.safetensors``. ``model.json``
has exactly the keys ``architecture``, ``num_classes``, ``class_names``, ``input_size`` ([C,H,W]),
``mean`` and ``std``. A plain ``.pt``/``.pth`` state dict is accepted too, read with
``torch.load(weights_only=True)`` only, together with the same metadata given separately.

Uploaded models are untrusted. Nothing here unpickles arbitrary objects: pickled whole models,
TorchScript archives and ``.pt2`` exports are refused, because loading them can run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes
from torch import nn

from core.errors import UserError
from core.formats.architectures import build_model, classifier_out_features
from core.formats.zipsafety import read_zip_members

META_KEYS = ("architecture", "num_classes", "class_names", "input_size", "mean", "std")
MAX_MODEL_BYTES = 600 * 1024 * 1024  # vit_b_16 is ~350 MB in fp32; leave head-room, refuse bigger
REFUSED_SUFFIXES = {
    ".pt2": "a .pt2 export is a program, not weights; loading it can run code",
    ".ts": "TorchScript archives hold code that runs when loaded",
    ".pkl": "pickle files can run arbitrary code when loaded",
    ".pickle": "pickle files can run arbitrary code when loaded",
}


@dataclass(frozen=True)
class BundleMeta:
    """What ``model.json`` says about the model: everything needed to build and feed it."""

    architecture: str
    num_classes: int
    class_names: list[str]
    input_size: list[int]
    mean: list[float]
    std: list[float]

    @classmethod
    def from_dict(cls, data: object) -> BundleMeta:
        """Validate a parsed model.json, naming the first problem found."""
        if not isinstance(data, dict):
            raise UserError("model.json must hold a JSON object")
        missing = [k for k in META_KEYS if k not in data]
        if missing:
            raise UserError(f"model.json is missing key(s): {', '.join(missing)}")
        extra = sorted(set(data) - set(META_KEYS))
        if extra:
            raise UserError(f"model.json has unknown key(s): {', '.join(extra)}")
        num_classes = data["num_classes"]
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise UserError(f"model.json num_classes must be an integer ≥ 2, got {num_classes!r}")
        names = data["class_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise UserError("model.json class_names must be a list of non-empty strings")
        if len(names) != num_classes:
            raise UserError(f"model.json lists {len(names)} class_names but num_classes is {num_classes}")
        if len(set(names)) != len(names):
            raise UserError("model.json class_names has duplicates")
        size = data["input_size"]
        if (
            not isinstance(size, list)
            or len(size) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 1024 for s in size)
        ):
            raise UserError(f"model.json input_size must be [C, H, W] of positive integers, got {size!r}")
        if size[0] not in (1, 3):
            raise UserError(f"model.json input_size must have 1 or 3 channels, got {size[0]}")
        for key in ("mean", "std"):
            vals = data[key]
            if (
                not isinstance(vals, list)
                or len(vals) != size[0]
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals)
            ):
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
        return asdict(self)


@dataclass
class ModelBundle:
    """A loaded, validated model: architecture metadata, the module (eval mode, CPU) and provenance."""

    meta: BundleMeta
    model: nn.Module
    sha256: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse_meta_json(raw: bytes) -> BundleMeta:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"model.json is not valid JSON: {exc}") from None
    return BundleMeta.from_dict(data)


def _safetensors_to_state(raw: bytes) -> dict[str, torch.Tensor]:
    try:
        return st_load_bytes(raw)
    except (SafetensorError, Exception) as exc:  # the Rust parser raises several types
        raise UserError(f"model.safetensors is corrupt or not a safetensors file ({exc})") from None


def state_dict_from_torch_file(raw: bytes, filename: str = "weights.pt") -> dict[str, torch.Tensor]:
    """Read a ``.pt``/``.pth`` *state dict* with ``weights_only=True``.

    A pickled whole ``nn.Module`` or any other object fails the weights-only unpickler before any
    of its code can run; TorchScript archives are recognised and refused with their own message.
    """
    if len(raw) > MAX_MODEL_BYTES:
        raise UserError(f"{filename} is larger than the {MAX_MODEL_BYTES // 2**20} MB limit")
    if raw[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(raw)).namelist()
        except zipfile.BadZipFile:
            names = []
        if any(n.endswith("/code/__torch__.py") or "/code/" in n for n in names) or any(
            n.endswith("constants.pkl") for n in names
        ):
            raise UserError(
                f"{filename} is a TorchScript archive; it is refused because loading it can run "
                "code. Save model.state_dict() instead"
            )
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{filename} is not a plain state dict (it holds pickled objects, e.g. a whole "
            f"nn.Module); it is refused because unpickling it could run code. Save "
            f"model.state_dict() instead. Detail: {str(exc).splitlines()[0]}"
        ) from None
    except Exception as exc:
        raise UserError(f"{filename} could not be read as a PyTorch state dict ({exc})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UserError(f"{filename} does not hold a state dict of named tensors")
    return obj


def build_and_validate(
    meta: BundleMeta, state: dict[str, torch.Tensor], *, source: str, sha256: dict[str, str]
) -> ModelBundle:
    """Build the allow-listed architecture, load weights strictly and probe it."""
    model = build_model(meta.architecture, meta.num_classes, meta.input_size[0])
    out = classifier_out_features(model)
    if out is not None and out != meta.num_classes:
        raise UserError(f"classifier produces {out} outputs but num_classes is {meta.num_classes}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[:3]
        detail = "; ".join(s.strip() for s in first)
        if "size mismatch" in detail and ("classifier" in detail or "fc." in detail or "head" in detail):
            detail = f"num_classes mismatch or wrong weights: {detail}"
        raise UserError(
            f"weights do not fit architecture {meta.architecture!r} with num_classes={meta.num_classes}: {detail[:600]}"
        ) from None
    model.eval()
    with torch.inference_mode():
        probe = model(torch.zeros(2, *meta.input_size))
    if tuple(probe.shape) != (2, meta.num_classes):
        raise UserError(
            f"model output has shape {tuple(probe.shape)} on a probe batch, expected (2, {meta.num_classes})"
        )
    if not torch.isfinite(probe).all():
        raise UserError("model gives non-finite logits (NaN or inf) on a probe batch")
    for p in model.parameters():
        p.requires_grad_(False)
    return ModelBundle(meta=meta, model=model, sha256=sha256, source=source)


def _check_refused_name(name: str) -> None:
    suffix = Path(name).suffix.lower()
    if suffix in REFUSED_SUFFIXES:
        raise UserError(f"{Path(name).name} is refused: {REFUSED_SUFFIXES[suffix]}")


def load_bundle(path: str | Path) -> ModelBundle:
    """Load a bundle folder or .zip (model.json + model.safetensors), validated and hashed."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model bundle not found: {path}")
    _check_refused_name(path.name)
    if path.is_dir():
        files = {}
        for name in ("model.json", "model.safetensors"):
            f = path / name
            if not f.is_file():
                raise UserError(f"model bundle {path} has no {name}")
            if f.stat().st_size > MAX_MODEL_BYTES:
                raise UserError(f"{name} is larger than the {MAX_MODEL_BYTES // 2**20} MB limit")
            files[name] = f.read_bytes()
    elif path.suffix.lower() == ".zip":
        files = read_bundle_zip(path.read_bytes(), path.name)
    else:
        raise UserError(
            f"{path.name} is not a model bundle: give a folder or .zip with model.json and "
            "model.safetensors (a .pt/.pth state dict needs architecture and class names too)"
        )
    return bundle_from_files(files, source=str(path))


def read_bundle_zip(raw: bytes, name: str = "bundle.zip") -> dict[str, bytes]:
    """Pull model.json and model.safetensors out of a zip, at its root or in one top folder."""
    members = read_zip_members(raw, name, max_total=MAX_MODEL_BYTES + 2**20, max_files=64)
    found: dict[str, bytes] = {}
    for member, data in members.items():
        base = member.rsplit("/", 1)[-1]
        _check_refused_name(base)
        if base in ("model.json", "model.safetensors"):
            if base in found:
                raise UserError(f"{name} holds more than one {base}")
            found[base] = data
    for needed in ("model.json", "model.safetensors"):
        if needed not in found:
            raise UserError(f"{name} has no {needed}")
    return found


def bundle_from_files(files: dict[str, bytes], source: str) -> ModelBundle:
    """Build a bundle from the raw bytes of model.json and model.safetensors."""
    meta = _parse_meta_json(files["model.json"])
    state = _safetensors_to_state(files["model.safetensors"])
    sha = {name: sha256_bytes(data) for name, data in files.items()}
    return build_and_validate(meta, state, source=source, sha256=sha)


def bundle_from_state_file(raw: bytes, filename: str, meta: BundleMeta) -> ModelBundle:
    """A ``.pt``/``.pth`` state dict plus metadata given separately (CLI flags or a form)."""
    _check_refused_name(filename)
    if Path(filename).suffix.lower() not in (".pt", ".pth", ".safetensors"):
        raise UserError(f"{filename}: weights must be a .pt, .pth or .safetensors file")
    if filename.lower().endswith(".safetensors"):
        state = _safetensors_to_state(raw)
    else:
        state = state_dict_from_torch_file(raw, filename)
    return build_and_validate(meta, state, source=filename, sha256={filename: sha256_bytes(raw)})


def save_bundle(state: dict[str, torch.Tensor], meta: BundleMeta, out_dir: str | Path) -> Path:
    """Write ``model.json`` + ``model.safetensors`` into ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    (out / "model.safetensors").write_bytes(st_save_bytes(contiguous))
    (out / "model.json").write_text(json.dumps(meta.to_dict(), indent=2), encoding="utf-8")
    return out


def bundle_zip_bytes(bundle_dir: str | Path) -> bytes:
    """Zip a bundle folder (model.json, model.safetensors) for download."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("model.json", "model.safetensors"):
            zf.write(Path(bundle_dir) / name, arcname=name)
    return buf.getvalue()
