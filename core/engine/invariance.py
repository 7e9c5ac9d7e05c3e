"""The invariance hint: what the user says should not matter, turned into many constraints on reference images.

A few counterexamples say "this image is a horse although it is tinted red"; the user often knows the general rule
behind them: *colour should not matter*, *where the mark sits should not matter*, *this region should not matter*.
The hint enforces it on the unlabelled reference images (:mod:`core.engine.anchor`), hundreds of them, not on the few
counterexamples: the repaired model's answer on a transformed reference image T(x) should be the old model's answer
on x,

    ν · KL( p_θ(x) ‖ p_{θ+δ}(T(x)) ),

which is a consistency term in the spirit of Model Patching (Goel et al., arXiv 2008.06775) and DISC
(arXiv 2305.00650), with the old model's answers on typical images (mostly right) as targets. The transforms work on
normalised images [N,C,H,W], one random draw per image, from a seeded generator:

* ``colour``: every channel gets its own random gain (0.5–1.5) and offset (±1 standard deviation), and with
  probability ½ the channels are shuffled: white balance, tint and colour are changed, shapes are not;
* ``flip``: a left-right flip, an up-down flip or both (where in the image a mark or an object sits);
* ``region``: the boxes of ``region`` (``x0,y0,x1,y1`` in fractions of the width and height, several separated by
  ``;``) are set to 0, the normalised mean: whatever is there (a tag, a watermark, a ruler) is removed.

Which hint helps where is measured in docs/BENCHMARKS.md; none is on by default.
"""

from __future__ import annotations

import torch

from core.engine.configs import INVARIANCES
from core.errors import UserError


def parse_region(text: str) -> list[tuple[float, float, float, float]]:
    """``"x0,y0,x1,y1;…"`` (fractions of width and height) → boxes, each checked to lie in the image."""
    boxes = []
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        try:
            x0, y0, x1, y1 = (float(v) for v in part.split(","))
        except ValueError:
            raise UserError(
                f"invariance_region: each box is x0,y0,x1,y1 in fractions of the image, got {part!r}"
            ) from None
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise UserError(f"invariance_region: a box must lie inside the image (0 ≤ x0 < x1 ≤ 1), got {part!r}")
        boxes.append((x0, y0, x1, y1))
    if not boxes:
        raise UserError("invariance 'region' needs invariance_region, e.g. 0,0,0.2,0.2 for the top-left corner")
    return boxes


class Invariance:
    """A random transform of a batch of normalised images for one hint."""

    def __init__(self, kind: str, region: str = "", seed: int = 0):
        if kind not in INVARIANCES or kind == "none":
            raise UserError(f"unknown invariance {kind!r}; choose from: {', '.join(INVARIANCES)}")
        self.kind = kind
        self.boxes = parse_region(region) if kind == "region" else []
        self.gen = torch.Generator().manual_seed(70_001 + seed)

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.gen)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        device, out = x.device, x.detach().cpu().clone()
        n, c, h, w = out.shape
        if self.kind == "colour":
            gain = 0.5 + self._rand(n, c, 1, 1)
            offset = 2.0 * self._rand(n, c, 1, 1) - 1.0
            out = out * gain + offset
            shuffle = self._rand(n) < 0.5
            for i in torch.nonzero(shuffle).flatten().tolist():
                out[i] = out[i, torch.randperm(c, generator=self.gen)]
        elif self.kind == "flip":  # left-right, up-down or both (never neither: that is the anchor's own term)
            which = torch.randint(1, 4, (n, 1, 1, 1), generator=self.gen)
            out = torch.where(which % 2 == 1, out.flip(3), out)
            out = torch.where(which >= 2, out.flip(2), out)
        else:
            for x0, y0, x1, y1 in self.boxes:
                top, left = int(y0 * h), int(x0 * w)
                out[:, :, top : max(top + 1, round(y1 * h)), left : max(left + 1, round(x1 * w))] = 0
        return out.to(device)


def invariance(kind: str, region: str = "", seed: int = 0) -> Invariance | None:
    """An :class:`Invariance` for a hint, or None for ``none``."""
    return None if (kind or "none") == "none" else Invariance(kind, region, seed)
