"""A killed process leaves its unpacked zip in the temporary folder; the next start of the CLI removes it,
and never a folder whose process still runs, a fresh one, or anything not named like ours."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from PIL import Image

from core.formats import scratch
from tests.conftest import TINY_CLASSES

ROOT = Path(__file__).resolve().parent.parent
HOUR = 3600


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_the_sweep_removes_only_old_folders_of_gone_processes(tmp_path):
    dead, me = _dead_pid(), os.getpid()
    folders = {
        "orphan": tmp_path / f"biasrepair-dataset-{dead}-abc_12",
        "orphan_hf": tmp_path / f"biasrepair-hf-{dead}-x9y8",
        "alive": tmp_path / f"biasrepair-dataset-{me}-abc_12",
        "fresh": tmp_path / f"biasrepair-dataset-{dead}-new1",
        "not_ours": tmp_path / f"other-dataset-{dead}-abc",
    }
    for name, path in folders.items():
        (path / "inner").mkdir(parents=True)
        (path / "inner" / "a.png").write_bytes(b"x" * 100)
        if name != "fresh":
            _age(path, 2 * HOUR)
    removed = scratch.sweep_stale(tmp_path)
    assert sorted(removed) == sorted([folders["orphan"], folders["orphan_hf"]])
    assert {p.name for p in tmp_path.iterdir()} == {folders[k].name for k in ("alive", "fresh", "not_ours")}


def test_folders_named_before_the_pid_was_in_the_name_are_swept_once_a_day_old(tmp_path):
    """An older version's unpacked zip (``biasrepair-dataset-<random>``, ``biasrepair_hf_<random>``) has no pid to
    ask: it goes once it is a day old, and not before."""
    old = {name: tmp_path / name for name in ("biasrepair-dataset-k2_9xq7a", "biasrepair_hf_3mzp0_wq")}
    young = tmp_path / "biasrepair-dataset-ab12cd34"
    for path in [*old.values(), young]:
        (path / "inner").mkdir(parents=True)
        _age(path, 2 * HOUR)
    for path in old.values():
        _age(path, 25 * HOUR)
    assert sorted(scratch.sweep_stale(tmp_path)) == sorted(old.values())
    assert [p.name for p in tmp_path.iterdir()] == [young.name]


def _dataset_zip(path: Path) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), (255, 0, 0)).save(buf, format="PNG")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.csv", "path,label\na.png,cat\n")
        zf.writestr("a.png", buf.getvalue())
    return path


def test_a_killed_cli_leaves_its_unpacked_zip_and_the_next_cli_start_removes_it(tmp_path, tiny_bundle_dir):
    temp = tmp_path / "temp"
    temp.mkdir()
    data = _dataset_zip(tmp_path / "d.zip")
    env = {**os.environ, "TMPDIR": str(temp)}
    # A command that unpacks the zip as the CLI does, says so, and waits to be killed (kill -9 runs no clean-up).
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from core.formats.datasets import load_dataset, unpacked_zips\n"
         "with unpacked_zips():\n    ds = load_dataset(sys.argv[1], sys.argv[2].split(','))\n"
         "    print(ds.root, flush=True); sys.stdin.read()", str(data), ",".join(TINY_CLASSES)],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    unpacked = Path(holder.stdout.readline().strip())
    holder.kill()
    holder.wait()
    assert (unpacked / "a.png").is_file()
    (left,) = list(temp.iterdir())
    assert left.name.startswith(f"biasrepair-dataset-{holder.pid}-")
    subprocess.run([sys.executable, "-m", "core", "evaluate", "--model", str(tiny_bundle_dir), "--data", str(data),
                    "--out", str(tmp_path / "m.json")], cwd=ROOT, env=env, check=True, capture_output=True)  # fmt: skip
    assert left.exists(), "a folder younger than an hour is kept"
    _age(left, 2 * HOUR)
    subprocess.run([sys.executable, "-m", "core", "evaluate", "--model", str(tiny_bundle_dir), "--data", str(data),
                    "--out", str(tmp_path / "m.json")], cwd=ROOT, env=env, check=True, capture_output=True)  # fmt: skip
    assert list(temp.iterdir()) == []
