"""``python -m core perf``: speed and memory of a repair, as ratios measured side by side in one run.

docs/DESIGN.md §8: speed is measured by ratios taken in one process on the same model, batch and
device, never by timed tests. Each ratio's two sides are timed in interleaved blocks (A, B, A, B, …,
with the order alternating between repeats) and the median block is taken, so drift in machine
load hits both sides alike.

* **step**: one change-penalized tuning step (:class:`core.engine.methods.cpt.CPT` ``update``: forward
  with θ + δ through ``functional_call``, cross-entropy, the normalised penalty, backward, Adam)
  ÷ one plain fine-tuning step written as a bare PyTorch loop (forward, cross-entropy, backward,
  Adam on θ). Target ≤ 1.10. Our own ``finetune`` method's step is shown beside it, and so is
  :class:`core.engine.methods.l2sp.L2SP`, the same objective as CPT-l2 written on θ with the penalty's
  gradient added in closed form: the way to bring the CPT step to target (see docs/BENCHMARKS.md).
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
* **memory**: peak memory of a CPT step ÷ a plain fine-tuning step. On CUDA:
  ``torch.cuda.max_memory_allocated``. On CPU, where PyTorch keeps no allocator statistics, the
  bytes of every distinct tensor storage alive at the forward/backward boundary are counted:
  weights (frozen and trainable), gradients, optimizer state and the tensors autograd saved for
  backward (CPT saves the θ + δ it computed; plain fine-tuning saves θ itself).

CPU figures use one thread by default (``--threads``), on both sides of every ratio: on a machine
shared with other jobs, multi-threaded kernels wait on descheduled threads and two runs of the same
work differed by 4× in our measurements. On CPU the step and evaluation ratios use the demo's small CNN; on a CUDA machine the same command
adds ResNet-50 at 224 px under bf16 autocast. Timing inputs are random tensors of the right
shape (the work does not depend on pixel values); the suite ratios use the suites' real images.

* **scale** (``--scale``): the Ray backend against the local one, :mod:`core.bench.scale`.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.bench import scale
from core.bench.benchmark import draw_counterexamples
from core.bench.suites import load_suite, prepare_suite_data
from core.engine.configs import make_config
from core.engine.devices import autocast, describe_device, select_device
from core.engine.inference import DiskImages, evaluate_model, predict_logits
from core.engine.methods import METHODS
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
    scale.add_arguments(p)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    sides: dict[str, Callable[[], None]], repeats: int, device: torch.device
) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall-clock and median process-CPU seconds per call of each side, timed in interleaved
    blocks (one warm-up call each). On a CPU shared with other jobs the wall-clock figure is at the
    mercy of their load; the CPU-time figure counts only this process's work, so both are reported."""
    for fn in sides.values():
        fn()
    _sync(device)
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    order = list(sides)
    for r in range(repeats):
        for name in order if r % 2 == 0 else reversed(order):
            _sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            sides[name]()
            _sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    med = statistics.median
    return {k: med(v) for k, v in wall.items()}, {k: med(v) for k, v in cpu.items()}


# -- training step ----------------------------------------------------------------------------
class BareFineTune:
    """Plain fine-tuning as anyone would write it: forward, cross-entropy, backward, Adam on θ."""

    def __init__(self, base: nn.Module, device: torch.device, lr: float = 1e-3):
        self.model = copy.deepcopy(base).to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.device = device
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast(self.device):
            logits = self.model(x)
        loss = nn.functional.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def _storages(tensors) -> dict[int, int]:
    out = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            s = t.untyped_storage()
            out[s.data_ptr()] = s.nbytes()
    return out


def _state_tensors(modules: list[nn.Module], optimizer) -> list[torch.Tensor]:
    ts: list[torch.Tensor] = []
    for m in modules:
        for p in m.parameters():
            ts.append(p)
            if p.grad is not None:
                ts.append(p.grad)
        ts.extend(m.buffers())
    if optimizer is not None:
        for st in optimizer.state.values():
            ts.extend(v for v in st.values() if isinstance(v, torch.Tensor))
    return ts


