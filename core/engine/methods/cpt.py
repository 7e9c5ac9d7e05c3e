"""Change-penalized tuning (CPT): the product's method.

Penzel, Stein and Denzler, "Reducing Bias in Pre-trained Models by Tuning while Penalizing
Change", VISAPP 2024 (arXiv 2404.12292), Eq. 1: the frozen weights θ get a trainable δ of the same
shape, initialised to zero, and the model computes with θ + δ. Only δ is trained, on

    L(δ) = CE(f_{θ+δ}(x), y) + λ · P(δ)

with P one of :mod:`core.engine.penalties` (normalised by θ, so λ means the same for any model). At
step 0, θ + 0 = θ exactly, so the repaired model starts bit-for-bit equal to the old one. The
result merges into an ordinary model θ' = θ + δ; dropping δ rolls it back.

**Two forms of the same optimisation.** Every penalty here is a function of δ = θ' − θ, and the gradient of the
loss with respect to δ is its gradient with respect to θ' = θ + δ, so Adam (or the normalised step) sees the same
gradients and keeps the same state whether it moves δ or θ' itself. CPT therefore trains the merged weights θ' in
place (:class:`MergedWeights`, the default): an ordinary copy of the network whose tuned tensors are pulled towards
the frozen θ, with no :func:`torch.func.functional_call`, no θ + δ built every step (nor kept for backward), and the
merged model for free; δ = θ' − θ is formed when the penalty, the audit record or the strength after the fact needs
it (θ' − θ is exact in floating point while θ' is within a factor 2 of θ). The two forms agree to float rounding (θ'
is rounded to θ's precision at every step instead of once at the end); tests/test_cpt.py checks the weights after N
steps and that going back to step 0 gives θ bit for bit. :class:`DeltaModel`, the δ form (θ + δ applied through
``functional_call`` for one forward pass, the base module untouched), is kept where rounding θ' to θ's precision
is not harmless: the ``nuclear`` penalty, whose gradient U·Vᵀ comes from δ's singular vectors, which jump when δ's
singular values are close (after Adam's first step every entry of δ is about ±lr): measured on a small CNN, the
two forms agreed to 1e-6 after one step and differed by 80 % in the classifier's δ after two. It is also the
reference the in-place form is tested against (``CPT(..., delta_form=True)``).

**Importance-weighted change** (``importance="mas"``): P(δ) = Σ Ωᵢδᵢ² / Σ Ωᵢθᵢ² with MAS's Ω (Aljundi et al. 2018,
Eq. 2; :func:`core.engine.methods.mas.mas_importance`) computed once from the reference images (without any, from
the first counterexample batch, labels unused), so the weights the old answers depend on most are held and the
others may move; the closed-form pull becomes 2λΩδ/Σ Ωθ² in both forms. **Confidence-weighted anchor**
(``anchor_confidence`` γ > 0): each reference image's KL counts by max p_θ(x)^γ, normalised to mean 1 over the
reference images (:func:`core.engine.anchor.confidence_weights`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from core.engine.anchor import anchor_kl, confidence_weights, far_from
from core.engine.configs import IMPORTANCE_IMAGES, SIZE_REFERENCE, CPTConfig
from core.engine.devices import autocast
from core.engine.events import StepStats
from core.engine.inference import rows_on
from core.engine.invariance import invariance
from core.engine.methods.base import Method, add_l2_pull, merged_with, select_parameters, trainable_copy
from core.engine.methods.mas import mas_importance
from core.engine.mixing import cutmix, soft_cross_entropy
from core.engine.penalties import anchor_scales, importance_scale, penalty_value, weighted_l2
from core.errors import UserError


class DeltaModel(nn.Module):
    """A frozen base plus zero-initialised deltas for the named parameters: f_{θ+δ}."""

    def __init__(self, base: nn.Module, names: list[str]):
        super().__init__()
        self.base = base
        self.names = list(names)
        params = dict(base.named_parameters())
        self.anchors = [params[n] for n in self.names]
        self.deltas = nn.ParameterList([nn.Parameter(torch.zeros_like(params[n])) for n in self.names])

    def effective_parameters(self) -> dict[str, torch.Tensor]:
        # One fused add over every tensor (one kernel launch and one autograd node on a GPU, where a
        # separate a + d per tensor was hundreds of small launches a step); the same float sums.
        return dict(zip(self.names, torch._foreach_add(self.anchors, list(self.deltas))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, self.effective_parameters(), (x,), strict=False)

    def trainable(self) -> list[torch.Tensor]:
        return list(self.deltas)

    def diffs(self) -> list[torch.Tensor]:
        """δ itself (differentiable)."""
        return list(self.deltas)

    def pull_anchors(self) -> None:
        """The trainable tensors are δ itself: the l2 pull is towards 0."""
        return None

    @torch.no_grad()
    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """θ' = θ + δ as a state dict of the base architecture (buffers unchanged)."""
        return merged_with(self.base, self.effective_parameters())


