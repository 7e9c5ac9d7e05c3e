"""CPT's θ + δ written per tensor (``a + d``) against one fused ``torch._foreach_add``: forward and backward of a
whole torchvision model through ``functional_call``, interleaved with a plain step, on the CPU with one thread.

    python scripts/bench_cpt_add.py

Prints each form's step ÷ the plain step (medians of 15 interleaved repeats). docs/BENCHMARKS.md quotes it.
"""

import statistics
import time

import torch
import torchvision
from torch.func import functional_call


def measure(arch: str, size: int, batch: int, repeats: int = 15) -> str:
    model = getattr(torchvision.models, arch)(num_classes=10).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, _ in model.named_parameters()]
    anchors = [p for _, p in model.named_parameters()]
    deltas = [torch.zeros_like(a, requires_grad=True) for a in anchors]
    plain_model = getattr(torchvision.models, arch)(num_classes=10).eval()
    x = torch.randn(batch, 3, size, size)

    def cpt_step(fused: bool) -> None:
        eff = torch._foreach_add(anchors, deltas) if fused else [a + d for a, d in zip(anchors, deltas)]
        functional_call(model, dict(zip(names, eff)), (x,), strict=False).sum().backward()
        for d in deltas:
            d.grad = None

    def plain_step() -> None:
        plain_model(x).sum().backward()
        plain_model.zero_grad(set_to_none=True)

    sides = {"per": lambda: cpt_step(False), "fused": lambda: cpt_step(True), "plain": plain_step}
    times: dict[str, list[float]] = {k: [] for k in sides}
    for f in sides.values():  # warm-up
        f()
    for _ in range(repeats):
        for k, f in sides.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    weights = sum(a.numel() for a in anchors) / 1e6
    return (
        f"{arch} ({len(names)} tensors, {weights:.1f} M weights) @ {size} px, batch {batch}: plain {med['plain']:.2f} ms;"
        f" per-tensor a + d {med['per']:.2f} ms ({med['per'] / med['plain']:.3f}); fused {med['fused']:.2f} ms "
        f"({med['fused'] / med['plain']:.3f})"
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    for arch, size, batch in (("mobilenet_v3_small", 32, 16), ("resnet50", 32, 8)):
        print(measure(arch, size, batch))
