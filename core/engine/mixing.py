"""CutMix between the counterexamples and the reference images: many constraints from a few labels, no hint needed.

A counterexample carries its class *and* the shortcut pointing elsewhere, and nobody has said where in the image the
shortcut sits. CutMix (Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
Features", ICCV 2019, Eq. 1) pastes a box of one image into another at the same place and mixes the labels by area:

    x̃ = M ⊙ x_ref + (1 − M) ⊙ x_ce,    ỹ = λ·p_θ(x_ref) + (1 − λ)·onehot(y_ce),    λ = area kept of x_ref,

with the reference image's label being the old model's answer on it (typical images: mostly right), and the loss
CE(ỹ, f_{θ+δ}(x̃)). Wherever the shortcut sits, some boxes carry the counterexample's shortcut into a typical image
whose answer should stay (mostly), and some carry the counterexample's object (whose label comes with it): the
model is asked to follow the object, not the shortcut, on hundreds of composites per counterexample. The box is
aligned (the same place in both images), so a shortcut that lives in a place stays in its place.
"""

from __future__ import annotations

import math

import torch

AREA = (0.1, 0.5)  # share of the image the pasted counterexample box covers


def cutmix(
    x_ref: torch.Tensor, p_ref: torch.Tensor, x_ce: torch.Tensor, y_ce: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composites of each reference image with a random counterexample, and their soft targets.

    ``p_ref``: the old model's probabilities on ``x_ref``. Returns (images, target probabilities)."""
    n, _, h, w = x_ref.shape
    k = p_ref.shape[1]
    pick = torch.randint(0, len(x_ce), (n,), generator=gen)
    out = x_ref.clone()
    share = torch.empty(n)
    for i in range(n):
        area = AREA[0] + (AREA[1] - AREA[0]) * float(torch.rand((), generator=gen))
        ratio = math.exp(math.log(0.5) + math.log(4.0) * float(torch.rand((), generator=gen)))
        bh = max(1, min(h, round(math.sqrt(area * h * w / ratio))))
        bw = max(1, min(w, round(math.sqrt(area * h * w * ratio))))
        top = int(torch.randint(0, h - bh + 1, (), generator=gen))
        left = int(torch.randint(0, w - bw + 1, (), generator=gen))
        src = x_ce[int(pick[i])].to(out.device)
        out[i, :, top : top + bh, left : left + bw] = src[:, top : top + bh, left : left + bw]
        share[i] = bh * bw / (h * w)
    onehot = torch.nn.functional.one_hot(y_ce[pick].cpu(), k).float().to(p_ref.device)
    s = share.to(p_ref.device).view(-1, 1)
    return out, (1 - s) * p_ref + s * onehot


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of −Σ target · log softmax(logits)."""
    return -(target * torch.nn.functional.log_softmax(logits.float(), dim=1)).sum(1).mean()
