"""Reading untrusted zip files safely.

Every member name is checked before anything is read: absolute paths, drive letters, ``..``
components and symlinks are refused, and both the number of members and their total
uncompressed size are capped (checked against the header *and* while decompressing, since a
header can lie). A zip bomb or a path-traversal member raises :class:`UserError` naming it.
"""

from __future__ import annotations

import io
import lzma
import stat
import struct
import zipfile
import zlib
from pathlib import PurePosixPath

from core.errors import UserError

DEFAULT_MAX_TOTAL = 512 * 1024 * 1024
DEFAULT_MAX_FILES = 50_000
MAX_NAME_PART_BYTES = 255  # longest file or folder name common file systems allow
MAX_NAME_BYTES = 1024  # longest member path accepted
SUPPORTED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
# What a damaged member raises while it is decompressed and checked.
_CORRUPT = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    struct.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,  # e.g. "negative seek value" for a header offset that points before the file
)


def check_member_name(name: str, archive: str) -> str:
    """Return a normalised relative POSIX path, or raise if the name could escape the target."""
    if "\\" in name:
        name = name.replace("\\", "/")
    p = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UserError(
            f"{archive} contains an absolute path {name!r}; refused", "zip_absolute", archive=archive, name=name
        )
    if any(part == ".." for part in p.parts):
        raise UserError(
            f"{archive} contains a path that climbs out of the archive: {name!r}; refused",
            "zip_climbs",
            archive=archive,
            name=name,
        )
    if "\x00" in name or str(p) in ("", "."):
        raise UserError(
            f"{archive} contains a member with no usable name ({name!r}); refused", "zip_no_name", archive=archive
        )
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise UserError(
            f"{archive} contains a member path longer than {MAX_NAME_BYTES} bytes; refused",
            "zip_long_path",
            archive=archive,
            limit=MAX_NAME_BYTES,
        )
    long = next((part for part in p.parts if len(part.encode("utf-8")) > MAX_NAME_PART_BYTES), None)
    if long is not None:
        raise UserError(
            f"{archive} contains a name longer than {MAX_NAME_PART_BYTES} bytes ({long[:40]!r}…); "
            "no file system can store it; refused",
            "zip_long_name",
            archive=archive,
            limit=MAX_NAME_PART_BYTES,
            name=long[:40],
        )
    return str(p)


def _check_layout(names: list[str], archive: str) -> None:
    """Refuse a zip that names the same file twice, or a file and a folder alike (``a`` and ``a/b``)."""
    seen: set[str] = set()
    folders: set[str] = set()
    for name in names:
        if name in seen:
            raise UserError(
                f"{archive} holds {name!r} more than once; refused", "zip_twice", archive=archive, name=name
            )
        seen.add(name)
        parts = name.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = sorted(seen & folders)
    if clash:
        raise UserError(
            f"{archive} holds both a file and a folder named {clash[0]!r}; refused",
            "zip_file_and_folder",
            archive=archive,
            name=clash[0],
        )


def read_zip_members(
    raw: bytes,
    archive: str,
    *,
    max_total: int = DEFAULT_MAX_TOTAL,
    max_files: int = DEFAULT_MAX_FILES,
) -> dict[str, bytes]:
    """Read all regular files of a zip into memory, enforcing the limits above.

    Directory entries and macOS resource forks (``__MACOSX/``) are skipped; they carry no data.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
    except (zipfile.BadZipFile, struct.error, ValueError, OSError, EOFError, NotImplementedError, RuntimeError):
        raise UserError(f"{archive} is not a valid zip file", "zip_invalid", archive=archive) from None
    infos = zf.infolist()
    if len(infos) > max_files:
        raise UserError(
            f"{archive} has {len(infos)} entries, more than the limit of {max_files}",
            "zip_too_many",
            archive=archive,
            n=len(infos),
            limit=max_files,
        )
    declared = sum(i.file_size for i in infos)
    if declared > max_total:
        raise UserError(
            f"{archive} would unpack to {declared / 2**20:.1f} MB, more than the {max_total / 2**20:.0f} MB limit",
            "zip_too_big",
            archive=archive,
            mb=f"{declared / 2**20:.1f}",
            limit=f"{max_total / 2**20:.0f}",
        )
    out: dict[str, bytes] = {}
    total = 0
    wanted = []
    for info in infos:
        name = check_member_name(info.filename, archive)
        if info.is_dir() or name.startswith("__MACOSX/") or name.endswith(".DS_Store"):
            continue
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UserError(
                f"{archive} contains a symbolic link {name!r}; refused", "zip_symlink", archive=archive, name=name
            )
        if info.flag_bits & 0x1:
            raise UserError(
                f"{archive}: {name!r} is encrypted; upload an unencrypted zip",
                "zip_encrypted",
                archive=archive,
                name=name,
            )
        if info.compress_type not in SUPPORTED_METHODS:
            raise UserError(
                f"{archive}: {name!r} uses compression method {info.compress_type}, which is not supported; "
                "use ordinary deflate (the default of every zip tool)",
                "zip_method",
                archive=archive,
                name=name,
                method=info.compress_type,
            )
        wanted.append((name, info))
    _check_layout([n for n, _ in wanted], archive)
    for name, info in wanted:
        try:
            with zf.open(info) as fh:
                data = fh.read(max_total - total + 1)
        except _CORRUPT as exc:
            detail = " ".join(str(exc).split())[:120]
            raise UserError(
                f"{archive}: {name!r} is damaged and cannot be unpacked ({detail}); refused",
                "zip_damaged",
                archive=archive,
                name=name,
            ) from None
        total += len(data)
        if total > max_total:
            raise UserError(
                f"{archive} unpacks to more than the {max_total / 2**20:.0f} MB limit; refused",
                "zip_too_big_unpacked",
                archive=archive,
                limit=f"{max_total / 2**20:.0f}",
            )
        out[name] = data
    return out
