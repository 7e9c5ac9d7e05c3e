"""Model bundles: load, validate and save (docs/DESIGN.md §5).

A bundle is a folder or a .zip holding ``model.json`` and ``model.safetensors``, or a timm or Hugging Face
transformers folder (``config.json`` and ``model.safetensors``, sharded too; :mod:`core.formats.libmeta`),
whose network is built by the library itself (:mod:`core.formats.libraries`) and which is saved again
in its own layout. ``model.json``
has exactly the keys ``architecture``, ``num_classes``, ``class_names``, ``input_size`` ([C,H,W]),
``mean`` and ``std``. A plain ``.pt``/``.pth`` state dict is accepted too, read with
``torch.load(weights_only=True)`` only, together with the same metadata given separately.

Uploaded models are untrusted. Nothing here unpickles arbitrary objects: pickled whole models,
TorchScript archives and ``.pt2`` exports are refused, because loading them can run code.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes
from torch import nn

from core.errors import UserError
from core.formats import weightkeys
from core.formats.architectures import build_model, classifier_out_features
from core.formats.libmeta import WEIGHTS, config_files, meta_from_files, read_folder_files, read_model_zip
from core.formats.libraries import library_model, save_transformers, transformers_from_files
from core.formats.meta import (
    MAX_MODEL_BYTES,
    BundleMeta,
    ModelFormat,
    check_refused_name,
    read_bundle_zip,  # noqa: F401  (re-exported: tests and callers import it from here)
    read_meta_file,
    sha256_bytes,
)


@dataclass
class ModelBundle:
    """A loaded, validated model: architecture metadata, the module (eval mode, CPU) and provenance."""

    meta: BundleMeta
    model: nn.Module
    sha256: dict[str, str] = field(default_factory=dict)
    source: str = ""
    notes: list[str] = field(default_factory=list)  # what was accepted with a change (e.g. fp16 cast)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def _safetensors_to_state(raw: bytes) -> dict[str, torch.Tensor]:
    try:
        return st_load_bytes(raw)
    except (SafetensorError, Exception) as exc:  # the Rust parser raises several types
        raise UserError(
            f"model.safetensors is corrupt or not a safetensors file ({exc})", "safetensors_corrupt"
        ) from None


def state_dict_from_torch_file(raw: bytes, filename: str = "weights.pt") -> dict[str, torch.Tensor]:
    """Read a ``.pt``/``.pth`` *state dict* with ``weights_only=True``.

    A pickled whole ``nn.Module`` or any other object fails the weights-only unpickler before any
    of its code can run; TorchScript archives are recognised and refused with their own message.
    """
    if len(raw) > MAX_MODEL_BYTES:
        raise UserError(
            f"{filename} is larger than the {MAX_MODEL_BYTES // 2**20} MB limit",
            "weights_too_big",
            name=filename,
            limit=MAX_MODEL_BYTES // 2**20,
        )
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
                "code. Save model.state_dict() instead",
                "torchscript",
                name=filename,
            )
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{filename} is not a plain state dict (it holds pickled objects, e.g. a whole "
            f"nn.Module); it is refused because unpickling it could run code. Save "
            f"model.state_dict() instead. Detail: {str(exc).splitlines()[0]}",
            "pickled",
            name=filename,
        ) from None
    except Exception as exc:
        raise UserError(
            f"{filename} could not be read as a PyTorch state dict ({exc})", "state_dict_unreadable", name=filename
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UserError(f"{filename} does not hold a state dict of named tensors", "not_state_dict", name=filename)
    return obj


CASTABLE_DTYPES = (torch.float16, torch.bfloat16, torch.float64)


def check_weight_dtypes(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Refuse weights whose type cannot stand for the model's floating-point ones (int64, bool, …).

    float16, bfloat16 and float64 weights are cast to the model's float32; the returned note says so.
    Integer buffers the model itself keeps as integers (BatchNorm's ``num_batches_tracked``) must stay
    integers.
    """
    expected = {k: v.dtype for k, v in model.state_dict().items()}
    cast: set[str] = set()
    for key, tensor in state.items():
        want = expected.get(key)
        if want is None or tensor.dtype == want:
            continue
        if want.is_floating_point and tensor.dtype in CASTABLE_DTYPES:
            cast.add(str(tensor.dtype).replace("torch.", ""))
            continue
        if not want.is_floating_point and not tensor.is_floating_point() and tensor.dtype != torch.bool:
            continue  # an integer counter (num_batches_tracked) stored as another integer type
        have = str(tensor.dtype).replace("torch.", "")
        need = str(want).replace("torch.", "")
        raise UserError(
            f"weight {key!r} is stored as {have}, but the model needs {need}; "
            "weights must be floating point (float32, or float16/bfloat16/float64, which are converted)"
        )
    if cast:
        return [f"weights stored as {', '.join(sorted(cast))} were converted to float32"]
    return []


