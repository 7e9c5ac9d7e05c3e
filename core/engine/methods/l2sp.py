"""L2-SP: fine-tuning with an L2 pull towards the starting point.

Li, Grandvalet and Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks", ICML 2018, Eq. 3: Ω(w) = α/2 · ‖w − w⁰‖²₂ for the pre-trained weights w⁰. Here every
layer, the classifier included, is pre-trained (the classes do not change), so the whole penalty
is the pull towards θ₀, trained on θ directly:

    L(θ) = CE(f_θ(x), y) + λ · ‖θ − θ₀‖²₂ / ‖θ₀‖²₂

The normalisation by ‖θ₀‖² is the one of :mod:`core.engine.penalties` (so λ means what it means for
change-penalized tuning and the auto-strength sweep applies unchanged). With the same optimiser
this is the same objective as change-penalized tuning with the ``l2`` penalty written in θ rather
than in δ = θ − θ₀ (docs/DESIGN.md §3); it is kept as the named baseline of the literature, and the
benchmark shows both side by side.

**Speed.** The penalty's gradient is known in closed form, ∂/∂θ [λ‖θ − θ₀‖²/‖θ₀‖²] = 2λ(θ − θ₀)/‖θ₀‖²,
so :meth:`L2SP.update` adds it to the task gradient in fused ``torch._foreach_*`` passes after
``backward()`` instead of building an autograd graph for the penalty, and the network runs on θ
directly (no ``functional_call``). A step then costs a plain fine-tuning step plus two passes over
the weights (``python -m core perf`` shows the ratio); the trajectory is the autograd one up to
float rounding (``tests/test_methods.py::test_l2sp_matches_cpt_l2``).
"""

from __future__ import annotations

import torch

from core.engine.events import StepStats
from core.engine.methods.finetune import FineTune
from core.engine.penalties import anchor_scales, l2_norm_sq


class L2SP(FineTune):
    name = "l2sp"

    def __init__(self, base_model, config, device, unlabeled=None):
        super().__init__(base_model, config, device, unlabeled)
        self.scale = anchor_scales(self.anchors)["l2"]

    def penalty(self) -> torch.Tensor:
        """λ·‖θ − θ₀‖²/‖θ₀‖², differentiable (the value; :meth:`update` uses its closed-form gradient)."""
        diffs = torch._foreach_sub(list(self._params), list(self.anchors))
        return self.config.strength * l2_norm_sq(diffs) / self.scale

    def update(self, x: torch.Tensor, y: torch.Tensor) -> StepStats:
        """One Adam step on CE + λ·P with P's gradient 2λ(θ − θ₀)/‖θ₀‖² added in closed form."""
        return self.update_with_l2_pull(x, y, list(self._params), list(self.anchors), self.config.strength, self.scale)
