"""Integrity of stored models: the SHA-256 of the files as stored, checked before they are used.

A repaired model's hashes are recorded when it is approved; exporting it, or loading it for any
computation, first checks the files on disk still have those hashes, so weights changed behind the
workbench's back are refused rather than handed on. No torch here: pages call this too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from core.errors import UserError
from core.formats.libmeta import model_folder_files


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stored_model_sha256(model_dir: str | Path) -> dict[str, str]:
    """SHA-256 of the model's files as they are stored in ``model_dir`` (model.json and model.safetensors, or a
    timm or transformers folder's config files and model.safetensors)."""
    return {name: file_sha256(Path(model_dir) / name) for name in model_folder_files(model_dir)}


def check_stored_model(model: dict) -> None:
    """Refuse an approved (repaired) model whose files no longer match the hashes recorded for it.

    ``model`` is a row of :meth:`core.app.store.Store.model`. Base models of stores made before hashes
    of the stored files were recorded are not checked (their rows hold the upload's hashes).
    """
    if model.get("kind") != "repaired":
        return
    recorded = model.get("sha256") or {}
    for name in recorded:
        f = Path(model["path"]) / name
        try:
            actual = file_sha256(f)
        except OSError as exc:
            raise UserError(f"{model['name']}: {name} cannot be read ({exc.strerror or exc}); refused") from None
        if actual != recorded[name]:
            raise UserError(
                f"{model['name']}: {name} changed on disk since it was approved (SHA-256 {actual[:12]}…, "
                f"recorded {recorded[name][:12]}…); it is refused. Restore the approved file"
            )