def accounted_peak_bytes(modules: list[nn.Module], optimizer_of: Callable[[], object], step: Callable[[], None]) -> int:
    """CPU peak estimate: distinct storages of weights, grads, optimizer state and saved activations.

    Taken on the second step, when gradients and optimizer state already exist (as in every step
    after the first)."""
    step()
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        saved.update(_storages([t]))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    static = _storages(_state_tensors(modules, optimizer_of()))
    return sum({**saved, **static}.values())


def cuda_peak_bytes(make: Callable[[], tuple[object, Callable[[], None]]], device: torch.device) -> int:
    """Peak allocated CUDA bytes while building a trainer and running three steps."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    holder, step = make()
    for _ in range(3):
        step()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) - start
    del holder, step
    torch.cuda.empty_cache()
    return peak


def step_figures(base: nn.Module, x, y, device, repeats: int, steps: int) -> dict:
    cfg = make_config("cpt", {})
    cpt = METHODS["cpt"](base, cfg, device)
    ft = METHODS["finetune"](base, make_config("finetune", {}), device)
    l2sp = METHODS["l2sp"](base, make_config("l2sp", {}), device)
    bare = BareFineTune(base, device)

    def block(fn):
        def run():
            for _ in range(steps):
                fn(x, y)

        return run

    t, c = interleaved(
        {
            "cpt": block(cpt.update),
            "plain": block(bare.update),
            "finetune": block(ft.update),
            "l2sp": block(l2sp.update),
        },
        repeats,
        device,
    )
    per = {k: v / steps for k, v in t.items()}
    per_cpu = {k: v / steps for k, v in c.items()}
    if device.type == "cuda":

        def make_cpt():
            m = METHODS["cpt"](base, cfg, device)
            return m, lambda: m.update(x, y)

        def make_bare():
            m = BareFineTune(base, device)
            return m, lambda: m.update(x, y)

        mem_cpt, mem_plain = cuda_peak_bytes(make_cpt, device), cuda_peak_bytes(make_bare, device)
        mem_how = "torch.cuda.max_memory_allocated"
    else:
        m1 = METHODS["cpt"](base, cfg, device)
        mem_cpt = accounted_peak_bytes([m1.base, m1.model], lambda: m1.optimizer, lambda: m1.update(x, y))
        m2 = BareFineTune(base, device)
        mem_plain = accounted_peak_bytes([m2.model], lambda: m2.optimizer, lambda: m2.update(x, y))
        mem_how = "distinct tensor storages at the forward/backward boundary"
    return {
        "cpt_step_s": per["cpt"],
        "plain_step_s": per["plain"],
        "finetune_method_step_s": per["finetune"],
        "step_ratio": per["cpt"] / per["plain"],
        "cpt_step_cpu_s": per_cpu["cpt"],
        "plain_step_cpu_s": per_cpu["plain"],
        "step_ratio_cpu_time": per_cpu["cpt"] / per_cpu["plain"],
        "l2sp_step_s": per["l2sp"],
        "l2sp_step_ratio": per["l2sp"] / per["plain"],
        "l2sp_step_ratio_cpu_time": per_cpu["l2sp"] / per_cpu["plain"],
        "cpt_peak_bytes": mem_cpt,
        "plain_peak_bytes": mem_plain,
        "memory_ratio": mem_cpt / mem_plain,
        "memory_measure": mem_how,
    }


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
        "repair_steps": res.metrics["steps"],
        "tuning_loop_s": res.history[-1]["elapsed_s"] if res.history else 0.0,
        "decode_s": decode_s,
        "retrain_s": retrain_s,
        "retrain_info": info,
        "repair_ratio": repair_s / retrain_s,
        "tuning_loop_ratio": (res.history[-1]["elapsed_s"] if res.history else 0.0) / retrain_s,
    }


def _device_configs(args, device) -> list[tuple]:
    """(device, label, model, input shape, batch size) for each device measured: the CPU, and the GPU if any."""
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


def _ratio_section(args, dev_name: str, label: str, model, shape: tuple, bs: int) -> tuple[dict, list[str]]:
    """One device's step, evaluation and memory ratios: (report section, markdown lines)."""
    dev = torch.device(dev_name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(bs, *shape, generator=g).to(dev)
    y = torch.randint(0, 10, (bs,), generator=g).to(dev)
    st = step_figures(model, x, y, dev, args.repeats, args.steps)
    n_eval = args.eval_images if dev_name == "cpu" else min(args.eval_images, 2048)
    ev = eval_figures(model, torch.randn(n_eval, *shape, generator=g), dev, args.repeats)
    lines = [
        "",
        f"## {dev_name}: {label}, batch {bs}",
        "| ratio | wall clock | CPU time | target | sides (wall clock) |",
        "|---|---|---|---|---|",
        f"| CPT step ÷ plain fine-tuning step | {st['step_ratio']:.3f} | {st['step_ratio_cpu_time']:.3f} | ≤ 1.10 | "
        f"{st['cpt_step_s'] * 1e3:.2f} ms vs {st['plain_step_s'] * 1e3:.2f} ms "
        f"(our finetune method: {st['finetune_method_step_s'] * 1e3:.2f} ms) |",
        f"| L2-SP step (CPT's l2 objective on θ, closed-form penalty gradient) ÷ plain step | "
        f"{st['l2sp_step_ratio']:.3f} | {st['l2sp_step_ratio_cpu_time']:.3f} | ≤ 1.10 | "
        f"{st['l2sp_step_s'] * 1e3:.2f} ms vs {st['plain_step_s'] * 1e3:.2f} ms |",
        f"| evaluate throughput ÷ bare inference loop | {ev['evaluate_ratio']:.3f} | "
        f"{ev['evaluate_ratio_cpu_time']:.3f} | ≥ 0.90 | "
        f"{ev['evaluate_images_per_s']:.0f} vs {ev['bare_images_per_s']:.0f} images/s |",
        f"| predict_logits throughput ÷ bare inference loop | {ev['predict_logits_ratio']:.3f} | "
        f"{ev['predict_logits_ratio_cpu_time']:.3f} | ≥ 0.90 | "
        f"{ev['predict_logits_images_per_s']:.0f} vs {ev['bare_images_per_s']:.0f} images/s |",
        f"| streamed from disk (batch {ev['streamed_batch']}) ÷ bare loop on preloaded tensors (batch 1024) | "
        f"{ev['streamed_ratio']:.3f} | {ev['streamed_ratio_cpu_time']:.3f} | ≥ 0.90 | "
        f"{ev['streamed_images_per_s']:.0f} vs {ev['bare_images_per_s']:.0f} images/s |",
        f"| CPT peak memory ÷ plain fine-tuning | {st['memory_ratio']:.3f} | | — | "
        f"{st['cpt_peak_bytes'] / 2**20:.2f} MiB vs {st['plain_peak_bytes'] / 2**20:.2f} MiB "
        f"({st['memory_measure']}) |",
    ]
    return {"device": dev_name, "model": label, "batch_size": bs, **st, **ev}, lines


def _suites_section(suites: list[str]) -> tuple[list[dict], list[str]]:
    """Repair ÷ retraining from scratch for each suite: (report sections, markdown lines)."""
    # The suites' retraining functions run on the CPU, so the repair does too: same device both sides.
    sections = []
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
            sections.append({"device": "cpu", **sf})
            lines.append(
                f"| {name} | {sf['repair_ratio']:.3f} | {sf['repair_s']:.1f} s | {sf['retrain_s']:.1f} s | "
                f"{sf['repair_steps']} | {sf['tuning_loop_s']:.2f} s ({sf['tuning_loop_ratio']:.3f}) | "
                f"{sf['decode_s']:.1f} s |"
            )
    return sections, lines


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
    for dev_name, label, model, shape, bs in _device_configs(args, device):
        section, more = _ratio_section(args, dev_name, label, model, shape, bs)
        report["sections"].append(section)
        lines += more
    suites = [s for s in (args.suites or []) if s != "none"]
    if suites:
        sections, more = _suites_section(suites)
        report["sections"] += sections
        lines += more
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
