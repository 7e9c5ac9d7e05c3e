"""``manifest.csv``: a dataset's list of images, read row by row with a reason for every row refused, and written.

Columns ``path,label[,attribute][,split]``; ``path`` is relative to the manifest and ``label`` is a class
name or a class index (docs/DESIGN.md §5). :mod:`core.formats.datasets` builds datasets from what
:func:`read_manifest` returns; the workbench asks :func:`has_reported_attributes` whether an evaluation set
names groups, and writes new versions of one with :func:`write_manifest`. No torch.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import UserError
from core.formats.zipsafety import MAX_NAME_PART_BYTES

MANIFEST = "manifest.csv"
COLUMNS = ["path", "label", "attribute", "split"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_PATH_BYTES = 1024  # longest manifest path accepted
MAX_MANIFEST_BYTES = 64 * 1024 * 1024  # ~100,000 rows with long paths and attributes fit in a few MB


@dataclass(frozen=True)
class Record:
    """One image of a dataset. ``path`` is relative to the dataset root; ``label`` a class index."""

    path: str
    label: int
    attribute: str | None = None
    split: str | None = None


def short(text: str, n: int = 60) -> str:
    """A user's string cut to ``n`` characters for an error message."""
    return text if len(text) <= n else text[:n] + "…"


def parse_label(raw: str, class_names: list[str]) -> int:
    """A class index from a class name or an index written as plain ASCII digits."""
    raw = raw.strip()
    if raw in class_names:
        return class_names.index(raw)
    digits = raw[1:] if raw.startswith("-") else raw
    if digits.isascii() and digits.isdigit() and len(digits) < 10:  # "²" or "٣" are digits, but not indices
        idx = int(raw)
        if 0 <= idx < len(class_names):
            return idx
    raise UserError(f"unknown label {short(raw)!r} (classes: {short(', '.join(class_names), 200)})")


def check_rel_path(rel: str) -> None:
    """Refuse a manifest path no file system could hold, before it reaches the file system."""
    if "\x00" in rel:
        raise UserError("path contains a NUL character")
    if len(rel.encode("utf-8")) > MAX_PATH_BYTES:
        raise UserError(f"path is longer than {MAX_PATH_BYTES} bytes")
    if any(len(part.encode("utf-8")) > MAX_NAME_PART_BYTES for part in Path(rel).parts):
        raise UserError(f"a file or folder name in the path is longer than {MAX_NAME_PART_BYTES} bytes")


def manifest_text(root: Path) -> str:
    try:
        return (root / MANIFEST).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"manifest.csv is not UTF-8 text (byte {exc.start}); save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)",
            "manifest_utf8",
        ) from None
    except OSError as exc:
        raise UserError(f"manifest.csv cannot be read: {exc.strerror or exc}") from None


def _reader(root: Path) -> csv.DictReader:
    """A reader of the manifest whose header has at least ``path`` and ``label``."""
    reader = csv.DictReader(io.StringIO(manifest_text(root)))
    try:
        fieldnames = reader.fieldnames or []
    except csv.Error as exc:
        raise UserError(f"manifest.csv line 1 cannot be read as CSV ({exc})", "manifest_header") from None
    cols = [c.strip() for c in fieldnames]
    if "path" not in cols or "label" not in cols:
        raise UserError(
            f"manifest.csv needs columns path,label; it has: {short(', '.join(cols), 200) or 'none'}",
            "manifest_columns",
            columns=short(", ".join(cols), 200) or "–",
        )
    return reader


def _rows(reader: csv.DictReader) -> Iterator[tuple[int, dict, list | None]]:
    """(line number, row with trimmed keys and values, fields beyond the header) for each row."""
    rows = iter(reader)
    while True:
        try:
            raw_row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field longer than the csv module's limit
            raise UserError(f"manifest.csv line {reader.line_num + 1} cannot be read as CSV ({exc})") from None
        extra = raw_row.pop(None, None)  # DictReader keeps fields beyond the header under None
        yield reader.line_num, {(k or "").strip(): (v or "").strip() for k, v in raw_row.items()}, extra


def _image_file(root: Path, root_resolved: Path, rel: str, extra: list | None) -> Path:
    """The image file a row's path names, or a UserError saying why the row cannot be used."""
    if extra:
        raise UserError(f"{len(extra)} more field(s) than the header has columns")
    if not rel:
        raise UserError("empty path")
    check_rel_path(rel)
    if Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError("not a .png/.jpg/.jpeg file")
    try:
        target = (root / rel).resolve()
        if root_resolved not in target.parents:
            raise UserError("path points outside the dataset")
        if not target.is_file():
            raise UserError("image file is missing")
    except OSError as exc:
        raise UserError(f"path cannot be used ({exc.strerror or exc.__class__.__name__})") from None
    return target


def read_manifest(root: Path, class_names: list[str]) -> tuple[list[Record], list[str]]:
    """The usable rows of ``root/manifest.csv`` as records, and every other row with its reason."""
    records: list[Record] = []
    rejected: list[str] = []
    root_resolved = root.resolve()
    seen: dict[Path, int] = {}
    for line_no, row, extra in _rows(_reader(root)):
        rel = row.get("path", "")
        try:
            target = _image_file(root, root_resolved, rel, extra)
            label = parse_label(row.get("label", ""), class_names)
            if target in seen:
                raise UserError(f"the same image as line {seen[target]}; each image may be listed once")
        except UserError as exc:
            rejected.append(f"manifest.csv line {line_no} ({short(rel) or 'no path'}): {exc}")
            continue
        seen[target] = line_no
        records.append(
            Record(
                path=Path(rel).as_posix(),
                label=label,
                attribute=row.get("attribute") or None,
                split=row.get("split") or None,
            )
        )
    return records, rejected


def listed_paths(manifest: bytes, prefix: str) -> set[str]:
    """The member names a manifest's ``path`` column points at; rows that cannot be read are left
    to :func:`read_manifest`, which reports each with its reason."""
    out: set[str] = set()
    text = manifest.decode("utf-8-sig", errors="replace")
    with contextlib.suppress(csv.Error):
        reader = csv.DictReader(io.StringIO(text))
        key = next((c for c in (reader.fieldnames or []) if c and c.strip() == "path"), None)
        if key is None:
            return out
        for row in reader:
            rel = (row.get(key) or "").strip()
            if rel and "\x00" not in rel:
                out.add(str(PurePosixPath(prefix + rel)))
    return out


def write_manifest(folder: Path, rows: list[dict], columns: list[str]) -> Path:
    """Write ``folder/manifest.csv`` with ``columns``, one line per row dict (labels as class names)."""
    path = Path(folder) / MANIFEST
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return path


def has_reported_attributes(root: Path) -> bool:
    """Whether any reported row (not ``split=val``) of ``root/manifest.csv`` names an attribute. Reads the
    text only (no image is opened; no manifest, as in a folder per class: False), so it is cheap."""
    manifest = Path(root) / MANIFEST
    if not manifest.is_file():
        return False
    with open(manifest, encoding="utf-8-sig", newline="") as fh:
        for raw in csv.DictReader(fh):
            row = {(k or "").strip(): v for k, v in raw.items()}
            if (row.get("attribute") or "").strip() and (row.get("split") or "").strip().lower() != "val":
                return True
    return False