class MergedWeights(nn.Module):
    """θ' trained in place: a copy of the frozen base whose named tensors are trainable (the others, and the
    buffers' values, are the base's), and δ = θ' − θ formed when asked for."""

    def __init__(self, base: nn.Module, names: list[str]):
        super().__init__()
        self.names = list(names)
        self.net, self.params = trainable_copy(base, self.names)
        base_params = dict(base.named_parameters())
        self.anchors = [base_params[n] for n in self.names]  # θ, frozen: the pull's target and step 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def trainable(self) -> list[torch.Tensor]:
        return self.params

    def diffs(self) -> list[torch.Tensor]:
        """δ = θ' − θ in one fused pass (differentiable in θ')."""
        return list(torch._foreach_sub(self.params, self.anchors))

    def pull_anchors(self) -> list[torch.Tensor]:
        """The l2 pull on θ' is towards θ."""
        return self.anchors

    @torch.no_grad()
    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """θ' as a state dict of the base architecture: the network itself."""
        return {k: v.detach().clone().cpu() for k, v in self.net.state_dict().items()}


class NormalizedGD(torch.optim.Optimizer):
    """Gradient descent with a step of fixed relative length: Δ = −lr·‖θ‖·g/‖g‖ over all tensors at
    once. Weights move in proportion to their gradient (Adam moves every weight by about lr), and a
    step changes the weights by the share ``lr`` of their norm, whatever the model's size."""

    def __init__(self, params, lr: float, scale: float):
        super().__init__(params, {"lr": lr})
        self.scale = scale

    @torch.no_grad()
    def step(self, closure=None):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads]))
        if not torch.isfinite(norm) or norm == 0:
            return None
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            torch._foreach_add_(ps, [p.grad for p in ps], alpha=-float(group["lr"] * self.scale / norm))
        return None


DELTA_FORM_PENALTIES = ("nuclear",)  # trained in the δ form (the module docstring says why)


