"""A zip's central directory may lie about a member's size: the unpacker counts the bytes that really come
out, refuses past the cap, and refuses a member whose real size is not the declared one, naming it. Python's
zipfile alone cuts a member at its declared size, or ends it short, and says nothing when the CRC is made to fit."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import pytest
from PIL import Image

from core.app.i18n import error_text
from core.errors import UserError
from core.formats.datasets import dataset_from_zip_bytes
from core.formats.zipsafety import ZipReader, read_zip_members
from tests.conftest import TINY_CLASSES
from tests.wb_helpers import make_zip

CRC, COMPRESSED, UNCOMPRESSED = 16, 20, 24  # offsets in a central-directory header


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), (255, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _zip(files: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    return make_zip(files, method)


def _lie(raw: bytes, size: int, crc: int) -> bytes:
    """The first member's central-directory header made to declare ``size`` bytes with checksum ``crc``."""
    out = bytearray(raw)
    c = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", out, c + UNCOMPRESSED, size)
    struct.pack_into("<I", out, c + CRC, crc)
    return bytes(out)


MANIFEST = b"path,label\n" + b"".join(f"img{i}.png,cat\n".encode() for i in range(200)) + b"a.png,cat\n"


def _shrunk(method=zipfile.ZIP_DEFLATED) -> bytes:
    """manifest.csv declared as its first 11 bytes ("path,label\\n"), the CRC made to fit them: zipfile alone
    hands back those 11 bytes, a one-row-less manifest, without a word."""
    return _lie(_zip({"manifest.csv": MANIFEST, "a.png": _png()}, method), 11, zlib.crc32(MANIFEST[:11]))


def _grown(method=zipfile.ZIP_STORED) -> bytes:
    """manifest.csv declared 1,000 bytes larger than it is (its CRC true)."""
    return _lie(_zip({"manifest.csv": MANIFEST, "a.png": _png()}, method), len(MANIFEST) + 1000, zlib.crc32(MANIFEST))


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_member_holding_more_than_its_header_says_is_refused_naming_it(method):
    with pytest.raises(UserError, match=r"d\.zip: 'manifest\.csv' is damaged: its header says it unpacks to 11 bytes, "
                                        r"but it holds more") as caught:  # fmt: skip
        read_zip_members(_shrunk(method), "d.zip")
    assert caught.value.key == "zip_size_lies_more"
    assert "manifest.csv" in error_text(caught.value, "ja") and "11" in error_text(caught.value, "ja")
    with ZipReader(_shrunk(method), "d.zip") as zf, pytest.raises(UserError, match="holds more"):
        zf.read("manifest.csv", 1 << 20)


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_member_holding_less_than_its_header_says_is_refused_with_both_sizes(method):
    declared = len(MANIFEST) + 1000
    with pytest.raises(UserError, match=f"says it unpacks to {declared} bytes, but it unpacks to {len(MANIFEST)} "):
        read_zip_members(_grown(method), "d.zip")


def test_a_lying_dataset_zip_is_refused_and_leaves_nothing(tmp_path):
    for raw in (_shrunk(), _grown()):
        target = tmp_path / "x"
        with pytest.raises(UserError, match="'manifest.csv' is damaged: its header says"):
            dataset_from_zip_bytes(raw, "d.zip", TINY_CLASSES, target)
        assert not target.exists() or not any(p.is_file() and p.stat().st_size for p in target.rglob("*"))


def test_unpacking_counts_real_bytes_and_stops_once_they_pass_the_declared_size(tmp_path):
    """A member declared 100 bytes that inflates to 1 MB, against a 4 KB cap: refused once the real bytes pass
    the declared size, long before the cap or the whole megabyte is written."""
    big = b"\0" * (1 << 20)
    raw = _lie(_zip({"big.bin": big}), 100, zlib.crc32(big[:100]))
    with ZipReader(raw, "p.zip") as zf, pytest.raises(UserError, match="'big.bin' is damaged"):
        zf.extract(["big.bin"], tmp_path, 4096)
    assert (tmp_path / "big.bin").stat().st_size <= 100


def test_an_honest_member_past_what_the_cap_leaves_is_refused_as_too_big(tmp_path):
    with ZipReader(_zip({"a.bin": b"a" * 3000, "b.bin": b"b" * 3000}), "p.zip") as zf:
        with pytest.raises(UserError, match="more than the .* limit") as caught:
            zf.extract(["a.bin", "b.bin"], tmp_path, 3000 + 1000)  # declared 6000: refused before unpacking
    assert caught.value.key == "zip_too_big"
    with ZipReader(_zip({"a.bin": b"a" * 3000}), "p.zip") as zf:
        assert zf.extract(["a.bin"], tmp_path, 3000) == 3000  # exactly the cap is allowed
        assert (tmp_path / "a.bin").read_bytes() == b"a" * 3000


def test_a_member_whose_checksum_is_wrong_is_still_refused_as_damaged():
    raw = _lie(_zip({"manifest.csv": MANIFEST}), len(MANIFEST), zlib.crc32(MANIFEST) ^ 1)
    with pytest.raises(UserError, match=r"'manifest.csv' is damaged and cannot be unpacked \(Bad CRC-32"):
        read_zip_members(raw, "d.zip")
