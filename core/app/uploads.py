"""Uploads: a model, an evaluation set, a pool of candidate images, single images.

Every upload is checked completely before anything is registered, so a bad file leaves what was
already saved untouched. Zips are read through :mod:`core.formats.zipsafety`. A model's weights are
checked by the task worker (:func:`core.app.compute.register_model`): the page process only checks
the zip and ``model.json``, stages the files and waits for the verdict.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import shutil
from pathlib import Path

from core.app import jobs
from core.app.accounts import Role, User, require, user_for
from core.app.budget import check_budget
from core.app.evaluation import evaluate_active
from core.app.pool import items_file, read_items, write_items
from core.app.projects import project_summary
from core.app.store import Store
from core.engine.runfolder import BUNDLE_META, BUNDLE_WEIGHTS
from core.errors import UserError
from core.formats.datasets import (
    IMAGE_SUFFIXES,
    MAX_MANIFEST_BYTES,
    ImageDataset,
    dataset_from_zip_bytes,
    open_image,
)
from core.formats.libmeta import meta_from_files, read_model_zip
from core.formats.limits import max_images, max_unzipped_bytes
from core.formats.meta import MAX_MODEL_BYTES, BundleMeta, check_refused_name, sha256_bytes
from core.formats.weightkeys import guess_architecture
from core.formats.zipsafety import ZipReader, ZipSource, source_sha256

MAX_POOL_ZIP_BYTES = 512 * 1024 * 1024
# The largest file the server takes at all: .streamlit/config.toml's ``server.maxUploadSize`` (a test keeps
# the two equal), the largest model (MAX_MODEL_BYTES) with head-room for a request's own bytes.
SERVER_UPLOAD_MB = 650
_MB = 1024 * 1024  # Streamlit's megabyte, as its uploader counts and shows it


def upload_limit_mb(kind: str) -> int:
    """The largest file, in MB, of one kind that the workbench takes: what its uploader states ("Limit … per
    file", the browser refusing bigger before sending a byte), each within the server's own cap.
    ``model``: a bundle zip or a weights file (MAX_MODEL_BYTES); ``images_zip``: a pool or reference zip (the
    images it unpacks, MAX_POOL_ZIP_BYTES); ``eval_zip``: an evaluation zip (what it unpacks,
    BIASREPAIR_MAX_UNZIPPED_MB); ``image``: one image (its pixels are capped, not its bytes)."""
    caps = {
        "model": MAX_MODEL_BYTES // _MB,
        "images_zip": MAX_POOL_ZIP_BYTES // _MB,
        "eval_zip": max_unzipped_bytes() // _MB,
        "image": SERVER_UPLOAD_MB,
    }
    return min(caps[kind], SERVER_UPLOAD_MB)


def may_upload(user: User | None) -> bool:
    """Whether ``user`` may upload files at all: signed in with the curator role, and not the demo."""
    return user is not None and not user.demo and user.can(Role.CURATOR)


def no_upload_key(user: User | None) -> str | None:
    """The translation key of the line shown instead of a file uploader to someone who may not upload (who
    may, and what to do); None for someone who may."""
    if may_upload(user):
        return None
    return "upload_not_in_demo" if user is not None and user.demo else "upload_curators_only"


def may_send_files(store: Store, token: str | None) -> bool:
    """Whether the browser session holding ``token`` may send files to the server at all (:func:`may_upload`,
    the session alive and the account enabled). What the server's upload endpoint asks before it reads a byte
    of a file (serving/upload_guard.py); each upload function below checks its own action and project again
    when the file is used."""
    return may_upload(user_for(store, token))


@functools.lru_cache(maxsize=64)
def _cached_tree_sha256(root: str, stamp: tuple) -> str:
    return tree_sha256(Path(root), cache=False)


def tree_sha256(root: Path, cache: bool = True) -> str:
    """SHA-256 over a folder's relative file names and contents (the audit fingerprint of a dataset).

    The demo cache never changes, so its fingerprint is computed once per process (keyed by the
    folder's modification time and file count)."""
    root = Path(root)
    if cache:
        files = sum(1 for p in root.rglob("*") if p.is_file())
        return _cached_tree_sha256(str(root), (root.stat().st_mtime_ns, files))
    h = hashlib.sha256()
    for f in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def register_eval(
    store: Store, project_id: int, root: Path, name: str, ds: ImageDataset, actor: str, copy: bool
) -> int:
    sha = tree_sha256(root)
    did = store.add_dataset(project_id, "eval", name, root, sha, len(ds))
    if copy:
        dest = store.artifacts / "datasets" / str(did)
        shutil.copytree(root, dest)
        store.set_dataset_path(did, dest)
    store.set_project(project_id, eval_dataset_id=did)
    store.audit(actor, "upload_eval", project_id, dataset_id=did, name=name, images=len(ds), sha256=sha)
    return did


def stored_pool_sha256(store: Store, dataset_id: int, root: Path) -> str:
    """The fingerprint of a pool as stored: its folder, and its items.csv when that lives elsewhere
    (the demo's images are shared read-only, so its list is kept in the store)."""
    root = Path(root)
    items = items_file(store, dataset_id)
    if items.parent.resolve() == root.resolve():
        return tree_sha256(root, cache=False)
    combined = f"{tree_sha256(root)}:{hashlib.sha256(items.read_bytes()).hexdigest()}"
    return hashlib.sha256(combined.encode()).hexdigest()


def register_pool(
    store: Store, project_id: int, root: Path, name: str, items: list[dict], actor: str, copy: bool, role: str = "pool"
) -> int:
    """Register unlabelled images (path, attribute): the candidate pool, or with ``role="reference"``
    the typical images that the function-space anchor and the kept estimate use."""
    upload_sha = tree_sha256(root)
    did = store.add_dataset(project_id, role, name, root, upload_sha, len(items))
    dest = store.artifacts / "datasets" / str(did)
    if copy:
        shutil.copytree(root, dest)
    else:
        dest = Path(root)
    write_items(store, did, items)
    store.set_dataset_path(did, dest)
    sha = stored_pool_sha256(store, did, dest)
    store.set_dataset_size(did, len(items), sha)
    store.set_project(project_id, **{f"{role}_dataset_id": did})
    store.audit(
        actor,
        f"upload_{role}",
        project_id,
        dataset_id=did,
        name=name,
        images=len(items),
        sha256=sha,
        upload_sha256=upload_sha,
    )
    return did


def _register_staged(store: Store, raw_files: dict[str, bytes], filename: str, weights: str, actor: str) -> int:
    """Write an upload's files into a fresh staging folder, have the task worker check and register
    them, and remove the staging folder however that ends (the worker removes it too, but a worker
    that dies, or a write that fails half-way, must not leave it behind)."""
    require(store, actor, "curator", "upload")
    check_budget(store, sum(len(d) for d in raw_files.values()), filename)
    digest = hashlib.sha256(b"".join(hashlib.sha256(d).digest() for d in raw_files.values())).hexdigest()
    staging = store.artifact_dir("incoming") / f"model_{digest[:16]}"
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        for name, data in raw_files.items():
            (staging / name).write_bytes(data)
        payload = {"staged": str(staging), "filename": filename, "weights": weights}
        return int(jobs.compute(store, "register_model", payload, actor)["project_id"])
    except OSError as exc:
        raise store.os_failure(exc, UserError(f"{filename} cannot be saved ({exc.strerror or exc})")) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def upload_model_zip(store: Store, raw: bytes, filename: str, actor: User) -> int:
    """A new project from a model zip: our bundle (model.json + model.safetensors) or a timm or transformers
    folder (config.json, model.safetensors or its shards; core/formats/libmeta.py). Returns its id. Its
    configuration is checked here, as JSON, before anything is staged; files that hold code are refused."""
    files = read_model_zip(raw, filename)
    meta_from_files(files)
    return _register_staged(store, files, filename, BUNDLE_WEIGHTS, actor)


def guess_weights_architecture(raw: bytes, filename: str) -> str | None:
    """The allowed architecture whose keys a weights file's tensor names match best (read without
    loading it), so the form can start on it; None when its keys cannot be read or match none."""
    return guess_architecture(raw, filename)


def upload_model_weights(
    store: Store,
    raw: bytes,
    filename: str,
    architecture: str,
    class_names: list[str],
    input_size: list[int],
    mean: list[float],
    std: list[float],
    actor: str,
) -> int:
    """A new project from a weights file (.safetensors/.pt/.pth state dict) plus a small form."""
    meta = BundleMeta.from_dict(
        {
            "architecture": architecture,
            "num_classes": len(class_names),
            "class_names": class_names,
            "input_size": input_size,
            "mean": mean,
            "std": std,
        }
    )
    check_refused_name(filename)
    suffix = Path(filename).suffix.lower()
    if suffix not in (".pt", ".pth", ".safetensors"):
        raise UserError(
            f"{filename}: weights must be a .pt, .pth or .safetensors file", "weights_suffix", name=filename
        )
    weights = f"weights{suffix}"
    files = {weights: raw, BUNDLE_META: json.dumps(meta.to_dict()).encode()}
    return _register_staged(store, files, filename, weights, actor)


def upload_eval_zip(store: Store, project_id: int, raw: ZipSource, filename: str, actor: User) -> int:
    """Attach a labelled evaluation set (zip: its bytes, or better the uploaded file itself, which is
    then read in chunks) to a project and evaluate the active model on it."""
    summary = project_summary(store, project_id)
    if not summary["active_model"]:
        raise UserError("upload a model first, then its evaluation set", "eval_needs_model")
    require(store, actor, "curator", "upload", project_id)
    staging = store.artifact_dir("incoming") / f"eval_{source_sha256(raw)[:16]}"
    try:
        if staging.exists():
            shutil.rmtree(staging)
        # Only the files the manifest lists are unpacked; the store keeps a copy of them.
        ds = dataset_from_zip_bytes(
            raw,
            filename,
            summary["class_names"],
            staging,
            before_extract=lambda size: check_budget(store, 2 * size, filename),
        )
        did = register_eval(store, project_id, ds.root, filename, ds, actor, copy=True)
    except OSError as exc:
        raise store.os_failure(exc, UserError(f"{filename} cannot be saved ({exc.strerror or exc})")) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a refused upload leaves nothing behind
    evaluate_active(store, project_id, actor)
    return did


def upload_pool_zip(store: Store, project_id: int, raw: ZipSource, filename: str, actor: User) -> int:
    """Attach a pool of candidate images (a zip of PNG/JPEG; an optional manifest.csv may give each
    image an ``attribute``; labels in it are ignored). Every image is checked before saving."""
    return _upload_images_zip(store, project_id, raw, filename, actor, "pool")


def upload_reference_zip(store: Store, project_id: int, raw: ZipSource, filename: str, actor: User) -> int:
    """Attach reference images: typical images as the model meets them in use, without labels (same
    zip format as a pool). The repair keeps the old model's answers on them (the function-space
    anchor) and estimates kept decisions from them; they are never part of the reported numbers."""
    return _upload_images_zip(store, project_id, raw, filename, actor, "reference")


def _upload_images_zip(store: Store, project_id: int, raw: ZipSource, filename: str, actor: User, role: str) -> int:
    """Members are unpacked one at a time, in chunks, from the upload straight to a staging folder,
    and each image is checked from disk: memory holds one chunk and one image, not the whole zip's
    contents."""
    require(store, actor, "curator", "upload", project_id)
    with ZipReader(raw, filename) as zf:
        members = list(zf.members)
        attrs: dict[str, str] = {}
        manifests = [m for m in members if m.rsplit("/", 1)[-1] == "manifest.csv"]
        if manifests:
            prefix = manifests[0][: -len("manifest.csv")]
            text = zf.read(manifests[0], MAX_MANIFEST_BYTES).decode("utf-8-sig", errors="replace")
            try:
                for r in csv.DictReader(io.StringIO(text)):
                    r.pop(None, None)  # fields beyond the header
                    attrs[prefix + (r.get("path") or "").strip()] = (r.get("attribute") or "").strip()
            except csv.Error as exc:
                raise UserError(
                    f"{filename}: manifest.csv cannot be read as CSV ({exc})", "manifest_csv", name=filename
                ) from None
        images = [m for m in members if Path(m).suffix.lower() in IMAGE_SUFFIXES]
        others = [m for m in members if m not in images and not m.endswith(("manifest.csv", ".txt", ".md"))]
        if others:
            raise UserError(
                f"{filename} holds files that are not PNG/JPEG images: {', '.join(others[:5])}",
                "not_images",
                name=filename,
                files=", ".join(others[:5]),
            )
        if not images:
            raise UserError(f"{filename} holds no PNG or JPEG images", "no_images", name=filename)
        if len(images) > max_images():
            raise UserError(
                f"{filename} holds {len(images)} images, more than the limit of {max_images()} (BIASREPAIR_MAX_IMAGES)"
            )
        # Staged, then copied into the store: both count until the staging folder is removed.
        check_budget(store, 2 * zf.declared(images, MAX_POOL_ZIP_BYTES), filename)
        dest = store.artifact_dir("incoming") / f"{role}_{source_sha256(raw)[:16]}"
        try:
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            zf.extract(images, dest, MAX_POOL_ZIP_BYTES)
            for m in images:
                open_image(dest / m, m).close()
            items = [{"path": m, "attribute": attrs.get(m, "")} for m in sorted(images)]
            return register_pool(store, project_id, dest, filename, items, actor, copy=True, role=role)
        except OSError as exc:
            reason = str(exc.strerror or exc)
            unpack = UserError(
                f"{filename} cannot be unpacked ({reason})", "cannot_unpack", name=filename, reason=reason
            )
            raise store.os_failure(exc, unpack) from None
        finally:
            shutil.rmtree(dest, ignore_errors=True)


def upload_single_images(
    store: Store, project_id: int, files: list[tuple[str, bytes]], attribute: str, actor: str
) -> int:
    """Add single images to the project's 'my uploads' pool. All are checked first; none is saved if
    one is bad. Returns how many were added."""
    require(store, actor, "curator", "upload", project_id)
    if not files:
        return 0
    for name, data in files:
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"{name} is not a .png/.jpg/.jpeg file", "image_suffix", name=name)
        open_image(data, name)
    existing = store.datasets(project_id, "uploads")
    have = existing[0]["n_items"] if existing else 0
    if have + len(files) > max_images():
        raise UserError(
            f"'my uploads' would hold {have + len(files)} images, more than the limit of {max_images()} "
            "(BIASREPAIR_MAX_IMAGES)"
        )
    what = files[0][0] if len(files) == 1 else f"{len(files)} images"
    check_budget(store, sum(len(d) for _, d in files), what)
    if existing:
        did = existing[0]["id"]
        root = Path(existing[0]["path"])
        if not existing[0]["path"] or not store.inside_home(root) or root.resolve() == store.home.resolve():
            # A row left by an older version (path "." after a failed first upload): re-point it into
            # the store, never write where it points.
            root = store.artifact_dir("datasets", str(did))
            store.set_dataset_path(did, root)
    else:
        did, root = store.add_artifact_dataset(project_id, "uploads", "my uploads")
    if not store.inside_home(root):
        raise UserError("the uploads folder is outside the workbench's store; refused")
    items = read_items(items_file(store, did))
    added = []
    for name, data in files:
        digest = sha256_bytes(data)
        rel = f"images/{digest[:16]}{Path(name).suffix.lower()}"
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        if rel not in {i["path"] for i in items}:
            items.append({"path": rel, "attribute": attribute.strip()})
        added.append({"name": name, "sha256": digest})
    write_items(store, did, items)
    store.set_dataset_size(did, len(items), tree_sha256(root, cache=False))
    store.audit(actor, "upload_images", project_id, dataset_id=did, files=added)
    return len(added)
