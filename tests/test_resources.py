"""Resources stay bounded (README "Limits"). A dataset zip unpacks only what its manifest lists, a model
description beyond the caps is refused before anything is built, evaluation streams from disk with
memory that does not grow with the set, the CLI and failed uploads leave no folders behind, and the
store's disk budget refuses an upload before it writes anything. Memory is measured as a ratio."""

from __future__ import annotations

import csv
import gc
import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import settings
from core.app import budget, compute, pool, uploads
from core.app.i18n import translator
from core.app.store import Store
from core.cli import main, progress_bar
from core.engine.group_features import embed
from core.engine.inference import DiskImages, evaluate_bundle, forward_batch, normalize, predict_logits
from core.engine.repair import run_repair
from core.errors import UserError
from core.formats.architectures import SmallCNN
from core.formats.bundle import BundleMeta, load_bundle, save_bundle
from core.formats.datasets import dataset_from_zip_bytes, load_dataset, load_pixels, write_manifest_dataset
from core.formats.limits import MAX_CLASSES
from core.formats.meta import parse_meta_json
from tests.conftest import TINY_CLASSES, TINY_META, make_images
from tests.wb_helpers import ALICE

GOOD_META = TINY_META
JUNK_BYTES = 64 * 2**20  # zeros: a 64 MB member that deflates to about 64 KB


