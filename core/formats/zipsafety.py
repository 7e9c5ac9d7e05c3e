"""Reading untrusted zip files safely.

Every member name is checked before anything is read: absolute paths, drive letters, ``..``
components and symlinks are refused, and both the number of members and their total
uncompressed size are capped (checked against the header *and* while decompressing, since a
header can lie: the bytes that really come out are counted, and a member whose real size is not
the declared one is refused). A zip bomb or a path-traversal member raises :class:`UserError` naming it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import lzma
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.errors import UserError, is_disk_full

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


ZipSource = bytes | Path | BinaryIO  # a zip in memory, a file, or an open binary file (e.g. an upload)


def source_sha256(source: ZipSource) -> str:
    """SHA-256 of a zip as uploaded, read in chunks (never a second copy in memory)."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    h = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        fh = stack.enter_context(open(source, "rb")) if isinstance(source, (str, Path)) else source
        fh.seek(0)
        while chunk := fh.read(1 << 16):
            h.update(chunk)
    return h.hexdigest()


def _open_zip(source: ZipSource, archive: str) -> zipfile.ZipFile:
    if not isinstance(source, (bytes, str, Path)):
        source.seek(0)  # an open file is read from its start, however often it is opened
    try:
        return zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, struct.error, ValueError, OSError, EOFError, NotImplementedError, RuntimeError):
        raise UserError(f"{archive} is not a valid zip file", "zip_invalid", archive=archive) from None


def _regular_members(zf: zipfile.ZipFile, archive: str, max_files: int) -> dict[str, zipfile.ZipInfo]:
    """Every regular file of the zip by its checked name; anything that could not be unpacked safely
    (a bad name, a link, encryption, an odd compression method, a name clash) is refused here."""
    infos = zf.infolist()
    if len(infos) > max_files:
        raise UserError(
            f"{archive} has {len(infos)} entries, more than the limit of {max_files}",
            "zip_too_many",
            archive=archive,
            n=len(infos),
            limit=max_files,
        )
    wanted: list[tuple[str, zipfile.ZipInfo]] = []
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
    return dict(wanted)


def _check_declared(infos, archive: str, max_total: int) -> None:
    """Refuse before reading anything when the headers already say the members are too big."""
    declared = sum(i.file_size for i in infos)
    if declared > max_total:
        raise UserError(
            f"{archive} would unpack to {declared / 2**20:.1f} MB, more than the {max_total / 2**20:.0f} MB limit",
            "zip_too_big",
            archive=archive,
            mb=f"{declared / 2**20:.1f}",
            limit=f"{max_total / 2**20:.0f}",
        )


def _damaged(archive: str, name: str, exc: BaseException) -> UserError:
    detail = " ".join(str(exc).split())[:120]
    return UserError(
        f"{archive}: {name!r} is damaged and cannot be unpacked ({detail}); refused",
        "zip_damaged",
        archive=archive,
        name=name,
    )


CHUNK = 1 << 20


def _size_lies(archive: str, name: str, declared: int, real: int | None) -> UserError:
    """A member whose bytes are not what its header says: ``real`` is None when there were more."""
    if real is None:
        return UserError(
            f"{archive}: {name!r} is damaged: its header says it unpacks to {declared} bytes, but it holds more; "
            "refused",
            "zip_size_lies_more",
            archive=archive,
            name=name,
            declared=declared,
        )
    return UserError(
        f"{archive}: {name!r} is damaged: its header says it unpacks to {declared} bytes, but it unpacks to "
        f"{real} bytes; refused",
        "zip_size_lies",
        archive=archive,
        name=name,
        declared=declared,
        real=real,
    )


def _member_chunks(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: str, name: str, room: int, limit: int
) -> Iterator[bytes]:
    """One member's bytes as they really unpack, in chunks, counted as they come: refused past ``room`` (what
    ``limit`` leaves for it) and unless they come to exactly the size its header declares. zipfile itself would
    trust the header: cut the member at its declared size, or end it short, without a word."""
    probe = copy.copy(info)
    probe.file_size = max(room, info.file_size) + 1  # zipfile stops at file_size: let it read past a lie
    # zipfile checks the CRC as the last bytes arrive, before they could be counted; a lie about the size
    # (with a CRC made to fit what the header declares) would then read as a bad checksum. The CRC is checked
    # here instead, after the size.
    del probe.CRC
    got, crc = 0, 0
    try:
        with zf.open(probe) as fh:
            while chunk := fh.read(CHUNK):
                got += len(chunk)
                crc = zlib.crc32(chunk, crc)
                if got > info.file_size:
                    raise _size_lies(archive, name, info.file_size, None)
                if got > room:  # not reached while the declared sizes fit the cap: a backstop
                    raise UserError(
                        f"{archive} unpacks to more than the {limit / 2**20:.0f} MB limit ({name!r} alone "
                        f"passes what is left of it); refused",
                        "zip_too_big_unpacked",
                        archive=archive,
                        limit=f"{limit / 2**20:.0f}",
                    )
                yield chunk
    except UserError:
        raise
    except _CORRUPT as exc:
        raise _damaged(archive, name, exc) from None
    if got != info.file_size:
        raise _size_lies(archive, name, info.file_size, got)
    if crc != info.CRC:
        raise _damaged(archive, name, zipfile.BadZipFile(f"Bad CRC-32 for file {name!r}"))


