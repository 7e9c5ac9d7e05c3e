"""Memory Aware Synapses (MAS): fine-tuning with an importance-weighted pull towards θ₀.

Aljundi, Babiloni, Elhoseiny, Rohrbach and Tuytelaars, "Memory Aware Synapses: Learning What
(not) to Forget", ECCV 2018. Eq. 2–3: the importance of parameter θᵢ is the mean, over unlabelled
images x_k, of the absolute gradient of the squared L2 norm of the network's output,

    Ωᵢ = 1/N Σ_k | ∂ ‖f_θ(x_k)‖²₂ / ∂θᵢ |,

and tuning adds the penalty λ Σᵢ Ωᵢ (θᵢ − θ₀ᵢ)² (Eq. 5). Weights the old function is sensitive to
are held in place; the others may move. No labels are needed for Ω.

Normalisation, as for every penalty here (:mod:`core.engine.penalties`): the sum is divided by
Σᵢ Ωᵢ θ₀ᵢ², so λ is "loss per unit of importance-weighted relative change" and the auto-strength
sweep uses the same candidates as for change-penalized tuning.

Ω comes from the unlabelled images passed to the method (``--unlabeled``, or the candidate pool in
the benchmark). Without any, it is computed from the images of the first counterexample batch,
labels unused; ``importance_source`` records which. Per-example gradients use
:func:`torch.func.vmap` over :func:`torch.func.grad` with the network in eval mode.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, grad, vmap

from core.engine.methods.finetune import FineTune


def mas_importance(
    model: torch.nn.Module, names: list[str], images: torch.Tensor, chunk: int = 32
) -> list[torch.Tensor]:
    """Ω for the parameters ``names`` of ``model``: mean |∂‖f(x)‖²/∂θ| over ``images`` (Eq. 2)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    tuned = {n: params[n] for n in names}
    fixed = {n: p for n, p in params.items() if n not in tuned}
    buffers = dict(model.named_buffers())

    def sq_norm(p: dict, x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**fixed, **p}, buffers), (x.unsqueeze(0),))
        return out.float().pow(2).sum()

    per_example = vmap(grad(sq_norm), in_dims=(None, 0))
    total = {n: torch.zeros_like(t) for n, t in tuned.items()}
    # ``chunk`` images at a time: their per-example gradients are chunk copies of the tuned weights (1.4 GB for
    # a ResNet-18 at 32), where 256 at once were 11 GB
    for start in range(0, len(images), chunk):
        grads = per_example(tuned, images[start : start + chunk])
        for n in total:
            total[n] += grads[n].abs().sum(0)
    return [total[n] / max(len(images), 1) for n in names]


class MAS(FineTune):
    name = "mas"

    def __init__(self, base_model, config, device, unlabeled=None):
        super().__init__(base_model, config, device, unlabeled)
        self.omega: list[torch.Tensor] | None = None
        self.importance_source = ""
        if unlabeled is not None and len(unlabeled):
            self._set_importance(unlabeled[: config.importance_images], "unlabeled images")

    def _set_importance(self, images: torch.Tensor, source: str) -> None:
        self.omega = mas_importance(self.base, self.names, images.to(self.device))
        with torch.no_grad():
            scale = sum(float((o * a.float().pow(2)).sum()) for o, a in zip(self.omega, self.anchors))
        self.scale = scale if scale > 0 else 1.0
        self.importance_source = source

    def update(self, x, y):
        if self.omega is None:  # no unlabelled images: Ω from the counterexample images, labels unused
            self._set_importance(x[: self.config.importance_images], "counterexample images (no unlabeled given)")
        return super().update(x, y)

    def penalty(self) -> torch.Tensor:
        if self.omega is None:
            return torch.zeros((), device=self.device)
        diffs = torch._foreach_sub(list(self._params), list(self.anchors))
        weighted = sum((o * d.float().pow(2)).sum() for o, d in zip(self.omega, diffs))
        return self.config.strength * weighted / self.scale