def check_keys(meta: BundleMeta, want: set[str], have: set[str]) -> None:
    """Refuse weights whose tensor names are not the architecture's with a summary an engineer can act
    on: how many keys are missing and unexpected, a few of each, and which allowed architecture the
    keys match best (usually the one the form should have said), instead of a wall of keys."""
    if want == have:
        return
    mine = weightkeys.compare(have, meta.architecture, frozenset(want))
    arch, n_missing, n_unexpected = meta.architecture, len(mine.missing), len(mine.unexpected)
    missing = weightkeys.examples(mine.missing) or "—"
    unexpected = weightkeys.examples(mine.unexpected) or "—"
    summary = (
        f"the weights do not fit architecture {arch}: {n_missing} of its keys are missing ({missing}) "
        f"and {n_unexpected} keys are unexpected ({unexpected})"
    )
    best = None if meta.library is not None else weightkeys.best_match(have)
    if best is None or best.architecture == arch or best.score <= mine.score:
        raise UserError(
            summary,
            "weights_wrong_keys",
            architecture=arch,
            missing=n_missing,
            unexpected=n_unexpected,
            missing_examples=missing,
            unexpected_examples=unexpected,
        )
    guess, total = best.architecture, best.matched + len(best.missing)
    raise UserError(
        f"{summary}. The keys match {guess} best ({best.matched} of {total} keys): choose {guess} as the architecture",
        "weights_wrong_architecture",
        architecture=arch,
        missing=n_missing,
        unexpected=n_unexpected,
        missing_examples=missing,
        unexpected_examples=unexpected,
        guess=guess,
        matched=best.matched,
        total=total,
    )


def build_and_validate(
    meta: BundleMeta, state: dict[str, torch.Tensor], *, source: str, sha256: dict[str, str]
) -> ModelBundle:
    """Build the allow-listed architecture (or the library's network), load weights strictly and probe it."""
    if meta.library is not None:
        model = library_model(meta)
    else:
        model = build_model(meta.architecture, meta.num_classes, meta.input_size[0])
    out = classifier_out_features(model)
    if out is not None and out != meta.num_classes:
        raise UserError(
            f"classifier produces {out} outputs but num_classes is {meta.num_classes}",
            "classes_mismatch",
            out=out,
            n=meta.num_classes,
        )
    notes = check_weight_dtypes(model, state)
    check_keys(meta, set(model.state_dict()), set(state))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[:3]
        detail = "; ".join(s.strip() for s in first)
        if "size mismatch" in detail and ("classifier" in detail or "fc." in detail or "head" in detail):
            detail = f"num_classes mismatch or wrong weights: {detail}"
        raise UserError(
            f"weights do not fit architecture {meta.architecture!r} with num_classes={meta.num_classes}: {detail[:600]}",
            "weights_do_not_fit",
            architecture=meta.architecture,
            n=meta.num_classes,
            detail=detail[:600],
        ) from None
    return probed(meta, model, source=source, sha256=sha256, notes=notes)


def probed(meta: BundleMeta, model: nn.Module, *, source: str, sha256: dict[str, str], notes: list[str]) -> ModelBundle:
    """A built model with its weights, checked on a probe batch (right output shape, finite logits)."""
    model.eval()
    try:
        with torch.inference_mode():
            probe = model(torch.zeros(2, *meta.input_size))
    except (RuntimeError, ValueError) as exc:
        c, h, w = meta.input_size
        detail = " ".join(str(exc).split())[:200]
        raise UserError(
            f"architecture {meta.architecture!r} cannot run on input_size [{c}, {h}, {w}] "
            f"(the image is probably smaller than its kernels): {detail}"
        ) from None
    if tuple(probe.shape) != (2, meta.num_classes):
        raise UserError(
            f"model output has shape {tuple(probe.shape)} on a probe batch, expected (2, {meta.num_classes})"
        )
    if not torch.isfinite(probe).all():
        raise UserError("model gives non-finite logits (NaN or inf) on a probe batch", "non_finite")
    for p in model.parameters():
        p.requires_grad_(False)
    return ModelBundle(meta=meta, model=model, sha256=sha256, source=source, notes=notes)


