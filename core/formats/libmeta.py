"""timm and Hugging Face transformers model folders, read without torch (docs/FORMATS.md).

A **timm folder** holds ``config.json`` (``architecture``, ``num_classes``, ``pretrained_cfg`` with
``input_size``, ``mean``, ``std``; ``label_names``) and ``model.safetensors``. A **transformers folder** holds
``config.json`` (``model_type``, ``architectures``, ``id2label``), ``preprocessor_config.json`` (size, mean,
std) and ``model.safetensors``, or ``model.safetensors.index.json`` with its shards. Class names, input size
and normalisation come from those files (:func:`library_meta`).

No code from a folder ever runs: the network is built from the installed library's own registry
(:mod:`core.formats.libraries`), a config that asks for code (``auto_map``, ``custom_pipelines``,
``trust_remote_code``) is refused, and so is every file that holds code or pickles (``.py``, ``.bin``,
``.pt``, ``.pth``, ``.pkl``, ``.ckpt``), each with its own line. The page process checks an upload with
this module; the worker loads the weights.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

from core.errors import UserError
from core.formats.meta import (
    MAX_META_BYTES,
    MAX_MODEL_BYTES,
    BundleMeta,
    LibrarySource,
    ModelFormat,
    check_not_dataset,
    parse_meta_json,
    read_bundle_zip,
)
from core.formats.zipsafety import read_zip_members, zip_names

BUNDLE_META = "model.json"
CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
BUNDLE_FILES = (BUNDLE_META, WEIGHTS)
MAX_LIBRARY_ZIP_ENTRIES = 256  # config files, a sharded model's many safetensors, a README, folder entries

_PICKLE = "it is a pickle, which can run code when loaded; save the weights as safetensors"
REFUSED_IN_FOLDER = {
    ".py": "it is Python code, and nothing from an uploaded model is ever run",
    ".bin": f"pytorch_model.bin is a pickled checkpoint: {_PICKLE} (save_pretrained does by default)",
    ".pt": _PICKLE,
    ".pth": _PICKLE,
    ".pkl": _PICKLE,
    ".pickle": _PICKLE,
    ".ckpt": _PICKLE,
}
CODE_KEYS = {
    "auto_map": "auto_map names code shipped with the model",
    "custom_pipelines": "custom_pipelines names code shipped with the model",
    "trust_remote_code": "trust_remote_code asks to run code shipped with the model",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
_SHARD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.safetensors$")


def check_folder_member(name: str) -> None:
    """Refuse a file of a timm or transformers folder that holds code or a pickle, with one line."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    reason = REFUSED_IN_FOLDER.get(Path(base).suffix.lower())
    if reason:
        raise UserError(f"{base} is refused: {reason}", "library_file_refused", name=base)


def is_library_folder(names) -> bool:
    """A folder or zip of a timm or transformers model: config.json and no model.json."""
    bases = {n.replace("\\", "/").rsplit("/", 1)[-1] for n in names}
    return CONFIG in bases and BUNDLE_META not in bases


