"""The CLI end to end on the real demo, and one test per bad input (exit 2, message names it)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from core.cli import main
from core.formats.bundle import load_bundle

ROOT = Path(__file__).resolve().parent.parent


def demo_args(demo_dir):
    """--model/--counterexamples/--eval of the session's demo, as tune and sweep take them."""
    return [
        "--model",
        demo_dir / "model",
        "--counterexamples",
        demo_dir / "counterexamples",
        "--eval",
        demo_dir / "eval",
    ]


def cli(*args, capsys=None):
    code = main([str(a) for a in args])
    out = capsys.readouterr() if capsys else None
    return code, out


def test_demo_then_tune_repairs_the_bias(demo_dir, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            "tune",
            *demo_args(demo_dir),
            "--out",
            run,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "step" in proc.stderr  # progress is shown on the terminal
    m = json.loads((run / "metrics.json").read_text())
    for key in (
        "before",
        "after",
        "kept_decisions",
        "changed_predictions",
        "method",
        "strength",
        "steps",
        "seconds",
        "device",
    ):
        assert key in m
    # The two-colour demo starts at 0.77 accuracy and a 0.15 worst group (README table).
    assert m["after"]["worst_group_accuracy"] > m["before"]["worst_group_accuracy"] + 0.1
    assert m["after"]["accuracy"] > m["before"]["accuracy"] + 0.05
    assert m["kept_decisions"] >= 0.9
    assert set(m["before"]) >= {"accuracy", "worst_group_accuracy", "bias_gap", "min_group_count", "groups"}
    assert {"label", "attribute", "accuracy", "count"} <= set(m["before"]["groups"][0])
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("step,loss,task_loss,penalty,fixed")
    assert len(history) - 1 == m["steps"]
    # The exported model is an ordinary bundle that loads back, and the base file is untouched.
    merged = load_bundle(run / "model")
    assert merged.meta.architecture == "small_cnn"
    from safetensors.torch import load_file

    delta = load_file(str(run / "delta.safetensors"))
    base = load_bundle(demo_dir / "model").model.state_dict()
    for name, d in delta.items():
        torch.testing.assert_close(merged.model.state_dict()[name], base[name] + d)


def test_evaluate_writes_metrics(demo_dir, tmp_path, capsys):
    code, out = cli(
        "evaluate",
        "--model",
        demo_dir / "model",
        "--data",
        demo_dir / "counterexamples",
        "--out",
        tmp_path / "m.json",
        capsys=capsys,
    )
    assert code == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["accuracy"] == 0.0  # the default counterexamples are ones the shipped model gets wrong


def test_help_on_each_command():
    for cmd in ("demo", "evaluate", "tune"):
        proc = subprocess.run([sys.executable, "-m", "core", cmd, "--help"], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0 and "usage" in proc.stdout


# -- bad inputs ---------------------------------------------------------------------------------


def expect_refusal(capsys, words, *args):
    code, out = cli(*args, capsys=capsys)
    assert code == 2
    line = out.err.strip()
    assert "Traceback" not in out.err and len(line.splitlines()) == 1
    for w in words:
        assert w.lower() in line.lower(), line
    return line


def evaluate_args(model, data, tmp_path):
    return ("evaluate", "--model", model, "--data", data, "--out", tmp_path / "m.json")


def test_corrupt_safetensors(tiny_bundle_dir, tiny_dataset_dir, tmp_path, capsys):
    (tiny_bundle_dir / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    expect_refusal(capsys, ["safetensors", "corrupt"], *evaluate_args(tiny_bundle_dir, tiny_dataset_dir, tmp_path))


def test_wrong_architecture_name(tiny_bundle_dir, tiny_dataset_dir, tmp_path, capsys):
    meta = json.loads((tiny_bundle_dir / "model.json").read_text())
    meta["architecture"] = "resnet9000"
    (tiny_bundle_dir / "model.json").write_text(json.dumps(meta))
    expect_refusal(capsys, ["resnet9000", "allowed"], *evaluate_args(tiny_bundle_dir, tiny_dataset_dir, tmp_path))


def test_num_classes_mismatch(tiny_bundle_dir, tiny_dataset_dir, tmp_path, capsys):
    meta = json.loads((tiny_bundle_dir / "model.json").read_text())
    meta["num_classes"] = 4
    meta["class_names"] = ["cat", "dog", "fox", "owl"]
    (tiny_bundle_dir / "model.json").write_text(json.dumps(meta))
    expect_refusal(capsys, ["num_classes"], *evaluate_args(tiny_bundle_dir, tiny_dataset_dir, tmp_path))


def test_missing_image(tiny_bundle_dir, tiny_dataset_dir, tmp_path, capsys):
    victim = sorted((tiny_dataset_dir / "images").iterdir())[0]
    victim.unlink()
    line = expect_refusal(capsys, ["missing", victim.name], *evaluate_args(tiny_bundle_dir, tiny_dataset_dir, tmp_path))
    assert "line 2" in line


def test_unknown_label(tiny_bundle_dir, tiny_dataset_dir, tmp_path, capsys):
    text = (tiny_dataset_dir / "manifest.csv").read_text().replace(",cat,", ",zebra,", 1)
    (tiny_dataset_dir / "manifest.csv").write_text(text)
    expect_refusal(capsys, ["unknown label", "zebra"], *evaluate_args(tiny_bundle_dir, tiny_dataset_dir, tmp_path))


def test_zip_with_parent_path(tiny_bundle_dir, tmp_path, capsys):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("manifest.csv", "path,label\n../x.png,cat\n")
        zf.writestr("../x.png", b"\x89PNG")
    expect_refusal(capsys, ["evil.zip", "../x.png"], *evaluate_args(tiny_bundle_dir, z, tmp_path))
    assert not (tmp_path / "x.png").exists()


def test_oversized_zip(tiny_bundle_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BIASREPAIR_MAX_UNZIPPED_MB", "1")
    z = tmp_path / "big.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        # A listed member that compresses to a few KB: a small bomb. (An unlisted one is never unpacked:
        # tests/test_resources.py.)
        zf.writestr("manifest.csv", "path,label\npad.png,cat\n")
        zf.writestr("pad.png", b"\0" * (3 * 1024 * 1024))
    expect_refusal(capsys, ["big.zip", "limit"], *evaluate_args(tiny_bundle_dir, z, tmp_path))


class Boom(torch.nn.Module):
    """Unpickling this would create a marker file: proof that code ran."""

    def __reduce__(self):
        return (Path.write_text, (Path(MARKER), "executed"))


MARKER = ""


def test_pickled_module_is_refused_without_running(tmp_path, tiny_dataset_dir, tiny_meta, capsys):
    global MARKER
    MARKER = str(tmp_path / "pwned.txt")
    weights = tmp_path / "model.pt"
    torch.save(Boom(), weights)
    meta = tmp_path / "model.json"
    meta.write_text(json.dumps(tiny_meta.to_dict()))
    expect_refusal(
        capsys,
        ["model.pt", "refused"],
        "evaluate",
        "--model",
        weights,
        "--meta",
        meta,
        "--data",
        tiny_dataset_dir,
        "--out",
        tmp_path / "m.json",
    )
    assert not Path(MARKER).exists()


def test_plain_state_dict_is_accepted(tmp_path, tiny_dataset_dir, tiny_meta, capsys):
    from core.formats.architectures import SmallCNN

    torch.save(SmallCNN(3, 3).state_dict(), tmp_path / "w.pth")
    (tmp_path / "model.json").write_text(json.dumps(tiny_meta.to_dict()))
    code, _ = cli(
        "evaluate",
        "--model",
        tmp_path / "w.pth",
        "--meta",
        tmp_path / "model.json",
        "--data",
        tiny_dataset_dir,
        "--out",
        tmp_path / "m.json",
        capsys=capsys,
    )
    assert code == 0


def test_torchscript_and_pt2_refused(tmp_path, tiny_dataset_dir, tiny_meta, capsys):
    from core.formats.architectures import SmallCNN

    ts = tmp_path / "scripted.pt"
    torch.jit.script(SmallCNN(3, 3)).save(str(ts))
    (tmp_path / "model.json").write_text(json.dumps(tiny_meta.to_dict()))
    expect_refusal(
        capsys,
        ["TorchScript"],
        "evaluate",
        "--model",
        ts,
        "--meta",
        tmp_path / "model.json",
        "--data",
        tiny_dataset_dir,
        "--out",
        tmp_path / "m.json",
    )
    pt2 = tmp_path / "model.pt2"
    pt2.write_bytes(b"PK")
    expect_refusal(capsys, [".pt2", "run code"], *evaluate_args(pt2, tiny_dataset_dir, tmp_path))


def test_non_image_file(tiny_bundle_dir, tiny_dataset_dir, tmp_path, capsys):
    victim = sorted((tiny_dataset_dir / "images").iterdir())[0]
    victim.write_bytes(b"this is not an image at all")
    expect_refusal(
        capsys, [victim.name, "not a readable png or jpeg"], *evaluate_args(tiny_bundle_dir, tiny_dataset_dir, tmp_path)
    )


def test_bundle_zip_roundtrip(tiny_bundle_dir, tmp_path):
    from core.formats.meta import bundle_zip_bytes

    z = tmp_path / "b.zip"
    z.write_bytes(bundle_zip_bytes(tiny_bundle_dir))
    b = load_bundle(z)
    assert b.meta.class_names == ["cat", "dog", "fox"]
    assert set(b.sha256) == {"model.json", "model.safetensors"}
    with zipfile.ZipFile(io.BytesIO(z.read_bytes())) as zf:
        assert sorted(zf.namelist()) == ["model.json", "model.safetensors"]


@pytest.mark.parametrize("flag", [["--strength", "lots"], ["--method", "nope"], ["--set", "bogus=1"]])
def test_bad_tune_flags(demo_dir, tmp_path, capsys, flag):
    code, out = cli(
        "tune",
        "--model",
        demo_dir / "model",
        "--counterexamples",
        demo_dir / "counterexamples",
        "--out",
        tmp_path / "r",
        *flag,
        capsys=capsys,
    )
    assert code == 2 and "Traceback" not in out.err


def test_sweep_and_export(demo_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BIASREPAIR_USER", raising=False)
    out = tmp_path / "sweep"
    code, _ = cli(
        "sweep",
        *demo_args(demo_dir),
        "--out",
        out,
        "--strengths",
        "10",
        "10000",
        "--max-steps",
        "15",
        capsys=capsys,
    )
    assert code == 0
    import csv

    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [float(r["strength"]) for r in rows] == [10.0, 10000.0]
    # a stronger penalty keeps more of the old decisions
    assert float(rows[1]["kept_decisions"]) > float(rows[0]["kept_decisions"])
    import getpass
    import json

    assert json.loads((out / "strength_10" / "made_by.json").read_text())["user"] == getpass.getuser()
    code, _ = cli("export", "--run", out / "strength_10", "--out", tmp_path / "m.zip", "--user", "mia", capsys=capsys)
    assert code == 0 and load_bundle(tmp_path / "m.zip").meta.architecture == "small_cnn"
    made = json.loads((tmp_path / "m.zip.made_by.json").read_text())
    assert made["user"] == "mia" and made["command"] == "export" and made["at"].endswith("Z")
    code, out_err = cli("export", "--run", tmp_path, "--out", tmp_path / "n.zip", capsys=capsys)
    assert code == 2 and "no model bundle" in out_err.err


def test_repair_is_the_verb_and_tune_its_old_name(demo_dir, tmp_path, capsys):
    """The same options and the same output under either name; the help says "repair"."""
    outputs, metrics = [], []
    for verb in ("repair", "tune"):
        run = tmp_path / verb
        common = [*demo_args(demo_dir), "--max-steps", 12, "--min-steps", 2, "--quiet", "--user", "tester"]
        code, out = cli(verb, *common, "--out", run, capsys=capsys)
        assert code == 0, out.err
        outputs.append([line.split(" s on ")[0] if " s on " in line else line for line in out.out.splitlines()])
        m = json.loads((run / "metrics.json").read_text())
        metrics.append({k: v for k, v in m.items() if k != "seconds"})
        assert json.loads((run / "made_by.json").read_text())["command"] == verb
    assert metrics[0] == metrics[1]
    assert [line.replace(str(tmp_path / "repair"), "RUN") for line in outputs[0][:-1]] == [
        line.replace(str(tmp_path / "tune"), "RUN") for line in outputs[1][:-1]
    ]
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert "repair (tune)" in listing and "Repair a model" in listing
