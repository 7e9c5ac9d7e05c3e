"""The training-step half of ``python -m core perf``: one optimizer step of ours ÷ plain PyTorch, and peak memory.

Each ratio's two sides run in interleaved blocks (A, B, A, B, …, the order alternating between repeats) and the
median block is taken, so drift in the machine's load hits both sides alike (:func:`interleaved`).

* **CPT step ÷ plain step**: :class:`core.engine.methods.cpt.CPT` ``update`` (θ' trained in place, the l2 pull
  towards θ added in closed form, Adam) ÷ plain fine-tuning written as a bare PyTorch loop (forward,
  cross-entropy, backward, Adam on θ: :class:`BareFineTune`). Beside it the δ form (θ + δ through
  ``functional_call``, what CPT was before it trained θ' in place), our own ``finetune`` method and
  :class:`core.engine.methods.l2sp.L2SP`.
* **anchored CPT step ÷ plain step on the same images**: CPT's default step with its function-space anchor
  (:mod:`core.engine.anchor`: the counterexamples and ``anchor_batch`` reference images in one forward, the old
  model's answers computed once when the reference is set, one backward), its reference images read from a file
  the way a repair reads them (:class:`core.engine.inference.DiskImages`) ÷ a plain step on as many images. The
  reference minibatch's read alone is shown beside it.
* **memory**: peak memory of a CPT step ÷ a plain step. On CUDA ``torch.cuda.max_memory_allocated``; on a CPU,
  where PyTorch keeps no allocator statistics, the bytes of every distinct tensor storage alive at the
  forward/backward boundary: weights (frozen and trainable), gradients, optimizer state and the tensors autograd
  saved for backward.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from core.engine.configs import make_config
from core.engine.devices import autocast
from core.engine.inference import DiskImages
from core.engine.methods import METHODS

REFERENCE_IMAGES = 512  # reference images on disk for the anchored step (a minibatch of them is read each step)


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


def disk_reference(shape: tuple[int, ...], n: int = REFERENCE_IMAGES, seed: int = 3) -> DiskImages:
    """``n`` random uint8 images of ``shape`` in an unnamed file, read back as a repair reads its reference images."""
    with tempfile.TemporaryFile() as fh:  # the mapping outlives the name
        pixels = np.memmap(fh, dtype=np.uint8, mode="w+", shape=(n, *shape))
    pixels[:] = np.random.default_rng(seed).integers(0, 256, pixels.shape, dtype=np.uint8)
    return DiskImages(pixels, [0.5] * shape[0], [0.25] * shape[0])


def _blocks(sides: dict[str, tuple[Callable, tuple]], steps: int) -> dict[str, Callable[[], None]]:
    def block(fn, args):
        def run():
            for _ in range(steps):
                fn(*args)

        return run

    return {name: block(fn, args) for name, (fn, args) in sides.items()}


def step_figures(base: nn.Module, x, y, device, repeats: int, steps: int) -> dict:
    """Every step ratio and the memory ratio of one model and batch on one device."""
    cpt = METHODS["cpt"](base, make_config("cpt", {}), device)
    delta = METHODS["cpt"](base, make_config("cpt", {}), device, delta_form=True)
    anchored = METHODS["cpt"](base, make_config("cpt", {}), device)
    anchored.use_reference(disk_reference(tuple(x.shape[1:])))
    k = anchored.config.anchor_batch
    g = torch.Generator().manual_seed(1)
    x_same = torch.cat([x, torch.randn(k, *x.shape[1:], generator=g).to(device)])  # as many images as anchored
    y_same = torch.cat([y, torch.randint(0, 10, (k,), generator=g).to(device)])
    bare, bare_same = BareFineTune(base, device), BareFineTune(base, device)
    sides = {
        "cpt": (cpt.update, (x, y)),
        "plain": (bare.update, (x, y)),
        "cpt_delta": (delta.update, (x, y)),
        "finetune": (METHODS["finetune"](base, make_config("finetune", {}), device).update, (x, y)),
        "l2sp": (METHODS["l2sp"](base, make_config("l2sp", {}), device).update, (x, y)),
        "anchored": (anchored.update, (x, y)),
        "plain_same_images": (bare_same.update, (x_same, y_same)),
        "reference_read": (anchored.reference.batch, (k,)),
    }
    t, c = interleaved(_blocks(sides, steps), repeats, device)
    per = {name: v / steps for name, v in t.items()}
    cpu = {name: v / steps for name, v in c.items()}
    out = {f"{name}_step_s": v for name, v in per.items()}
    out |= {f"{name}_step_cpu_s": v for name, v in cpu.items()}
    for name, plain in (("cpt", "plain"), ("cpt_delta", "plain"), ("finetune", "plain"), ("l2sp", "plain"),
                        ("anchored", "plain_same_images"), ("reference_read", "plain_same_images")):  # fmt: skip
        out[f"{name}_ratio"] = per[name] / per[plain]
        out[f"{name}_ratio_cpu_time"] = cpu[name] / cpu[plain]
    out["anchored_images"] = len(x_same)
    return out | memory_figures(base, x, y, device)


def memory_figures(base: nn.Module, x, y, device) -> dict:
    """Peak memory of a CPT step (θ' in place, and the δ form) ÷ a plain fine-tuning step."""
    cfg = make_config("cpt", {})
    makers = {
        "cpt": lambda: METHODS["cpt"](base, cfg, device),
        "cpt_delta": lambda: METHODS["cpt"](base, cfg, device, delta_form=True),
        "plain": lambda: BareFineTune(base, device),
    }
    peaks = {}
    for name, make in makers.items():
        if device.type == "cuda":

            def build(make=make):
                m = make()
                return m, lambda: m.update(x, y)

            peaks[name] = cuda_peak_bytes(build, device)
        else:
            m = make()
            modules = [m.model] if name == "plain" else [m.base, m.model]
            peaks[name] = accounted_peak_bytes(modules, lambda m=m: m.optimizer, lambda m=m: m.update(x, y))
    how = (
        "torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "distinct tensor storages at the forward/backward boundary"
    )
    return {
        "cpt_peak_bytes": peaks["cpt"],
        "cpt_delta_peak_bytes": peaks["cpt_delta"],
        "plain_peak_bytes": peaks["plain"],
        "memory_ratio": peaks["cpt"] / peaks["plain"],
        "memory_ratio_delta_form": peaks["cpt_delta"] / peaks["plain"],
        "memory_measure": how,
    }