def _json_object(raw: bytes, name: str) -> dict:
    if len(raw) > 8 * MAX_META_BYTES:
        raise UserError(f"{name} is larger than {8 * MAX_META_BYTES // 1024} KB; it cannot be a model configuration")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError(
            f"{name} is not valid JSON: {str(exc).splitlines()[0][:160]}", "meta_json", name=name, detail=str(exc)[:160]
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{name} must hold a JSON object")
    for key, why in CODE_KEYS.items():
        if key in data:
            raise UserError(
                f"{name} is refused: {why}, and no code from an upload is ever run",
                "library_remote_code",
                name=name,
                field=key,
            )
    return data


def library_source(config_raw: bytes, preprocessor_raw: bytes | None = None) -> LibrarySource:
    """The configuration of a timm folder (``architecture``) or a transformers one (``model_type``)."""
    config = _json_object(config_raw, CONFIG)
    preprocessor = _json_object(preprocessor_raw, PREPROCESSOR) if preprocessor_raw is not None else None
    if isinstance(config.get("model_type"), str):
        return LibrarySource(ModelFormat.TRANSFORMERS, config, preprocessor)
    if isinstance(config.get("architecture"), str):
        return LibrarySource(ModelFormat.TIMM, config, None)
    raise UserError(
        "config.json is neither a timm configuration (no 'architecture') nor a transformers one (no 'model_type')",
        "library_unknown_config",
    )


def library_meta(source: LibrarySource) -> BundleMeta:
    """Class names, input size, mean and std of a library folder, checked like a model.json."""
    if source.format is ModelFormat.TIMM:
        arch, fields = _timm_fields(source.config)
    else:
        arch, fields = _transformers_fields(source.config, source.preprocessor)
    try:
        checked = BundleMeta.from_dict({"architecture": arch, **fields})
    except UserError as exc:
        raise UserError(str(exc).replace("model.json", "the folder's configuration")) from None
    return BundleMeta(**{k: getattr(checked, k) for k in checked.to_dict()}, library=source)


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise UserError(f"config.json {what} must be a plain name, got {str(value)[:60]!r}")
    return value


def _label_list(labels: object, n: int) -> list:
    """Class names from a list, or a dict of index → name (``id2label``, timm's ``label_names``)."""
    if isinstance(labels, list):
        return labels
    if isinstance(labels, dict):
        try:
            by_index = {int(k): v for k, v in labels.items()}
        except (TypeError, ValueError):
            raise UserError("config.json labels must be keyed by class index") from None
        return [by_index.get(i) for i in range(n)]
    return [str(i) for i in range(n)]


def _timm_fields(config: dict) -> tuple[str, dict]:
    arch = _check_name(config["architecture"], "architecture")
    cfg = config.get("pretrained_cfg") or {}
    if not isinstance(cfg, dict) or "input_size" not in cfg:
        raise UserError("config.json of a timm model needs pretrained_cfg with input_size, mean and std")
    n = config.get("num_classes", cfg.get("num_classes"))
    names = config.get("label_names", cfg.get("label_names"))
    size = cfg["input_size"]
    return f"timm:{arch}", {
        "num_classes": n,
        "class_names": _label_list(names, n if isinstance(n, int) else 0),
        "input_size": list(size) if isinstance(size, (list, tuple)) else size,
        "mean": cfg.get("mean"),
        "std": cfg.get("std"),
    }


def _transformers_fields(config: dict, pre: dict | None) -> tuple[str, dict]:
    model_type = _check_name(config["model_type"], "model_type")
    for arch in config.get("architectures") or []:
        if not isinstance(arch, str) or not arch.endswith("ForImageClassification"):
            raise UserError(
                f"config.json names architecture {str(arch)[:60]!r}: only image classifiers "
                "(…ForImageClassification) can be repaired",
                "library_not_classifier",
                architecture=str(arch)[:60],
            )
    if pre is None:
        raise UserError(
            "a transformers folder needs preprocessor_config.json (its input size, mean and std)",
            "library_no_preprocessor",
        )
    labels = config.get("id2label")
    n = len(labels) if isinstance(labels, dict) else config.get("num_labels")
    channels = config.get("num_channels", 3)
    return f"transformers:{model_type}", {
        "num_classes": n,
        "class_names": _label_list(labels, n if isinstance(n, int) else 0),
        "input_size": [channels, *_hf_size(config, pre)],
        "mean": pre.get("image_mean"),
        "std": pre.get("image_std"),
    }


def _hf_size(config: dict, pre: dict) -> list:
    """Height and width: the preprocessor's crop, else its size, else the config's image_size."""
    for key in ("crop_size", "size"):
        size = pre.get(key)
        if isinstance(size, dict) and "height" in size and "width" in size:
            return [size["height"], size["width"]]
        if isinstance(size, dict) and "shortest_edge" in size:
            return [size["shortest_edge"]] * 2
        if isinstance(size, int):
            return [size, size]
    size = config.get("image_size")
    if isinstance(size, int):
        return [size, size]
    if isinstance(size, list) and len(size) == 2:
        return size
    raise UserError("preprocessor_config.json gives no input size (size or crop_size)")


def weight_files(names, index_raw: bytes | None) -> list[str]:
    """The safetensors files to read: model.safetensors, or the shards its index lists."""
    bases = {n.rsplit("/", 1)[-1] for n in names}
    if WEIGHTS in bases:
        return [WEIGHTS]
    if index_raw is None:
        raise UserError(
            "the model folder has no model.safetensors (nor model.safetensors.index.json)", "library_no_weights"
        )
    index = _json_object(index_raw, INDEX)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise UserError(f"{INDEX} has no weight_map")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not isinstance(shard, str) or not _SHARD.match(shard):
            raise UserError(f"{INDEX} names a shard {str(shard)[:80]!r} that is not a plain .safetensors file name")
        if shard not in bases:
            raise UserError(f"{INDEX} lists {shard}, which is not in the folder", "library_shard_missing", name=shard)
    return shards


def read_model_zip(raw: bytes, name: str = "model.zip") -> dict[str, bytes]:
    """The files of a model zip, by base name: model.json + model.safetensors, or a timm or transformers
    folder (config.json, preprocessor_config.json, the weights or the index and its shards), at the zip's
    root or in one top folder. Files that hold code or pickles are refused; other files are left out."""
    names = zip_names(raw, name)
    if not is_library_folder(names):
        return read_bundle_zip(raw, name)
    check_not_dataset(names, name)
    members = read_zip_members(raw, name, max_total=MAX_MODEL_BYTES + 2**20, max_files=MAX_LIBRARY_ZIP_ENTRIES)
    found: dict[str, bytes] = {}
    for member, data in members.items():
        check_folder_member(member)
        base = member.rsplit("/", 1)[-1]
        if base in (CONFIG, PREPROCESSOR, INDEX) or _SHARD.match(base):
            if base in found:
                raise UserError(f"{name} holds more than one {base}", "bundle_twice", name=name, file=base)
            found[base] = data
    library_meta(library_source(found[CONFIG], found.get(PREPROCESSOR)))
    kept = [CONFIG, PREPROCESSOR, *weight_files(found, found.get(INDEX))]
    if kept[-1] != WEIGHTS:
        kept.append(INDEX)
    return {k: found[k] for k in kept if k in found}


def read_folder_files(folder: Path) -> dict[str, bytes]:
    """The same files from a folder on disk (a timm or transformers folder; refused files refused)."""
    names = [p.name for p in folder.iterdir() if p.is_file()]
    for n in names:
        check_folder_member(n)
    if CONFIG not in names:
        raise UserError(f"model folder {folder} has no model.json (our bundle) nor config.json (timm, transformers)")
    index = folder / INDEX
    shards = weight_files(names, index.read_bytes() if index.is_file() else None)
    wanted = [CONFIG, PREPROCESSOR, *shards] + ([INDEX] if shards != [WEIGHTS] else [])
    total = sum((folder / n).stat().st_size for n in wanted if (folder / n).is_file())
    if total > MAX_MODEL_BYTES:
        raise UserError(f"the model's files are larger than the {MAX_MODEL_BYTES // 2**20} MB limit")
    return {n: (folder / n).read_bytes() for n in wanted if (folder / n).is_file()}


def meta_from_files(files: dict[str, bytes]) -> BundleMeta:
    """The metadata of a model given as files: a model.json, or a library folder's configuration."""
    if BUNDLE_META in files:
        return parse_meta_json(files[BUNDLE_META])
    return library_meta(library_source(files[CONFIG], files.get(PREPROCESSOR)))


def config_files(meta: BundleMeta) -> dict[str, bytes]:
    """The metadata files a model folder of ``meta``'s format is saved with (beside model.safetensors)."""
    if meta.library is None:
        return {BUNDLE_META: json.dumps(meta.to_dict(), indent=2).encode()}
    out = {CONFIG: json.dumps(meta.library.config, indent=2).encode()}
    if meta.library.preprocessor is not None:
        out[PREPROCESSOR] = json.dumps(meta.library.preprocessor, indent=2).encode()
    return out


def model_folder_files(folder: str | Path) -> tuple[str, ...]:
    """The files of a stored model folder (always one model.safetensors): its hashes and its zip."""
    folder = Path(folder)
    if (folder / BUNDLE_META).is_file() or not (folder / CONFIG).is_file():
        return BUNDLE_FILES
    return tuple(n for n in (CONFIG, PREPROCESSOR, WEIGHTS) if (folder / n).is_file())


def folder_meta(folder: str | Path) -> BundleMeta:
    """The metadata of a stored model folder, read as JSON only."""
    folder = Path(folder)
    return meta_from_files({n: (folder / n).read_bytes() for n in model_folder_files(folder) if n != WEIGHTS})


def has_model_meta(folder: str | Path) -> bool:
    return (Path(folder) / BUNDLE_META).is_file() or (Path(folder) / CONFIG).is_file()


def model_zip_bytes(folder: str | Path, extra: dict[str, str] | None = None) -> bytes:
    """Zip a stored model folder (our bundle, or a timm or transformers folder) for download, with ``extra``
    text files (a model card) beside it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in model_folder_files(folder):
            zf.write(Path(folder) / name, arcname=name)
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
    return buf.getvalue()