class CPT(Method):
    name = "cpt"

    def __init__(self, base_model, config: CPTConfig, device, unlabeled=None, delta_form: bool | None = None):
        super().__init__(base_model, config, device, unlabeled)
        self.names = select_parameters(self.base, config.params)
        if delta_form is None:
            delta_form = config.penalty in DELTA_FORM_PENALTIES
        form = DeltaModel if delta_form else MergedWeights  # the module docstring: the same optimisation
        self.model = form(self.base, self.names).to(device)
        self.scales = anchor_scales(self.model.anchors)
        self.hint = invariance(config.invariance, config.invariance_region)  # core.engine.invariance, or None
        self.mix_gen = torch.Generator().manual_seed(80_021)  # core.engine.mixing: the composites' draws
        if config.importance != "none" and config.penalty != "l2":
            raise UserError(
                f"importance {config.importance} weights the l2 penalty; use penalty l2 or importance none",
                key="cpt_importance_l2",
                importance=config.importance,
            )
        self.omega: list[torch.Tensor] | None = None  # Ω of the importance-weighted penalty, once known
        self.omega_scale = 1.0
        self.importance_source = ""
        self.confidence_norm = 1.0  # mean of max p_old^γ over the anchor's reference images

    def trainable_parameters(self):
        return self.model.trainable()

    def changes(self) -> list[torch.Tensor]:
        """δ = θ' − θ per tuned tensor, detached (either form)."""
        with torch.no_grad():
            return [d.detach() for d in self.model.diffs()]

    def needs_reference(self) -> bool:
        """The function-space anchor, the invariance hint and CutMix use reference images too."""
        c = self.config
        wants = c.anchor > 0 or c.invariance != "none" or c.mix > 0 or c.importance != "none"
        return wants or super().needs_reference()

    def adopt_reference(self, ref, counterexamples=None) -> None:
        """The reference images; with ``anchor_skip``, the anchor leaves out those most like a counterexample;
        with ``importance``, Ω comes from them; with ``anchor_confidence``, the weights' mean over them."""
        super().adopt_reference(ref, counterexamples)
        c = self.config
        if ref is None:
            return
        if c.anchor_skip > 0 and counterexamples is not None:
            ref.anchor_rows = far_from(self.base, ref.x, counterexamples, c.anchor_skip, self.device)
        if c.importance == "mas":
            self._set_importance(rows_on(ref.x, slice(0, IMPORTANCE_IMAGES), self.device), "reference images")
        if c.anchor_confidence > 0:
            old = ref.old_log_probs if ref.anchor_rows is None else ref.old_log_probs[ref.anchor_rows]
            self.confidence_norm = float(old.exp().max(1).values.pow(c.anchor_confidence).mean())

    def _set_importance(self, images: torch.Tensor, source: str) -> None:
        self.omega = mas_importance(self.base, self.names, images)
        self.omega_scale = importance_scale(self.omega, self.model.anchors)
        self.importance_source = source

    def _pull_weights(self) -> tuple[list[torch.Tensor] | None, float]:
        """Ω and Σ Ωθ² of the importance-weighted l2 penalty, or (None, Σ‖θ‖²) for the plain one."""
        if self.config.importance == "none":
            return None, self.scales["l2"]
        if self.omega is None:
            raise RuntimeError("importance weights are set by use_reference or the first update")
        return self.omega, self.omega_scale

    def effective_lr(self) -> float:
        """The Adam step actually used: ``lr``, scaled by the number of tuned weights when
        ``lr_scale`` is "size" (see :class:`core.engine.configs.CPTConfig`)."""
        if self.config.lr_scale == "none":
            return self.config.lr
        n = sum(d.numel() for d in self.model.anchors)
        return self.config.lr * math.sqrt(SIZE_REFERENCE / max(n, 1))

    def make_optimizer(self):
        if self.config.optimizer == "ngd":
            return NormalizedGD(self.trainable_parameters(), lr=self.config.lr, scale=math.sqrt(self.scales["l2"]))
        return torch.optim.Adam(self.trainable_parameters(), lr=self.effective_lr())

    def forward(self, x):
        return self.model(x)

    def penalty(self):
        if self.config.importance != "none":
            weights, scale = self._pull_weights()
            return self.config.strength * weighted_l2(self.model.diffs(), weights, scale)
        return self.config.strength * penalty_value(self.config.penalty, self.model.diffs(), self.scales)

    def update(self, x, y):
        """One step; for ``l2`` the penalty's gradient 2λδ/Σ‖θ‖² is added in closed form, which keeps a
        CPT step within a few percent of a plain fine-tuning step (``python -m core perf``)."""
        if self.config.importance != "none" and self.omega is None:  # no reference images: Ω from these, as MAS
            self._set_importance(x[:IMPORTANCE_IMAGES], "counterexample images (no reference images)")
        if (self.config.anchor > 0 or self.hint is not None or self.config.mix > 0) and self.reference is not None:
            return self._anchored_update(x, y)
        if self.config.penalty != "l2":
            return super().update(x, y)
        weights, scale = self._pull_weights()
        params, anchors = self.trainable_parameters(), self.model.pull_anchors()
        return self.update_with_l2_pull(x, y, params, anchors, self.config.strength, scale, weights)

    def _anchored_update(self, x, y):
        """One step on CE + μ·KL on reference images + λ·P, both batches in one forward pass (eval mode,
        so the images do not interact)."""
        if self.optimizer is None:
            self.optimizer = self.make_optimizer()

        xr, old = self.reference.batch(self.config.anchor_batch)
        parts = [x, xr]
        if self.hint is not None:  # the invariance hint: transformed reference images keep the old answers
            xh, old_h = self.reference.batch(self.config.anchor_batch)
            parts.append(self.hint(xh))
        if self.config.mix > 0:  # CutMix of the counterexamples into reference images, labels mixed by area
            xm, old_m = self.reference.batch(self.config.anchor_batch)
            xm, target_m = cutmix(xm, old_m.exp(), x, y, self.mix_gen)
            parts.append(xm)
        with autocast(self.device):
            logits = self.forward(torch.cat(parts))
        task = nn.functional.cross_entropy(logits[: len(x)].float(), y)
        conf = self.config.anchor_confidence
        kl = anchor_kl(
            logits[len(x) : len(x) + len(xr)],
            old,
            confidence_weights(old, conf, self.confidence_norm) if conf else None,
        )
        at = len(x) + len(xr)
        hint = anchor_kl(logits[at : at + len(xh)], old_h) if self.hint is not None else None
        at += len(xh) if self.hint is not None else 0
        mix = soft_cross_entropy(logits[at:], target_m) if self.config.mix > 0 else None
        closed = self.config.penalty == "l2"
        pen = torch.zeros((), device=self.device) if closed else self.penalty()
        self.optimizer.zero_grad(set_to_none=True)
        total = task + self.config.anchor * kl + pen
        if hint is not None:
            total = total + self.config.invariance_weight * hint
        if mix is not None:
            total = total + self.config.mix * mix
        total.backward()
        if closed:
            params, anchors = self.trainable_parameters(), self.model.pull_anchors()
            weights, scale = self._pull_weights()
            pen = add_l2_pull(params, anchors, self.config.strength, scale, weights)
        self.optimizer.step()
        t, q, a = float(task.detach()), float(pen.detach()), float(kl.detach())
        h = float(hint.detach()) if hint is not None else None
        m = float(mix.detach()) if mix is not None else None
        loss = t + q + self.config.anchor * a
        loss += self.config.invariance_weight * h if h is not None else 0.0
        loss += self.config.mix * m if m is not None else 0.0
        return StepStats(loss, t, q, a, invariance=h, mix=m)

    def merged_state_dict(self):
        return self.model.merged_state_dict()

    def delta_state_dict(self):
        return {n: d.float().cpu().clone() for n, d in zip(self.names, self.changes())}
