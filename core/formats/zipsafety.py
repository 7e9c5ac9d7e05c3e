"""Reading untrusted zip files safely.

Every member name is checked before anything is read: absolute paths, drive letters, ``..``
components and symlinks are refused, and both the number of members and their total
uncompressed size are capped (checked against the header *and* while decompressing, since a
header can lie). A zip bomb or a path-traversal member raises :class:`UserError` naming it.
"""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import PurePosixPath

from core.errors import UserError

DEFAULT_MAX_TOTAL = 512 * 1024 * 1024
DEFAULT_MAX_FILES = 50_000


def check_member_name(name: str, archive: str) -> str:
    """Return a normalised relative POSIX path, or raise if the name could escape the target."""
    if "\\" in name:
        name = name.replace("\\", "/")
    p = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"{archive} contains an absolute path {name!r}; refused")
    if any(part == ".." for part in p.parts):
        raise UserError(f"{archive} contains a path that climbs out of the archive: {name!r}; refused")
    return str(p)


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
    except zipfile.BadZipFile:
        raise UserError(f"{archive} is not a valid zip file") from None
    infos = zf.infolist()
    if len(infos) > max_files:
        raise UserError(f"{archive} has {len(infos)} entries, more than the limit of {max_files}")
    declared = sum(i.file_size for i in infos)
    if declared > max_total:
        raise UserError(
            f"{archive} would unpack to {declared / 2**20:.1f} MB, more than the {max_total / 2**20:.0f} MB limit"
        )
    out: dict[str, bytes] = {}
    total = 0
    for info in infos:
        name = check_member_name(info.filename, archive)
        if info.is_dir() or name.startswith("__MACOSX/") or name.endswith(".DS_Store"):
            continue
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise UserError(f"{archive} contains a symbolic link {name!r}; refused")
        with zf.open(info) as fh:
            data = fh.read(max_total - total + 1)
        total += len(data)
        if total > max_total:
            raise UserError(f"{archive} unpacks to more than the {max_total / 2**20:.0f} MB limit; refused")
        out[name] = data
    return out
