"""``python -m core perf``: speed and memory of a repair, as ratios measured side by side in one run.

docs/DESIGN.md §8: speed is measured by ratios taken in one process on the same model, batch and
device, never by timed tests. Each ratio's two sides are timed in interleaved blocks (A, B, A, B, …,
with the order alternating between repeats) and the median block is taken, so drift in machine
load hits both sides alike.

* **step**, **anchored step** and **memory**: :mod:`core.bench.perf_steps` (CPT ÷ a bare PyTorch fine-tuning
  step, targets ≤ 1.05 and ≤ 1.10 on the same images, memory ≤ 1.15).
* **evaluate**: throughput of our evaluation path (:func:`core.engine.inference.evaluate_model`: batched
  logits, softmax, per-group metrics with bootstrap intervals; and :func:`core.engine.inference.predict_logits`
  alone) ÷ a bare ``torch.inference_mode()`` loop over the same preloaded tensors. Target ≥ 0.90.
  Beside it, **streamed from disk**: the same images as uint8 pixels in a memory-mapped file read
  ``BIASREPAIR_EVAL_BATCH`` at a time (:class:`core.engine.inference.DiskImages`, how a repair run and
  the Review page's α preview hold their image sets, so that memory does not grow with the set)
  ÷ the same bare loop over the preloaded float tensor: what bounded memory costs (or saves: on a
  CPU, small batches stay in cache).
* **repair vs retrain**, per suite: a full default repair (``run_repair`` with change-penalized
  tuning on 16 counterexamples, evaluation before and after included, images already decoded)
  ÷ retraining the same base model from scratch on its training set. This is the time a user
  saves; the repair is never shortened to improve it. The tuning loop alone (without the before/after
  evaluation) is shown beside it.
* **auto vs one repair** (``--auto``, slow), per suite: a repair with automatic strength ÷ one default repair, on
  the same 16 counterexamples and device (whole call, and the tuning alone). Targets: median ≤ 2, worst ≤ 3.

CPU figures use one thread by default (``--threads``), on both sides of every ratio: on a machine
shared with other jobs, multi-threaded kernels wait on descheduled threads and two runs of the same
work differed by 4× in our measurements. On CPU the step and evaluation ratios use the demo's small CNN; on a CUDA machine the same command
adds ResNet-50 at 224 px under bf16 autocast. Timing inputs are random tensors of the right
shape (the work does not depend on pixel values); the suite ratios use the suites' real images.

* **scale** (``--scale``): the Ray backend against the local one, :mod:`core.bench.scale`.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.bench import scale
from core.bench.benchmark import draw_counterexamples
from core.bench.perf_steps import interleaved, step_figures
from core.bench.suites import load_suite, prepare_suite_data
from core.engine.devices import autocast, describe_device, select_device
from core.engine.inference import DiskImages, evaluate_model, predict_logits
from core.engine.old_answers import OldAnswers
from core.engine.repair import run_repair
from core.formats.architectures import SmallCNN, build_model


def add_arguments(p) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=7, help="interleaved timing blocks per side (median taken)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per timing block")
    p.add_argument("--batch-size", type=int, default=16, help="counterexamples per step")
    p.add_argument("--eval-images", type=int, default=4096, help="images per evaluation block")
    p.add_argument("--suites", nargs="*", default=["demo", "photo"], help="suites for repair-vs-retrain (none to skip)")
    p.add_argument("--cpu-arch", default="small_cnn", help="architecture for the CPU figures (demo's CNN by default)")
    p.add_argument("--cpu-size", type=int, default=28, help="input size for the CPU figures")
    p.add_argument("--gpu-arch", default="resnet50", help="architecture for the CUDA figures")
    p.add_argument("--gpu-size", type=int, default=224, help="input size for the CUDA figures")
    p.add_argument("--gpu-batch-size", type=int, default=32)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (default 1: on a shared machine, multi-threaded kernels wait on each other's "
        "descheduled threads and the ratios become noise; 0 = torch's own choice)",
    )
    p.add_argument("--out", help="also write the figures as JSON here")
    p.add_argument(
        "--auto",
        action="store_true",
        help="also time a repair with automatic strength ÷ one default repair on each of --suites (slow: minutes)",
    )
    scale.add_arguments(p)


def eval_figures(model: nn.Module, x: torch.Tensor, device, repeats: int, batch_size: int = 1024) -> dict:
    model = model.to(device).eval()
    y = np.random.default_rng(0).integers(0, 10, len(x))
    attrs = [str(a) for a in np.random.default_rng(1).integers(0, 10, len(x))]
    names = [str(i) for i in range(max(10, int(y.max()) + 1))]

    def bare():
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                with autocast(device):
                    model(x[start : start + batch_size].to(device, non_blocking=True))

    with tempfile.TemporaryFile() as fh:  # the pixels on disk, as a repair run or the α preview reads them
        pixels = np.memmap(fh, dtype=np.uint8, mode="w+", shape=tuple(x.shape))
    pixels[:] = np.random.default_rng(2).integers(0, 256, x.shape, dtype=np.uint8)
    streamed = DiskImages(pixels, [0.5] * x.shape[1], [0.25] * x.shape[1])
    t, c = interleaved(
        {
            "bare": bare,
            "predict_logits": lambda: predict_logits(model, x, device, batch_size),
            "evaluate": lambda: evaluate_model(model, x, y, attrs, names, device),
            "streamed": lambda: predict_logits(model, streamed, device),
        },
        repeats,
        device,
    )
    n = len(x)
    return {
        "images": n,
        "streamed_batch": streamed.batch,
        "streamed_images_per_s": n / t["streamed"],
        "streamed_ratio": t["bare"] / t["streamed"],
        "streamed_ratio_cpu_time": c["bare"] / c["streamed"],
        "bare_images_per_s": n / t["bare"],
        "predict_logits_images_per_s": n / t["predict_logits"],
        "evaluate_images_per_s": n / t["evaluate"],
        "predict_logits_ratio": t["bare"] / t["predict_logits"],
        "evaluate_ratio": t["bare"] / t["evaluate"],
        "predict_logits_ratio_cpu_time": c["bare"] / c["predict_logits"],
        "evaluate_ratio_cpu_time": c["bare"] / c["evaluate"],
    }


def suite_figures(name: str, device, workdir: Path, seed: int = 0) -> dict:
    """Full default repair on 16 counterexamples ÷ retraining the base from scratch."""
    suite = load_suite(name, workdir / "suites")
    t0 = time.perf_counter()
    suite.load_pixels()
    decode_s = time.perf_counter() - t0
    idx = draw_counterexamples(suite, 16, seed)
    data = prepare_suite_data(suite, idx, with_unlabeled=False)
    t0 = time.perf_counter()
    res = run_repair(suite.bundle, suite.pool.subset(idx), method="cpt", config={}, device=str(device.type), data=data)
    repair_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    info = suite.retrain(workdir / f"retrained_{name}")
    retrain_s = time.perf_counter() - t0
    return {
        "suite": name,
        "repair_s": repair_s,
        "repair_steps": res.metrics.steps,
        "tuning_loop_s": res.history[-1].elapsed_s if res.history else 0.0,
        "decode_s": decode_s,
        "retrain_s": retrain_s,
        "retrain_info": info,
        "repair_ratio": repair_s / retrain_s,
        "tuning_loop_ratio": (res.history[-1].elapsed_s if res.history else 0.0) / retrain_s,
    }


def auto_figures(name: str, device, workdir: Path, seed: int = 0) -> dict:
    """A repair with automatic strength ÷ one default repair, same suite, counterexamples (16) and device: the
    whole ``run_repair`` call, and ``metrics.seconds`` (the tuning: auto's trials and its repair, or the loop)."""
    suite = load_suite(name, workdir / "suites")
    suite.load_pixels()
    idx = draw_counterexamples(suite, 16, seed)
    data = prepare_suite_data(suite, idx, with_unlabeled=False)
    sides = {}
    for side, cfg in (("default", {}), ("auto", {"strength": "auto"})):
        fresh = replace(data, old=OldAnswers())  # each side predicts the old model's answers itself, as one command
        t0 = time.perf_counter()
        res = run_repair(
            suite.bundle, suite.pool.subset(idx), method="cpt", config=cfg, device=str(device.type), data=fresh
        )
        sides[side] = (time.perf_counter() - t0, res.metrics.seconds or 0.0, res.metrics.steps)
    (d_s, d_tune, d_steps), (a_s, a_tune, _) = sides["default"], sides["auto"]
    return {"suite": name, "default_s": d_s, "auto_s": a_s, "default_tuning_s": d_tune, "auto_tuning_s": a_tune,
            "default_steps": d_steps, "auto_ratio": a_s / d_s, "auto_tuning_ratio": a_tune / max(d_tune, 1e-9)}  # fmt: skip


def _auto_lines(suites: list[str], device, report: dict) -> list[str]:
    """Auto ÷ one default repair per suite, with the median and the worst (its sections added to ``report``)."""
    lines = [
        "",
        f"## automatic strength ÷ one default repair ({describe_device(device)}, 16 counterexamples)",
        "| suite | auto ÷ default (whole call) | tuning alone | auto | default (steps) |",
        "|---|---|---|---|---|",
    ]
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in suites:
            f = auto_figures(name, device, Path(tmp))
            report["sections"].append({"device": device.type, "kind": "auto", **f})
            ratios.append(f["auto_ratio"])
            lines.append(
                f"| {name} | {f['auto_ratio']:.2f} | {f['auto_tuning_ratio']:.2f} | {f['auto_s']:.1f} s | "
                f"{f['default_s']:.1f} s ({f['default_steps']}) |"
            )
    lines.append(f"median {statistics.median(ratios):.2f}, worst {max(ratios):.2f} (targets ≤ 2 and ≤ 3)")
    return lines


def run(args) -> int:
    device = select_device(args.device)
    if args.threads and args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report: dict = {
        "device": describe_device(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": load,
        "sections": [],
    }
    lines = [
        f"# perf on {describe_device(device)} (torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, 1-min load average at start {load:.2f})"
    ]
    for dev_name, label, model, shape, bs in _step_configs(args, device):
        section = _device_section(args, dev_name, label, model, shape, bs)
        report["sections"].append(section)
        lines += _device_lines(section)
    suites = [s for s in (args.suites or []) if s != "none"]
    if suites:
        lines += _suite_lines(suites, report)
    if suites and args.auto:
        lines += _auto_lines(suites, device, report)
    if args.scale:
        with tempfile.TemporaryDirectory() as tmp:
            section, more = scale.scale_figures(args, Path(tmp))
        report["sections"].append(section)
        lines += more
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return 0


def _step_configs(args, device) -> list[tuple]:
    """(device name, label, model, input shape, batch size) of each measured model: the CPU one, and the GPU
    one when there is a GPU."""
    cpu_model = SmallCNN(10, 3).eval() if args.cpu_arch == "small_cnn" else build_model(args.cpu_arch, 1000)
    cpu_label = f"{args.cpu_arch} @ {args.cpu_size}px" + (" (the demo's CNN)" if args.cpu_arch == "small_cnn" else "")
    configs = [("cpu", cpu_label, cpu_model, (3, args.cpu_size, args.cpu_size), args.batch_size)]
    if device.type == "cuda":
        configs.append(
            (
                "cuda",
                f"{args.gpu_arch} @ {args.gpu_size}px, bf16 autocast",
                build_model(args.gpu_arch, 1000),
                (3, args.gpu_size, args.gpu_size),
                args.gpu_batch_size,
            )
        )
    return configs


def _device_section(args, dev_name: str, label: str, model, shape, bs: int) -> dict:
    """The step and evaluation figures of one model on one device."""
    dev = torch.device(dev_name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(bs, *shape, generator=g).to(dev)
    y = torch.randint(0, 10, (bs,), generator=g).to(dev)
    st = step_figures(model, x, y, dev, args.repeats, args.steps)
    n_eval = args.eval_images if dev_name == "cpu" else min(args.eval_images, 2048)
    ev = eval_figures(model, torch.randn(n_eval, *shape, generator=g), dev, args.repeats)
    return {"device": dev_name, "model": label, "batch_size": bs, **st, **ev}


def _ratio_row(s: dict, what: str, key: str, target: str, sides: str) -> str:
    return f"| {what} | {s[key]:.3f} | {s[key + '_cpu_time']:.3f} | {target} | {sides} |" if key in s else ""


def _ms(s: dict, *names: str) -> str:
    return " vs ".join(f"{s[n + '_step_s'] * 1e3:.2f} ms" for n in names)


def _device_lines(s: dict) -> list[str]:
    """The printed table of one device's section: ours ÷ plain PyTorch, wall clock and this process's CPU time."""
    rows = [
        ("CPT step ÷ plain fine-tuning step", "cpt_ratio", "≤ 1.05", _ms(s, "cpt", "plain")),
        (f"anchored CPT step ÷ plain step on the same {s['anchored_images']} images", "anchored_ratio", "≤ 1.10",
         _ms(s, "anchored", "plain_same_images")),
        ("(its reference minibatch read from disk ÷ that plain step)", "reference_read_ratio", "—",
         _ms(s, "reference_read")),
        ("(CPT's δ form, θ + δ through functional_call ÷ plain step)", "cpt_delta_ratio", "—", _ms(s, "cpt_delta")),
        ("(L2-SP step ÷ plain step)", "l2sp_ratio", "—", _ms(s, "l2sp")),
        ("(our finetune method's step ÷ plain step)", "finetune_ratio", "—", _ms(s, "finetune")),
        ("evaluate throughput ÷ bare inference loop", "evaluate_ratio", "≥ 0.90",
         f"{s['evaluate_images_per_s']:.0f} vs {s['bare_images_per_s']:.0f} images/s"),
        ("predict_logits throughput ÷ bare inference loop", "predict_logits_ratio", "≥ 0.90",
         f"{s['predict_logits_images_per_s']:.0f} vs {s['bare_images_per_s']:.0f} images/s"),
        (f"evaluation streamed from disk (batch {s['streamed_batch']}) ÷ bare loop on preloaded tensors (batch 1024)",
         "streamed_ratio", "≥ 0.90 CPU, ≥ 0.80 GPU",
         f"{s['streamed_images_per_s']:.0f} vs {s['bare_images_per_s']:.0f} images/s"),
    ]  # fmt: skip
    mib = 2**20
    return [
        "",
        f"## {s['device']}: {s['model']}, batch {s['batch_size']} (ours ÷ plain PyTorch)",
        "| ratio | wall clock | CPU time | target | sides (wall clock) |",
        "|---|---|---|---|---|",
        *(_ratio_row(s, *row) for row in rows),
        f"| CPT peak memory ÷ plain fine-tuning | {s['memory_ratio']:.3f} | | ≤ 1.15 | "
        f"{s['cpt_peak_bytes'] / mib:.2f} MiB vs {s['plain_peak_bytes'] / mib:.2f} MiB ({s['memory_measure']}; "
        f"δ form {s['memory_ratio_delta_form']:.3f}) |",
    ]


def _suite_lines(suites: list[str], report: dict) -> list[str]:
    """A full repair ÷ retraining from scratch per suite (its sections added to ``report``)."""
    # The suites' retraining functions run on the CPU, so the repair does too: same device both sides.
    lines = [
        "",
        "## repair vs retraining from scratch (CPU, both sides)",
        "| suite | repair ÷ retrain | repair | retrain | steps | tuning loop alone (÷ retrain) | "
        "image decoding (not in repair) |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in suites:
            sf = suite_figures(name, torch.device("cpu"), Path(tmp))
            report["sections"].append({"device": "cpu", **sf})
            lines.append(
                f"| {name} | {sf['repair_ratio']:.3f} | {sf['repair_s']:.1f} s | {sf['retrain_s']:.1f} s | "
                f"{sf['repair_steps']} | {sf['tuning_loop_s']:.2f} s ({sf['tuning_loop_ratio']:.3f}) | "
                f"{sf['decode_s']:.1f} s |"
            )
    return lines