def load_bundle(path: str | Path) -> ModelBundle:
    """Load a bundle folder or .zip (model.json + model.safetensors), validated and hashed."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model bundle not found: {path}")
    check_refused_name(path.name)
    if path.is_dir() and not (path / "model.json").is_file() and (path / "config.json").is_file():
        files = read_folder_files(path)
    elif path.is_dir():
        files = {}
        for name in ("model.json", "model.safetensors"):
            f = path / name
            if not f.is_file():
                raise UserError(f"model bundle {path} has no {name}")
            if f.stat().st_size > MAX_MODEL_BYTES:
                raise UserError(f"{name} is larger than the {MAX_MODEL_BYTES // 2**20} MB limit")
            files[name] = f.read_bytes()
    elif path.suffix.lower() == ".zip":
        files = read_model_zip(path.read_bytes(), path.name)
    else:
        raise UserError(
            f"{path.name} is not a model bundle: give a folder or .zip with model.json and "
            "model.safetensors, or a timm or transformers folder (config.json and model.safetensors); "
            "a .pt/.pth state dict needs architecture and class names too"
        )
    return bundle_from_files(files, source=str(path))


def _weights_of(files: dict[str, bytes]) -> dict[str, torch.Tensor]:
    """The tensors of every safetensors file given (one file, or the shards of one model)."""
    state: dict[str, torch.Tensor] = {}
    for name, data in files.items():
        if name.endswith(".safetensors"):
            shard = _safetensors_to_state(data)
            if set(shard) & set(state):
                raise UserError(f"{name} repeats weights another shard holds", "safetensors_corrupt")
            state.update(shard)
    return state


def bundle_from_files(files: dict[str, bytes], source: str) -> ModelBundle:
    """Build a bundle from the raw bytes of model.json and model.safetensors, or of a timm or
    transformers folder's files (its config files and its safetensors, one file or shards)."""
    meta = meta_from_files(files)
    sha = {name: sha256_bytes(data) for name, data in files.items()}
    if meta.format is ModelFormat.TRANSFORMERS:  # its files may use the library's older key names
        model, notes = transformers_from_files(meta, files)
        bundle = probed(meta, model, source=source, sha256=sha, notes=notes)
    else:
        bundle = build_and_validate(meta, _weights_of(files), source=source, sha256=sha)
    if meta.library is not None and meta.class_names == [str(i) for i in range(meta.num_classes)]:
        bundle.notes.append("the folder names no classes; they are called 0, 1, 2, …")
    return bundle


def bundle_from_state_file(raw: bytes, filename: str, meta: BundleMeta) -> ModelBundle:
    """A ``.pt``/``.pth`` state dict plus metadata given separately (CLI flags or a form)."""
    check_refused_name(filename)
    if Path(filename).suffix.lower() not in (".pt", ".pth", ".safetensors"):
        raise UserError(
            f"{filename}: weights must be a .pt, .pth or .safetensors file", "weights_suffix", name=filename
        )
    if filename.lower().endswith(".safetensors"):
        state = _safetensors_to_state(raw)
    else:
        state = state_dict_from_torch_file(raw, filename)
    return build_and_validate(meta, state, source=filename, sha256={filename: sha256_bytes(raw)})


def save_bundle(state: dict[str, torch.Tensor], meta: BundleMeta, out_dir: str | Path) -> Path:
    """Write ``model.json`` + ``model.safetensors`` into ``out_dir`` (created if needed); a timm or
    transformers model is written in its own layout (config.json, preprocessor_config.json), which
    ``timm.create_model("local-dir:…")`` and ``from_pretrained`` read."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    if meta.format is ModelFormat.TRANSFORMERS:
        save_transformers(contiguous, meta, out)
        return out
    (out / WEIGHTS).write_bytes(st_save_bytes(contiguous, metadata={"format": "pt"}))
    for name, data in config_files(meta).items():
        (out / name).write_bytes(data)
    return out


def load_model_file(path: str, meta_path: str | None = None):
    """A bundle folder/zip, or a .pt/.pth/.safetensors weights file plus a model.json given by --meta."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".pt", ".pth", ".safetensors", ".pt2", ".ts", ".pkl"):
        if p.suffix.lower() in (".pt2", ".ts", ".pkl"):
            load_bundle(p)  # raises the refusal message
        if not meta_path:
            raise UserError(f"{p.name} is a bare weights file; pass --meta model.json with its architecture")
        meta = read_meta_file(meta_path)
        return bundle_from_state_file(p.read_bytes(), p.name, meta)
    return load_bundle(p)
