"""Integrity of stored models: the SHA-256 of the files as stored, checked before they are used.

A base model's hashes are recorded when it is stored, a repair's when its run finishes (in the
``run_done`` audit row), a repaired model's again when it is approved. Loading a model for any
computation (a repair included) or exporting it first checks the files on disk still have those
hashes, and approving a run checks its weights against the hashes written when it finished, so
weights changed behind the workbench's back are refused rather than used or handed on. No torch
here: pages call this too.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import UserError
from core.formats.libmeta import model_folder_files
from core.formats.meta import file_sha256


def stored_model_sha256(model_dir: str | Path) -> dict[str, str]:
    """SHA-256 of the model's files as they are stored in ``model_dir`` (model.json and model.safetensors, or a
    timm or transformers folder's config files and model.safetensors)."""
    return {name: file_sha256(Path(model_dir) / name) for name in model_folder_files(model_dir)}


def check_stored_model(model: dict, base_recorded: bool = False) -> None:
    """Refuse a stored model whose files no longer match the hashes recorded for it.

    ``model`` is a row of :meth:`core.app.store.Store.model`. A repaired model is always checked; a
    base model when ``base_recorded`` says its row holds the hashes of the stored files
    (:meth:`core.app.store.Store.model_hashes_recorded`: stores made before those were recorded hold
    the upload's hashes there, and their base models are not checked).
    """
    kind = model.get("kind")
    if kind != "repaired" and not (kind == "base" and base_recorded):
        return
    since = "it was approved" if kind == "repaired" else "it was stored"
    recorded = model.get("sha256") or {}
    for name, digest in recorded.items():
        _check_file(Path(model["path"]) / name, digest, model["name"], since)


def check_run_model(model_dir: str | Path, recorded: dict[str, str] | None, what: str) -> dict[str, str]:
    """The hashes of a run's repaired model as stored in ``model_dir``, refused when they differ from
    ``recorded`` (those written when the run finished; None for a run finished before they were)."""
    for name, digest in (recorded or {}).items():
        _check_file(Path(model_dir) / name, digest, what, "the repair finished")
    return stored_model_sha256(model_dir)


def _check_file(f: Path, recorded: str, what: str, since: str) -> None:
    try:
        actual = file_sha256(f)
    except OSError as exc:
        raise UserError(f"{what}: {f.name} cannot be read ({exc.strerror or exc}); refused") from None
    if actual != recorded:
        raise UserError(
            f"{what}: {f.name} changed on disk since {since} (SHA-256 {actual[:12]}…, "
            f"recorded {recorded[:12]}…); it is refused. Restore the file as it was",
            "files_changed",
            what=what,
            file=f.name,
        )
