"""Augmented copies of the counterexamples: more constraints from the same few labels.

A handful of counterexamples is memorised within a few steps; after that their loss is near zero and the run learns
nothing more about the invariance they stand for. Drawing a fresh random transform of each counterexample at every
step keeps the task loss informative for longer (the model has to be right on every crop, not on one image).

The transforms are torchvision's own functional ones (``torchvision.transforms.v2.functional``), with their random
parameters drawn from the loop's seeded generator so that a run is reproducible:

* ``crop``: ``RandomResizedCrop``, a crop of 70–100 % of the area (aspect ratio 3/4–4/3) resized back to the input
  size: position and scale change, nothing else;
* ``flip``: a horizontal flip with probability ½ (photos; never digits or text, whose meaning a flip changes);
* ``erase``: ``RandomErasing``, a rectangle of 2–12 % of the image set to 0 (the normalised mean).

Colour jitter is deliberately not offered: it helps only against colour shortcuts and would hide whether a default
works on other kinds. ``none`` turns augmentation off. Policies combine with ``+`` (``crop+flip``).
"""

from __future__ import annotations

import math

import torch

from core.engine.configs import AUGMENT_POLICIES as POLICIES
from core.errors import UserError

PARTS = ("crop", "flip", "erase")
CROP_SCALE = (0.7, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
ERASE_SCALE = (0.02, 0.12)


def parse_policy(policy: str) -> tuple[str, ...]:
    """The parts of a policy name (``"crop+flip"`` → ``("crop", "flip")``); ``none`` → ``()``."""
    name = (policy or "none").strip().lower()
    if name == "none":
        return ()
    parts = tuple(p.strip() for p in name.split("+"))
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise UserError(f"unknown augmentation {'+'.join(bad)!r}; choose from: {', '.join(POLICIES)}")
    return parts


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _crop_box(h: int, w: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box: area share in CROP_SCALE, log-uniform aspect ratio in CROP_RATIO."""
    area = h * w
    for _ in range(10):
        target = area * _uniform(g, *CROP_SCALE)
        ratio = math.exp(_uniform(g, math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            return top, left, ch, cw
    return 0, 0, h, w


def _erase_box(h: int, w: int, g: torch.Generator) -> tuple[int, int, int, int]:
    area = h * w * _uniform(g, *ERASE_SCALE)
    ratio = math.exp(_uniform(g, math.log(0.3), math.log(3.3)))
    eh = max(1, min(h, int(round(math.sqrt(area / ratio)))))
    ew = max(1, min(w, int(round(math.sqrt(area * ratio)))))
    top = int(torch.randint(0, h - eh + 1, (), generator=g))
    left = int(torch.randint(0, w - ew + 1, (), generator=g))
    return top, left, eh, ew


class Augmenter:
    """Applies a policy to a batch of normalised images [N,C,H,W], one random draw per image."""

    def __init__(self, policy: str, seed: int = 0):
        self.parts = parse_policy(policy)
        self.gen = torch.Generator().manual_seed(50_021 + seed)

    def __bool__(self) -> bool:
        return bool(self.parts)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.parts:
            return x
        # Imported here: torchvision's transforms import torch._dynamo (about a second), which a process that
        # never augments (the task worker, every CLI command) should not pay for at start.
        from torchvision.transforms.v2 import functional as TF  # noqa: N812

        device = x.device
        out = x.detach().cpu().clone()
        h, w = out.shape[-2:]
        for i in range(len(out)):
            img = out[i]
            if "crop" in self.parts:
                top, left, ch, cw = _crop_box(h, w, self.gen)
                img = TF.resized_crop(img, top, left, ch, cw, [h, w], antialias=True)
            if "flip" in self.parts and float(torch.rand((), generator=self.gen)) < 0.5:
                img = TF.horizontal_flip(img)
            if "erase" in self.parts:
                top, left, eh, ew = _erase_box(h, w, self.gen)
                img = TF.erase(img, top, left, eh, ew, torch.zeros(()))
            out[i] = img
        return out.to(device)


def augmenter(policy: str, seed: int = 0) -> Augmenter | None:
    """An :class:`Augmenter` for ``policy``, or None for ``none``."""
    a = Augmenter(policy, seed)
    return a if a else None
