"""Build timm and transformers image classifiers from their own registries (docs/FORMATS.md).

The network of a timm or transformers folder is built from the *installed* library with random
initial weights (``timm.create_model(name, pretrained=False, …)``,
``AutoModelForImageClassification.from_config``), then the folder's safetensors are loaded into it the
way our own bundles are (:func:`core.formats.bundle.build_and_validate`). Nothing is downloaded (the
hub is switched off before either library is imported) and nothing from the folder runs: the only
class ever built is the one the library's own mapping names for the folder's ``model_type``, and a timm
folder's ``model_args`` may not name files, checkpoints or pretrained configurations.

A transformers classifier returns an output object; :class:`LogitsOf` makes it return the logits
tensor every method expects while keeping the library's parameter names, so a state dict moves between
the two unchanged and the repaired weights are loaded by ``from_pretrained`` as they are.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from core.errors import UserError
from core.formats.libmeta import CONFIG, PREPROCESSOR, config_files
from core.formats.meta import BundleMeta, ModelFormat
from core.formats.scratch import prefix as scratch_prefix

# Offline, always: a config can never make either library reach the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its load report would repeat our own message

# create_model's own parameters (and anything naming a file or a download) never come from a folder.
TIMM_REFUSED_ARGS = {"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir"}
TIMM_SET_HERE = {"num_classes", "in_chans"}


class LogitsOf(nn.Module):
    """A transformers classifier that returns its logits tensor.

    It shares the wrapped model's parameter, buffer and child dictionaries, so its state dict has the
    library's own keys (``vit.encoder…``, ``classifier.weight``); ``.to()``, ``deepcopy`` and pickling
    keep the two views one model."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.__dict__["inner"] = inner  # not a child: its children are ours
        self._parameters = inner._parameters
        self._buffers = inner._buffers
        self._modules = inner._modules

    def train(self, mode: bool = True):
        self.__dict__["inner"].training = mode
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.__dict__["inner"](pixel_values=x).logits


def library_model(meta: BundleMeta) -> nn.Module:
    """An untrained network of a timm or transformers folder's configuration, in eval mode."""
    if meta.library is None:
        raise ValueError("not a library model")
    if meta.library.format is ModelFormat.TIMM:
        return _timm_model(meta).eval()
    return _transformers_model(meta).eval()


def _timm_model(meta: BundleMeta) -> nn.Module:
    import timm

    config = meta.library.config
    name = config["architecture"]
    if not timm.is_model(name):
        raise UserError(
            f"timm {timm.__version__} has no architecture {name!r}", "library_unknown_architecture", name=name
        )
    args = config.get("model_args") or {}
    if not isinstance(args, dict):
        raise UserError("config.json model_args must be an object")
    for key in args:
        if key in TIMM_REFUSED_ARGS or any(w in key for w in ("path", "file", "url", "dir")):
            raise UserError(f"config.json model_args {key!r} is refused: it could load files or download")
    kwargs = {k: v for k, v in args.items() if k not in TIMM_SET_HERE}
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=meta.num_classes, in_chans=meta.input_size[0], **kwargs
        )
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        raise UserError(f"timm cannot build {name!r} from config.json: {str(exc).splitlines()[0][:200]}") from None


def _transformers_model(meta: BundleMeta) -> nn.Module:
    cls = _transformers_class(meta)
    config = {k: v for k, v in meta.library.config.items() if k not in ("dtype", "torch_dtype")}
    try:
        cfg = cls.config_class.from_dict(config)
        return LogitsOf(cls._from_config(cfg, dtype=torch.float32, attn_implementation="eager"))
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(f"transformers cannot build {cls.__name__} from config.json: {detail}") from None


def unwrap(model: nn.Module) -> nn.Module:
    """The library's own module (a transformers model without :class:`LogitsOf`)."""
    return model.__dict__["inner"] if isinstance(model, LogitsOf) else model


def _transformers_class(meta: BundleMeta):
    """The library's own image-classification class for the folder's model_type."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    model_type = meta.library.config["model_type"]
    class_name = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(model_type)
    if model_type not in CONFIG_MAPPING or not isinstance(class_name, str):
        raise UserError(
            f"transformers {transformers.__version__} has no image classifier of model_type {model_type!r}",
            "library_unknown_architecture",
            name=model_type,
        )
    wanted = meta.library.config.get("architectures") or [class_name]
    if wanted[0] != class_name:
        raise UserError(
            f"config.json names {wanted[0]!r}, but transformers' image classifier for {model_type!r} is {class_name}"
        )
    return getattr(transformers, class_name)


def transformers_from_files(meta: BundleMeta, files: dict[str, bytes]) -> tuple[nn.Module, list[str]]:
    """A transformers classifier with a folder's weights, loaded by the library's own ``from_pretrained``
    (it knows the key names older versions saved under) from a fresh folder holding only the checked
    config.json and the safetensors: offline, never with remote code; every missing, unexpected or
    mis-shaped weight is refused."""
    cls = _transformers_class(meta)
    with tempfile.TemporaryDirectory(prefix=scratch_prefix("hf")) as tmp:
        for name, data in files.items():
            if name != PREPROCESSOR:
                (Path(tmp) / name).write_bytes(data if name != CONFIG else config_files(meta)[CONFIG])
        try:
            model, info = cls.from_pretrained(
                tmp,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                dtype=torch.float32,
                attn_implementation="eager",
                output_loading_info=True,
            )
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            detail = " ".join(str(exc).split())[:300]
            if "mismatched" in detail:
                detail = "some weights have other shapes than config.json gives them"
            raise UserError(
                f"the weights do not fit {cls.__name__} as config.json describes it: {detail}",
                "weights_do_not_fit",
                architecture=meta.architecture,
                n=meta.num_classes,
                detail=detail,
            ) from None
    problems = {k: sorted(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(problems.values()):
        parts = [f"{len(v)} {k.replace('_', ' ')} ({', '.join(map(str, v[:3]))})" for k, v in problems.items() if v]
        raise UserError(
            f"the weights do not fit {cls.__name__} as config.json describes it: {'; '.join(parts)}",
            "weights_do_not_fit",
            architecture=meta.architecture,
            n=meta.num_classes,
            detail="; ".join(parts)[:600],
        )
    return LogitsOf(model.eval()), []


def save_transformers(state: dict[str, torch.Tensor], meta: BundleMeta, out: Path) -> None:
    """A transformers classifier's weights written by the library's own ``save_pretrained`` (one
    model.safetensors, the key names ``from_pretrained`` reads), with its preprocessor_config.json."""
    model = library_model(meta)
    model.load_state_dict(state, strict=True)
    unwrap(model).save_pretrained(out, safe_serialization=True, max_shard_size="100GB")
    for name, data in config_files(meta).items():
        if name == PREPROCESSOR:
            (out / name).write_bytes(data)
