"""Tiny timm and transformers classifiers for the demo's 28×28 digits, made here with random weights and
saved by each library's own writer (timm's ``save_for_hf``, transformers' ``save_pretrained``): what a
user brings (docs/FORMATS.md). Nothing is downloaded."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch

from core.app.demo import CLASS_NAMES, MEAN, STD
from core.formats import libraries  # noqa: F401  (switches the hub off before either library is imported)


def timm_vit(seed: int = 0):
    import timm

    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=28, patch_size=7, depth=1, embed_dim=32,
        num_heads=2,
    ).eval()  # fmt: skip


def timm_resnet(seed: int = 0):
    import timm

    torch.manual_seed(seed)
    return timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()


def save_timm(model, out: Path, label_names: list[str] | None = CLASS_NAMES) -> Path:
    from timm.models._hub import save_for_hf

    config = {"label_names": label_names} if label_names else None
    data = {"input_size": (3, 28, 28), "mean": MEAN, "std": STD}
    save_for_hf(model, str(out), model_config=config, data_config=data, safe_serialization=True)
    return out


def hf_vit(seed: int = 0):
    from transformers import AutoModelForImageClassification, ViTConfig

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=28, patch_size=7, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        id2label=dict(enumerate(CLASS_NAMES)), label2id={n: i for i, n in enumerate(CLASS_NAMES)},
    )  # fmt: skip
    return AutoModelForImageClassification.from_config(config, attn_implementation="eager").eval()


def hf_resnet(seed: int = 0):
    from transformers import AutoModelForImageClassification, ResNetConfig

    torch.manual_seed(seed)
    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], id2label=dict(enumerate(CLASS_NAMES)),
        label2id={n: i for i, n in enumerate(CLASS_NAMES)},
    )  # fmt: skip
    return AutoModelForImageClassification.from_config(config).eval()


def save_hf(model, out: Path, shard: str | None = None) -> Path:
    from transformers import ViTImageProcessor

    if shard:
        model.save_pretrained(out, max_shard_size=shard)
    else:
        model.save_pretrained(out)
    ViTImageProcessor(size={"height": 28, "width": 28}, image_mean=MEAN, image_std=STD).save_pretrained(out)
    return out


def folder_zip(folder: Path, extra: dict[str, bytes] | None = None, top: str = "mymodel/") -> bytes:
    """The folder zipped as a user would (inside one top folder), with extra files added."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, arcname=top + f.name)
        for name, data in (extra or {}).items():
            zf.writestr(top + name, data)
    return buf.getvalue()


def logits(model, x: torch.Tensor) -> torch.Tensor:
    """A library model's logits (a transformers model returns an output object)."""
    with torch.no_grad():
        out = model(x) if not hasattr(model, "config") else model(pixel_values=x)
    return getattr(out, "logits", out)
