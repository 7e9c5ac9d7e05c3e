"""The ResNet-50 setting of ``scripts/gpu_check.sh``: a biased ResNet-50 at 224 px and a 10k-image evaluation.

    python scripts/gpu_resnet50.py setup WORK [--size 224] [--epochs 10] [--rows 10000] [--device cuda]
    python scripts/gpu_resnet50.py peak OUT.json -- CLI ARGS…     (python -m core CLI ARGS…, then its peak memory)

``setup`` writes into WORK: the photo suite's counterexamples (16), evaluation, pool and ``reference/`` images (all
shipped data, 32 px; the model's loader resizes them to its input size), ``eval10k/`` (the evaluation images
repeated to ``--rows`` rows), and ``model_r50/``: torchvision ResNet-50 (``weights=None``, nothing downloaded)
trained from scratch on the photo suite's biased training photos, upsampled to ``--size`` with the loader's own
bilinear resize, under bf16 autocast on a GPU. The model is there to be timed, so a short training is enough; its
accuracy is printed and goes into ``train_info.json``.

``peak`` runs one ``python -m core`` command in this process and writes its wall-clock seconds and
``torch.cuda.max_memory_allocated`` (on a CPU: the process's peak resident set) to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.bench import photo_suite as ps  # noqa: E402
from core.bench.standard_suite import reference_pixels, training_data  # noqa: E402
from core.cli import main as cli_main  # noqa: E402
from core.engine.devices import autocast, select_device  # noqa: E402
from core.engine.inference import normalize  # noqa: E402
from core.formats.architectures import build_model  # noqa: E402
from core.formats.bundle import BundleMeta, save_bundle  # noqa: E402
from core.formats.datasets import load_dataset, load_pixels, write_manifest_dataset  # noqa: E402


def upsample(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N,H,W,3] → uint8 [N,3,size,size], resized as the dataset loader resizes (PIL bilinear)."""
    out = np.empty((len(rgb), 3, size, size), dtype=np.uint8)
    for i, img in enumerate(rgb):
        out[i] = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)
    return out


def train_r50(out: Path, size: int, epochs: int, device: torch.device, limit: int | None = None) -> dict:
    rgb, labels, agree = training_data("photo")
    if limit:
        rgb, labels, agree = rgb[:limit], labels[:limit], agree[:limit]
    pixels = torch.from_numpy(upsample(rgb, size))
    y = torch.from_numpy(labels)
    torch.manual_seed(0)
    model = build_model("resnet50", len(ps.CLASS_NAMES)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=epochs * ((len(y) + batch - 1) // batch))
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for ep in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for start in range(0, len(y), batch):
            idx = perm[start : start + batch]
            xb = normalize(pixels[idx].to(device), ps.MEAN, ps.STD)
            with autocast(device):
                loss = torch.nn.functional.cross_entropy(model(xb).float(), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(
            f"resnet50 epoch {ep + 1}/{epochs}: loss {float(loss):.3f} ({time.perf_counter() - t0:.0f} s)", flush=True
        )
    model.eval()
    meta = BundleMeta("resnet50", len(ps.CLASS_NAMES), ps.CLASS_NAMES, [3, size, size], ps.MEAN, ps.STD)
    save_bundle({k: v.cpu() for k, v in model.state_dict().items()}, meta, out)
    info = {"architecture": "resnet50", "input_size": size, "epochs": epochs, "train_images": int(len(y)),
            "shortcut_agreement": float(agree.mean()), "seconds": time.perf_counter() - t0, "device": str(device)}  # fmt: skip
    (out / "train_info.json").write_text(json.dumps(info, indent=2))
    return info


def setup(args) -> None:
    work = Path(args.work)
    paths = ps.build_photo(work / "photo")
    ref = reference_pixels("photo").transpose(0, 2, 3, 1)
    write_manifest_dataset(work / "reference", ref, [ps.CLASS_NAMES[0]] * len(ref), prefix="reference")
    ev = load_dataset(paths["eval"], ps.CLASS_NAMES)
    pixels = load_pixels(ev, [3, 32, 32]).transpose(0, 2, 3, 1)
    order = np.resize(np.arange(len(ev)), args.rows)  # the evaluation images, repeated to `rows` rows
    names = [ps.CLASS_NAMES[i] for i in ev.labels[order]]
    write_manifest_dataset(work / "eval10k", pixels[order], names, [ev.attributes[i] for i in order])
    info = train_r50(work / "model_r50", args.size, args.epochs, select_device(args.device), args.train_limit)
    print(json.dumps(info))


def peak(args) -> int:
    device = select_device("auto")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    rc = cli_main(args.cli)
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        bytes_, how = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    else:
        bytes_, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak resident set (ru_maxrss)"
    Path(args.out).write_text(json.dumps({"command": args.cli, "rc": rc, "seconds": seconds, "peak_bytes": bytes_,
                                          "peak_measure": how}, indent=1))  # fmt: skip
    return rc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("work")
    s.add_argument("--size", type=int, default=224)
    s.add_argument("--epochs", type=int, default=10)
    s.add_argument("--rows", type=int, default=10_000)
    s.add_argument("--train-limit", type=int, default=None, help="train on the first N photos only (smoke runs)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    k = sub.add_parser("peak")
    k.add_argument("out")
    k.add_argument("cli", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.cmd == "setup":
        setup(args)
        return 0
    if args.cli and args.cli[0] == "--":
        args.cli = args.cli[1:]
    return peak(args)


if __name__ == "__main__":
    sys.exit(main())