def zip_names(raw: bytes | Path, archive: str) -> list[str]:
    """The member names of a zip's central directory, nothing decompressed; for telling what kind of
    upload it is before the limits of the kind it was uploaded as are applied."""
    with _open_zip(raw, archive) as zf:
        return zf.namelist()


def read_zip_members(
    raw: ZipSource,
    archive: str,
    *,
    max_total: int = DEFAULT_MAX_TOTAL,
    max_files: int = DEFAULT_MAX_FILES,
) -> dict[str, bytes]:
    """Read all regular files of a zip into memory, enforcing the limits above.

    Directory entries and macOS resource forks (``__MACOSX/``) are skipped; they carry no data.
    """
    with _open_zip(raw, archive) as zf:
        wanted = _regular_members(zf, archive, max_files)
        _check_declared(wanted.values(), archive, max_total)
        out: dict[str, bytes] = {}
        total = 0
        for name, info in wanted.items():
            data = b"".join(_member_chunks(zf, info, archive, name, max_total - total, max_total))
            total += len(data)
            out[name] = data
        return out


class ZipReader:
    """An open, checked zip whose members are read or unpacked one at a time, on demand.

    Every member name is checked when it is opened (see :func:`read_zip_members`), but nothing is
    decompressed until asked for, and only the members asked for: a dataset unpacks the files its
    manifest lists, so an unlisted member costs nothing however large it claims to be. Use it as a
    context manager."""

    def __init__(self, source: ZipSource, archive: str, *, max_files: int = DEFAULT_MAX_FILES):
        self.archive = archive
        self._zf = _open_zip(source, archive)
        try:
            self.members = _regular_members(self._zf, archive, max_files)
        except BaseException:
            self._zf.close()
            raise

    def __enter__(self) -> ZipReader:
        return self

    def __exit__(self, *exc) -> None:
        self._zf.close()

    def declared(self, names: list[str], max_total: int) -> int:
        """What the named members' headers say they unpack to, in bytes; refused above ``max_total``."""
        infos = [self.members[n] for n in names]
        _check_declared(infos, self.archive, max_total)
        return sum(i.file_size for i in infos)

    def read(self, name: str, max_bytes: int) -> bytes:
        """One member into memory, refused if it is (or, despite its header, unpacks to) more than ``max_bytes``."""
        info = self.members[name]
        if info.file_size > max_bytes:
            raise UserError(f"{self.archive}: {name!r} is larger than {max_bytes // 1024} KB; refused")
        try:
            return b"".join(_member_chunks(self._zf, info, self.archive, name, max_bytes, max_bytes))
        except UserError as exc:
            if exc.key == "zip_too_big_unpacked":
                raise UserError(f"{self.archive}: {name!r} is larger than {max_bytes // 1024} KB; refused") from None
            raise

    def extract(self, names: list[str], dest: Path, max_total: int) -> int:
        """Unpack the named members under ``dest`` in chunks (never a whole member in memory); their
        declared sizes are checked against ``max_total`` first, and the bytes actually written while
        unpacking, since a header can lie. Returns the number of bytes written."""
        infos = [self.members[n] for n in names]
        _check_declared(infos, self.archive, max_total)
        total = 0
        for name, info in zip(names, infos, strict=True):
            target = dest / name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                out = open(target, "wb")  # noqa: SIM115 - closed below, also on error
            except OSError as exc:
                _raise_if_disk_full(exc)
                raise UserError(
                    f"{self.archive}: {name[:60]!r} cannot be unpacked ({exc.strerror or exc}); refused"
                ) from None
            try:
                with out:
                    for chunk in _member_chunks(self._zf, info, self.archive, name, max_total - total, max_total):
                        out.write(chunk)
                        total += len(chunk)
            except OSError as exc:  # writing: the disk, not the zip
                _raise_if_disk_full(exc)
                raise UserError(
                    f"{self.archive}: {name[:60]!r} cannot be unpacked ({exc.strerror or exc}); refused"
                ) from None
        return total


def _raise_if_disk_full(exc: OSError) -> None:
    """A full disk (or quota) is not the zip's fault: it goes up as it is, for the caller to say so with the
    folder that is full (``Store.os_failure``)."""
    if is_disk_full(exc):
        raise exc