def dataset_zip(folder: Path, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def files_under(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


# ---- zips unpack only what the dataset uses --------------------------------------------------
def test_unlisted_zip_member_is_never_unpacked(tiny_dataset_dir, tmp_path, monkeypatch):
    raw = dataset_zip(tiny_dataset_dir, {"notes/huge.bin": bytes(JUNK_BYTES)})
    assert len(raw) < 2**20  # small upload, huge member
    monkeypatch.setenv("BIASREPAIR_MAX_UNZIPPED_MB", "1")  # the unlisted member does not count
    target = tmp_path / "x"
    ds = dataset_from_zip_bytes(raw, "eval.zip", TINY_CLASSES, target)
    assert len(ds) == 12
    stored = files_under(target)
    assert "notes/huge.bin" not in stored
    assert set(stored) == {"manifest.csv", *(r.path for r in ds.records)}
    assert sum(stored.values()) < 2**20


def test_listed_member_over_the_limit_is_refused_before_anything_is_written(tiny_dataset_dir, tmp_path, monkeypatch):
    rows = list(csv.DictReader(io.StringIO((tiny_dataset_dir / "manifest.csv").read_text())))
    big = Image.fromarray(np.zeros((1200, 1200, 3), dtype=np.uint8))
    buf = io.BytesIO()
    big.save(buf, format="PNG", compress_level=0)  # stored uncompressed: ~4 MB
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows([*rows, {**rows[0], "path": "images/big.png"}])
    files = {f.relative_to(tiny_dataset_dir).as_posix(): f.read_bytes() for f in tiny_dataset_dir.rglob("*.png")}
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.csv", out.getvalue())
        for name, data in {**files, "images/big.png": buf.getvalue()}.items():
            zf.writestr(name, data)
    monkeypatch.setenv("BIASREPAIR_MAX_UNZIPPED_MB", "2")
    seen = []
    with pytest.raises(UserError, match="more than the 2 MB limit"):
        dataset_from_zip_bytes(zbuf.getvalue(), "eval.zip", TINY_CLASSES, tmp_path / "x", before_extract=seen.append)
    assert seen == []  # refused on the declared sizes, before the budget hook or any write
    assert not (tmp_path / "x").exists() or files_under(tmp_path / "x") == {}


def test_folder_per_class_zip_still_reports_stray_files(tmp_path):
    buf = io.BytesIO()
    img = io.BytesIO()
    Image.new("RGB", (12, 12)).save(img, format="PNG")
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cat/a.png", img.getvalue())
        zf.writestr("dog/b.png", img.getvalue())
        zf.writestr("dog/readme.txt", b"hello")
    with pytest.raises(UserError, match=r"readme.txt: not a \.png"):
        dataset_from_zip_bytes(buf.getvalue(), "f.zip", TINY_CLASSES, tmp_path / "x")
    ds = dataset_from_zip_bytes(buf.getvalue(), "f.zip", TINY_CLASSES, tmp_path / "y", keep_good_rows=True)
    assert sorted(r.path for r in ds.records) == ["cat/a.png", "dog/b.png"]


def test_images_per_upload_are_capped(tiny_dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("BIASREPAIR_MAX_IMAGES", "5")
    with pytest.raises(UserError, match="BIASREPAIR_MAX_IMAGES"):
        load_dataset(tiny_dataset_dir, TINY_CLASSES)
    with pytest.raises(UserError, match="BIASREPAIR_MAX_IMAGES"):
        dataset_from_zip_bytes(dataset_zip(tiny_dataset_dir), "eval.zip", TINY_CLASSES, tmp_path / "x")
    assert not (tmp_path / "x").exists() or files_under(tmp_path / "x") == {}


def test_pixels_per_image_are_capped(tiny_dataset_dir, monkeypatch):
    monkeypatch.setenv("BIASREPAIR_MAX_IMAGE_PIXELS", "100")  # the images are 12×12 = 144 pixels
    with pytest.raises(UserError, match="BIASREPAIR_MAX_IMAGE_PIXELS"):
        load_dataset(tiny_dataset_dir, TINY_CLASSES)


@pytest.mark.parametrize("raw", ["0", "-3", "lots", "1e9"])
def test_a_bad_setting_is_refused_naming_it(monkeypatch, raw):
    monkeypatch.setenv("BIASREPAIR_MAX_IMAGES", raw)
    with pytest.raises(UserError, match="BIASREPAIR_MAX_IMAGES"):
        settings.MAX_IMAGES.get()


# ---- declared model sizes are checked before anything is built -------------------------------
def test_a_million_classes_is_refused_before_the_names_are_even_read():
    meta = {**GOOD_META, "num_classes": 1_000_000, "class_names": ["a", "b"]}
    with pytest.raises(UserError, match=f"1000000 classes, more than the limit of {MAX_CLASSES}"):
        parse_meta_json(json.dumps(meta).encode())


def test_more_classes_than_the_cap_is_refused_even_when_all_are_named():
    names = [f"c{i}" for i in range(MAX_CLASSES + 1)]
    meta = {**GOOD_META, "num_classes": len(names), "class_names": names}
    with pytest.raises(UserError, match="more than the limit"):
        parse_meta_json(json.dumps(meta).encode())


@pytest.mark.parametrize("size", [[3, 2048, 16], [3, 1024, 1025], [3, 10**30, 1]])
def test_an_input_size_beyond_the_cap_is_refused(size):
    with pytest.raises(UserError, match="input_size .* larger than the limit"):
        parse_meta_json(json.dumps({**GOOD_META, "input_size": size}).encode())


# ---- evaluation streams from disk -------------------------------------------------------------
@pytest.fixture()
def wide_bundle(tmp_path):
    """A small model fed 96×96 images: a decoded image (27 KB) dwarfs what evaluation keeps per image."""
    meta = BundleMeta("small_cnn", 3, list(TINY_CLASSES), [3, 96, 96], [0.5] * 3, [0.25] * 3)
    torch.manual_seed(0)
    return load_bundle(save_bundle(SmallCNN(3, 3).state_dict(), meta, tmp_path / "wide"))


def _evaluate(bundle, ds):
    return evaluate_bundle(bundle, ds, device="cpu", min_group_count=1).predictions


def _features(bundle, ds):
    return embed(bundle, ds, "cpu")[0]  # what suspected groups are found from


def _peak(compute_on, bundle, folder: Path) -> int:
    """Peak traced memory (numpy and Python allocations) of ``compute_on(bundle, dataset)``."""
    ds = load_dataset(folder, TINY_CLASSES)
    tracemalloc.start()
    try:
        out = compute_on(bundle, ds)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(out) == len(ds)
    return peak


@pytest.mark.parametrize("compute_on", [_evaluate, _features], ids=["evaluate", "discover"])
def test_streaming_memory_does_not_grow_with_the_set(wide_bundle, tmp_path, monkeypatch, compute_on):
    monkeypatch.setenv("BIASREPAIR_EVAL_BATCH", "16")
    n = 64
    peaks = {}
    for count in (n, 4 * n):
        labels = [TINY_CLASSES[i % 3] for i in range(count)]
        folder = write_manifest_dataset(tmp_path / f"d{count}", make_images(count), labels, ["a"] * count)
        _peak(compute_on, wide_bundle, folder)  # warm-up: first-call caches are not the set's memory
        peaks[count] = _peak(compute_on, wide_bundle, folder)
    whole_set = 4 * n * 3 * 96 * 96  # the decoded uint8 pixels of the larger set, held at once
    assert peaks[4 * n] < whole_set / 2, peaks
    assert peaks[4 * n] / peaks[n] < 2.0, peaks  # 4× the images, well under 4× the memory


def _repair_peak(bundle, folders: dict[str, Path]) -> tuple[int, object]:
    """Peak traced memory of a whole repair run as the worker runs it: every set decoded, the
    validation rows checked during the loop, the anchor and the kept rule on the reference images,
    before and after measured on the reported rows."""
    ce = load_dataset(folders["ce"], TINY_CLASSES)
    ev = load_dataset(folders["eval"], TINY_CLASSES)
    ref = load_dataset(folders["ref"], TINY_CLASSES)
    config = {"max_steps": 4, "min_steps": 4, "eval_every": 2, "stop_rule": "kept", "anchor": 1.0, "anchor_batch": 8}
    tracemalloc.start()
    try:
        # with a progress callback, as the worker runs it: the loop then measures the validation rows live
        res = run_repair(
            bundle, ce, ev, method="cpt", config=config, device="cpu", reference=ref, progress=lambda _event: None
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, res


def test_repair_run_memory_does_not_grow_with_the_sets(wide_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("BIASREPAIR_EVAL_BATCH", "16")
    n = 64
    peaks = {}
    for count in (n, 4 * n):
        labels = [TINY_CLASSES[i % 3] for i in range(count)]
        splits = ["val" if i % 4 == 0 else "" for i in range(count)]  # a quarter steer the run
        folders = {
            "ce": write_manifest_dataset(tmp_path / f"ce{count}", make_images(6, seed=1), labels[:6], ["a"] * 6),
            "eval": write_manifest_dataset(
                tmp_path / f"e{count}", make_images(count), labels, ["a", "b"] * (count // 2), splits
            ),
            "ref": write_manifest_dataset(tmp_path / f"r{count}", make_images(count, seed=2), labels),
        }
        _repair_peak(wide_bundle, folders)  # warm-up: first-call caches are not the sets' memory
        peaks[count], res = _repair_peak(wide_bundle, folders)
        assert len(res.after_pred) == count - count // 4 and res.history[-1].heldout_worst_group is not None
        assert res.history[-1].reference_agreement is not None
    whole_set = 4 * n * 3 * 96 * 96  # the decoded uint8 pixels of the larger evaluation set, held at once
    assert peaks[4 * n] < whole_set / 2, peaks
    assert peaks[4 * n] / peaks[n] < 2.0, peaks  # 4× the images in each set, well under 4× the memory


def test_disk_images_read_what_a_tensor_would(wide_bundle, tiny_dataset_dir):
    """The on-disk image sets give exactly the normalised tensors the whole-set tensor gave."""
    ds = load_dataset(tiny_dataset_dir, TINY_CLASSES)
    meta = wide_bundle.meta
    whole = normalize(load_pixels(ds, meta.input_size), meta.mean, meta.std)
    x = DiskImages.decode(ds, meta, batch=5)
    assert len(x) == 12 and torch.equal(x[2:9], whole[2:9])
    idx = torch.tensor([7, 0, 11, 7])
    assert torch.equal(x[idx], whole[idx]) and torch.equal(x[np.array([3])], whole[[3]])
    part = x.subset([10, 4, 6]).subset([2, 0])
    assert len(part) == 2 and torch.equal(part[0:2], whole[[6, 10]])
    model = wide_bundle.model
    assert torch.equal(predict_logits(model, x, torch.device("cpu")), predict_logits(model, whole, torch.device("cpu")))
    assert x.shape == (12, *whole.shape[1:]) and part.shape == (2, *whole.shape[1:])


def test_the_forward_batch_fits_the_cpu_cache_and_leaves_the_logits_as_they_were(wide_bundle):
    """On the CPU one forward pass takes about 2 MB of input (a power of two of images, 16 to 1,024); on an
    accelerator 1,024. The batch changes the speed only: the logits are the same bit for bit."""
    cpu = torch.device("cpu")
    assert forward_batch((3, 28, 28), cpu) == 128  # the demo's digits
    assert forward_batch((3, 32, 32), cpu) == 128
    assert forward_batch((3, 224, 224), cpu) == 16
    assert forward_batch((1, 8, 8), cpu) == 1024
    assert forward_batch((3, 224, 224), torch.device("cuda")) == 1024
    x = torch.randn(300, *wide_bundle.meta.input_size)
    want = predict_logits(wide_bundle.model, x, cpu, batch_size=1024)
    assert torch.equal(predict_logits(wide_bundle.model, x, cpu), want)
    assert torch.equal(predict_logits(wide_bundle.model, x, cpu, batch_size=7), want)


def test_cli_evaluate_shows_a_progress_bar(tiny_bundle_dir, tiny_dataset_dir, tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(tiny_bundle_dir),
                "--data",
                str(tiny_dataset_dir),
                "--out",
                str(tmp_path / "m.json"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "12/12 images" in err and "[" + "#" * 30 + "]" in err
    assert progress_bar(3, 12, width=4) == "[#...]  3/12 images"


# ---- nothing is left behind --------------------------------------------------------------------
@pytest.fixture()
def temp_root(tmp_path, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    return temp


def test_cli_zip_run_leaves_no_temporary_folder(tiny_bundle_dir, tiny_dataset_dir, tmp_path, temp_root, capsys):
    data = tmp_path / "data.zip"
    data.write_bytes(dataset_zip(tiny_dataset_dir))
    out = tmp_path / "m.json"
    assert main(["evaluate", "--model", str(tiny_bundle_dir), "--data", str(data), "--out", str(out), "--quiet"]) == 0
    assert out.is_file()
    assert list(temp_root.iterdir()) == []


def test_cli_zip_run_that_fails_later_leaves_no_temporary_folder(
    tiny_bundle_dir, tiny_dataset_dir, tmp_path, temp_root, capsys
):
    good = tmp_path / "ce.zip"
    good.write_bytes(dataset_zip(tiny_dataset_dir))
    bad = tmp_path / "eval.zip"  # one listed image is not a PNG: refused after the counterexamples were unpacked
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.csv", (tiny_dataset_dir / "manifest.csv").read_text() + "images/extra.png,cat,red\n")
        for f in (tiny_dataset_dir / "images").iterdir():
            zf.writestr(f"images/{f.name}", f.read_bytes())
        zf.writestr("images/extra.png", b"not a png")
    bad.write_bytes(buf.getvalue())
    argv = ["tune", "--model", str(tiny_bundle_dir), "--counterexamples", str(good), "--eval", str(bad)]
    assert main([*argv, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "extra.png" in capsys.readouterr().err
    assert list(temp_root.iterdir()) == []


def test_library_zip_load_cleans_up_on_close_and_on_collection(tiny_dataset_dir, tmp_path, temp_root):
    data = tmp_path / "data.zip"
    data.write_bytes(dataset_zip(tiny_dataset_dir))
    with load_dataset(data, TINY_CLASSES) as ds:  # a context manager: removed when the block ends
        assert len(ds) == 12 and ds.image_path(0).is_file()
        assert len(list(temp_root.iterdir())) == 1
    assert list(temp_root.iterdir()) == []

    ds = load_dataset(data, TINY_CLASSES)  # no block: removed once nothing refers to it any more
    part = ds.subset([0, 1])
    del ds
    gc.collect()
    assert part.image_path(1).is_file()  # a subset keeps the unpacked folder alive
    del part
    gc.collect()
    assert list(temp_root.iterdir()) == []

    ds = load_dataset(data, TINY_CLASSES)
    ds.close()
    assert list(temp_root.iterdir()) == []
    ds.close()  # twice is harmless


def test_failed_model_upload_leaves_no_staging_folder(tmp_path, tiny_bundle_dir, monkeypatch):
    store = Store(tmp_path / "home")

    def worker_died(*args, **kwargs):
        raise UserError("the worker stopped while computing this")

    monkeypatch.setattr(uploads.jobs, "compute", worker_died)  # the worker never got to clean up
    files = {n: (tiny_bundle_dir / n).read_bytes() for n in ("model.json", "model.safetensors")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with pytest.raises(UserError, match="worker stopped"):
        uploads.upload_model_zip(store, buf.getvalue(), "m.zip", ALICE)
    assert files_under(store.artifacts / "incoming") == {}
    assert list((store.artifacts / "incoming").iterdir()) == []


# ---- the store's disk budget -------------------------------------------------------------------
def noise_png(side: int, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_disk_budget_refuses_an_upload_before_writing_anything(tmp_path, monkeypatch):
    store = Store(tmp_path / "home")
    pid = store.create_project("p", ALICE)
    used = budget.store_usage(store)["used"]
    big = noise_png(700)  # ~1.4 MB of incompressible pixels
    monkeypatch.setenv("BIASREPAIR_STORE_BUDGET_MB", str(used // 2**20 + 1))
    before = files_under(store.home)
    with pytest.raises(UserError, match=r"photo\.png needs about 1\.\d MB.*disk budget \(BIASREPAIR_STORE_BUDGET_MB\)"):
        uploads.upload_single_images(store, pid, [("photo.png", big)], "", ALICE)
    assert store.datasets(pid) == []
    assert set(files_under(store.home)) == set(before)  # nothing new on disk (the database may grow)
    assert not [a for a in store.audit_events(pid) if a["action"] == "upload_images"]
    # A small image still fits.
    assert uploads.upload_single_images(store, pid, [("small.png", noise_png(8))], "", ALICE) == 1


def test_disk_budget_refuses_an_evaluation_zip_before_unpacking(tmp_path, tiny_dataset_dir, monkeypatch):
    store = Store(tmp_path / "home")
    used = budget.store_usage(store)["used"]
    monkeypatch.setenv("BIASREPAIR_STORE_BUDGET_MB", str(used // 2**20 + 1))
    target = store.artifacts / "incoming" / "eval_x"
    big = {f"cat/n{i}.png": noise_png(300, seed=i) for i in range(6)}  # ~1.6 MB in all
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in big.items():
            zf.writestr(name, data)
    with pytest.raises(UserError, match="disk budget"):
        dataset_from_zip_bytes(
            buf.getvalue(),
            "eval.zip",
            TINY_CLASSES,
            target,
            before_extract=lambda size: budget.check_budget(store, size, "eval.zip"),
        )
    assert not target.exists()


def _pool_zip(count: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"img/n{i:03d}.png", noise_png(120, seed=i))  # ~43 KB of incompressible pixels
        zf.writestr("manifest.csv", "path,attribute\n" + "".join(f"img/n{i:03d}.png,a{i % 2}\n" for i in range(count)))
    return buf.getvalue()


def test_pool_zip_is_unpacked_to_disk_a_chunk_at_a_time(tmp_path):
    """Pool and reference zips are never read whole into memory: the upload is read from the file
    it arrives in, each member is unpacked to the staging folder in chunks and checked from disk."""
    store = Store(tmp_path / "home")
    pid = store.create_project("p", "alice")
    uploads.upload_pool_zip(store, pid, io.BytesIO(_pool_zip(4)), "warm.zip", ALICE)  # first-call caches
    peaks = {}
    for count, upload in ((20, uploads.upload_pool_zip), (80, uploads.upload_reference_zip)):
        raw = io.BytesIO(_pool_zip(count))  # the uploaded file itself, not a copy of its bytes
        tracemalloc.start()
        try:
            did = upload(store, pid, raw, f"pool{count}.zip", ALICE)
            _, peaks[count] = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        items = pool.read_items(pool.items_file(store, did))
        assert len(items) == count and items[3] == {"path": "img/n003.png", "attribute": "a1"}
        assert (Path(store.dataset(did)["path"]) / "img" / "n079.png").is_file() == (count == 80)
    contents = 80 * len(noise_png(120))  # what the larger zip's members hold
    assert peaks[80] < contents / 4, peaks
    assert peaks[80] / peaks[20] < 2.0, peaks  # 4× the images, well under 4× the memory
    assert list((store.artifacts / "incoming").iterdir()) == []


def test_an_evaluation_zip_is_read_from_an_open_file(tiny_dataset_dir, tmp_path):
    ds = dataset_from_zip_bytes(io.BytesIO(dataset_zip(tiny_dataset_dir)), "eval.zip", TINY_CLASSES, tmp_path / "x")
    assert len(ds) == 12 and ds.image_path(11).is_file()


def test_budget_refusal_is_translated_on_the_pages(tmp_path, monkeypatch):
    store = Store(tmp_path / "home")
    pid = store.create_project("p", ALICE)
    monkeypatch.setenv("BIASREPAIR_STORE_BUDGET_MB", "1")
    with pytest.raises(budget.BudgetError) as refused:
        uploads.upload_single_images(store, pid, [("写真.png", noise_png(700))], "", ALICE)
    ja = budget.explain(refused.value, translator("ja"))
    assert "写真.png" in ja and "ディスク予算 1.0 MB" in ja and "BIASREPAIR_STORE_BUDGET_MB" in ja
    assert budget.explain(refused.value, translator("en")) == str(refused.value).replace(
        "raise the budget", "ask the administrator to raise the budget"
    )
    run_refusal = budget.BudgetError(budget.REPAIR, 3 * 2**20, 2**20, 2 * 2**20)
    assert budget.explain(run_refusal, translator("ja")).startswith("この修復 には約 3.0 MB")
    assert budget.explain(UserError("plain"), translator("ja")) == "plain"


def test_single_uploads_are_capped_in_number(tmp_path, monkeypatch):
    store = Store(tmp_path / "home")
    pid = store.create_project("p", ALICE)
    monkeypatch.setenv("BIASREPAIR_MAX_IMAGES", "2")
    assert (
        uploads.upload_single_images(store, pid, [("a.png", noise_png(8, 1)), ("b.png", noise_png(8, 2))], "", ALICE)
        == 2
    )
    with pytest.raises(UserError, match="3 images, more than the limit of 2"):
        uploads.upload_single_images(store, pid, [("c.png", noise_png(8, 3))], "", ALICE)
    assert store.datasets(pid, "uploads")[0]["n_items"] == 2


def test_a_model_that_cannot_be_saved_leaves_no_staging_folder(tmp_path, tiny_bundle_dir, monkeypatch):
    store = Store(tmp_path / "home")
    staged = store.artifact_dir("incoming", "model_x")
    for name in ("model.json", "model.safetensors"):
        (staged / name).write_bytes((tiny_bundle_dir / name).read_bytes())

    def disk_full(state, meta, folder):
        Path(folder).mkdir(parents=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compute, "save_bundle", disk_full)
    payload = {"staged": str(staged), "filename": "m.zip", "weights": "model.safetensors"}
    with pytest.raises(OSError, match="No space"):
        compute.register_model(store, payload, ALICE)
    assert files_under(store.artifacts) == {}  # neither the upload's nor the model's staging folder


def test_preparing_a_run_reads_the_sets_labels_once_not_once_per_row(wide_bundle, tiny_dataset_dir, monkeypatch):
    """`labels` and `attributes` build a whole-set list on each access: taken once per row, preparing a run was
    quadratic in the evaluation set (a 100k-image set: about 10^10 steps before training began)."""
    from core.engine.repair import prepare_data
    from core.formats.datasets import ImageDataset

    ds = load_dataset(tiny_dataset_dir, TINY_CLASSES)
    builds = {"labels": 0, "attributes": 0}
    for name in builds:
        whole = getattr(ImageDataset, name).fget

        def counted(self, whole=whole, name=name):
            builds[name] += 1
            return whole(self)

        monkeypatch.setattr(ImageDataset, name, property(counted))
    data = prepare_data(wide_bundle, ds.subset([0, 1]), eval_set=ds)
    assert len(data.attr_eval) + len(data.attr_val or []) == len(ds) == 12
    assert builds["attributes"] <= 2 and builds["labels"] <= 3, builds  # a constant, whatever the set's size


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh's machine)")
def test_disk_images_normalised_on_the_gpu_equal_the_cpu_ones(wide_bundle, tiny_dataset_dir):
    """To a GPU the uint8 pixels travel and are normalised there; the values are the CPU's, bit for bit."""
    ds = load_dataset(tiny_dataset_dir, TINY_CLASSES)
    x = DiskImages.decode(ds, wide_bundle.meta, batch=5)
    cuda = torch.device("cuda")
    assert torch.equal(x.read(slice(2, 9), cuda).cpu(), x[2:9])
    assert torch.equal(x.read(np.array([7, 0, 11]), cuda).cpu(), x[np.array([7, 0, 11])])


def test_a_full_disk_while_unpacking_says_so_in_words_and_leaves_nothing(tmp_path, monkeypatch):
    """The disk fills up halfway through unpacking a pool zip: the page says the disk is full (in the user's
    language, naming the store's folder), not the system's English "No space left on device", and the half
    unpacked staging folder is gone."""
    import builtins
    import errno

    from core.app.i18n import error_text
    from core.formats import zipsafety

    store = Store(tmp_path / "home")
    pid = store.create_project("p", "alice")
    written = {"bytes": 0}

    class FillingFile(io.FileIO):
        def write(self, data):
            if written["bytes"] + len(data) > 60_000:  # the disk is full after about one image
                raise OSError(errno.ENOSPC, "No space left on device")
            written["bytes"] += len(data)
            return super().write(data)

    def opener(path, mode="r", *args, **kwargs):
        return FillingFile(path, "wb") if mode == "wb" else builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(zipsafety, "open", opener, raising=False)
    with pytest.raises(UserError) as refused:
        uploads.upload_pool_zip(store, pid, io.BytesIO(_pool_zip(4)), "pool.zip", ALICE)
    assert written["bytes"] > 0  # it did start unpacking
    assert refused.value.key == "disk_full" and str(store.home) in str(refused.value)
    assert "No space left" not in error_text(refused.value, "ja") and "ディスクがいっぱい" in error_text(
        refused.value, "ja"
    )
    assert files_under(store.artifacts) == {} and store.datasets(pid, "pool") == []


def test_gallery_thumbnails_are_cached_as_png_a_fiftieth_of_the_pixels(tmp_path):
    """The page process keeps up to 4,096 thumbnails: encoded, as the browser gets them, not decoded pixels, so a
    gallery browsed for long does not fill the server's memory (a decoded 112 px digit held about 50 KB)."""
    from core.app import evaluation

    path = tmp_path / "digit.png"
    img = Image.new("RGB", (28, 28))
    img.putpixel((3, 4), (255, 255, 255))
    img.save(path)
    data = evaluation.thumbnail(str(path), 112)
    small = Image.open(io.BytesIO(data))
    assert small.format == "PNG" and small.size == (112, 112)
    assert small.convert("RGB").getpixel((3 * 4 + 1, 4 * 4 + 2)) == (255, 255, 255)  # sharp pixels, scaled by 4
    assert len(data) * 50 < 112 * 112 * 3
