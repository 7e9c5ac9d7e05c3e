"""Property-based fuzzing (hypothesis) of the parsers that read untrusted uploads: model.json, the
manifest and the zip reader. Whatever the input, each either returns a valid result or raises a
UserError whose message is one line; never another exception (docs/ARCHITECTURE.md, "Untrusted input")."""

from __future__ import annotations

import io
import json
import tempfile
import warnings
import zipfile
from pathlib import Path

from PIL import Image

from core.errors import UserError
from core.formats.datasets import ImageDataset, load_dataset
from core.formats.meta import META_KEYS, BundleMeta, parse_meta_json
from core.formats.zipsafety import read_zip_members
from tests.optional import need

need("hypothesis")  # skips this file where hypothesis is missing, except in CI

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# No per-example time limit (a shared CI machine is slow at times) and no example database on disk.
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
CLASSES = ["cat", "dog", "fox"]


def one_line_user_error(exc: UserError) -> None:
    """A refusal names its reason (the CLI prints it folded onto one line)."""
    assert isinstance(exc, UserError) and str(exc).strip()


# ---- model.json ------------------------------------------------------------------------------
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
meta_like = st.fixed_dictionaries(
    {},
    optional={
        "architecture": st.one_of(st.sampled_from(["small_cnn", "resnet18", "vit_b_16"]), json_value),
        "num_classes": st.one_of(st.integers(-2, 6), json_value),
        "class_names": st.one_of(st.lists(st.text(max_size=6), max_size=6), json_value),
        "input_size": st.one_of(st.lists(st.integers(-1, 2000), min_size=3, max_size=3), json_value),
        "mean": st.one_of(st.lists(st.floats(), max_size=3), json_value),
        "std": st.one_of(st.lists(st.floats(), max_size=3), json_value),
        "extra": json_value,
    },
)


def _check_meta(raw: bytes) -> None:
    try:
        meta = parse_meta_json(raw)
    except UserError as exc:
        one_line_user_error(exc)
        return
    assert isinstance(meta, BundleMeta) and set(meta.to_dict()) == set(META_KEYS)
    assert len(meta.class_names) == meta.num_classes and all(s > 0 for s in meta.std)


@FUZZ
@given(st.binary(max_size=300))
def test_meta_parser_on_any_bytes(raw):
    _check_meta(raw)


@FUZZ
@given(meta_like, st.sampled_from(["utf-8", "utf-16", "latin-1"]), st.integers(0, 3000))
def test_meta_parser_on_json_like_objects(obj, encoding, depth):
    text = json.dumps(obj, allow_nan=True, ensure_ascii=False)
    if depth > 2000:  # deep nesting wrapped around a value
        text = '{"a": ' * depth + text + "}" * depth
    try:
        raw = text.encode(encoding)
    except UnicodeEncodeError:
        raw = text.encode("utf-8")
    _check_meta(raw)


# ---- manifests ---------------------------------------------------------------------------------
def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
manifest_cell = st.one_of(
    st.sampled_from(["a.png", "./a.png", "sub/b.png", "../a.png", "/etc/passwd", "a.gif", "x" * 300 + ".png", ""]),
    st.sampled_from(["cat", "dog", "0", "2", "-1", "²", "٣", "99999999999999999999", " fox "]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
)
manifest_row = st.lists(manifest_cell, min_size=0, max_size=5)


@FUZZ
@given(
    st.lists(manifest_row, max_size=8),
    st.sampled_from([["path", "label"], ["path", "label", "attribute", "split"], ["label"], []]),
    st.sampled_from(["utf-8", "latin-1", "utf-16"]),
)
def test_manifest_parser(rows, header, encoding):
    text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    try:
        raw = text.encode(encoding)
    except UnicodeEncodeError:
        raw = text.encode("utf-8")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "a.png").write_bytes(PNG)
        (root / "sub").mkdir()
        (root / "sub" / "b.png").write_bytes(PNG)
        (root / "manifest.csv").write_bytes(raw)
        for keep in (False, True):
            try:
                ds = load_dataset(root, CLASSES, keep_good_rows=keep)
            except UserError as exc:
                one_line_user_error(exc)
                continue
            assert isinstance(ds, ImageDataset) and len(ds) >= 1
            paths = [r.path for r in ds.records]
            assert len({(root / p).resolve() for p in paths}) == len(paths)  # never an image twice
            assert all(0 <= r.label < len(CLASSES) for r in ds.records)


@FUZZ
@given(st.binary(min_size=1, max_size=400))
def test_manifest_parser_on_any_bytes(raw):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "a.png").write_bytes(PNG)
        (root / "manifest.csv").write_bytes(b"path,label\n" + raw)
        try:
            load_dataset(root, CLASSES, keep_good_rows=True)
        except UserError as exc:
            one_line_user_error(exc)


# ---- zips --------------------------------------------------------------------------------------
def _valid_zip(method: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        zf.writestr("manifest.csv", "path,label\na.png,cat\n" * 20)
        zf.writestr("a.png", PNG)
        zf.writestr("sub/", b"")
    return buf.getvalue()


VALID_ZIPS = [_valid_zip(zipfile.ZIP_STORED), _valid_zip(zipfile.ZIP_DEFLATED)]


def _check_zip(raw: bytes) -> None:
    try:
        members = read_zip_members(raw, "u.zip", max_total=1 << 20, max_files=50)
    except UserError as exc:
        one_line_user_error(exc)
        return
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in members.items())
    assert all(not k.startswith("/") and ".." not in k.split("/") and k not in ("", ".") for k in members)


@FUZZ
@given(st.binary(max_size=600))
def test_zip_reader_on_any_bytes(raw):
    _check_zip(raw)


@FUZZ
@given(
    st.sampled_from(VALID_ZIPS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_zip_reader_on_damaged_zips(base, flips):
    raw = bytearray(base)
    for pos, value in flips:
        raw[pos % len(raw)] = value
    _check_zip(bytes(raw))


@FUZZ
@given(
    st.lists(
        st.lists(st.sampled_from([*"ab./\\:", "..", "x" * 100, "é"]), max_size=6).map("".join),
        min_size=1,
        max_size=5,
    )
)
def test_zip_reader_on_hostile_names(names):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names this test wants
        for n in names:
            zf.writestr(n or "empty", b"data")
    _check_zip(buf.getvalue())
