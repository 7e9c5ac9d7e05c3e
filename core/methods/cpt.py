"""Change-penalized tuning (CPT): the product's method.

Penzel, Stein and Denzler, "Reducing Bias in Pre-trained Models by Tuning while Penalizing
Change", VISAPP 2024 (arXiv 2404.12292), Eq. 1: the frozen weights θ get a trainable δ of the same
shape, initialised to zero, and the model computes with θ + δ. Only δ is trained, on

    L(δ) = CE(f_{θ+δ}(x), y) + λ · P(δ)

with P one of :mod:`core.penalties` (normalised by θ, so λ means the same for any model). At
step 0, θ + 0 = θ exactly, so the repaired model starts bit-for-bit equal to the old one. The
result merges into an ordinary model θ' = θ + δ; dropping δ rolls it back.

θ + δ is applied with :func:`torch.func.functional_call`, which swaps the effective tensors in for
one forward pass without touching the base module, so θ stays unchanged by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from core.anchor import anchor_kl
from core.methods.base import STOP_RULES, Method, MethodConfig, hp, select_parameters
from core.penalties import PENALTIES, anchor_scales, penalty_value

# Defaults chosen on the three benchmark suites (docs/BENCHMARKS.md, "Choosing CPT's defaults").
# The paper's exact form: --set lr=0.001 --set anchor=0 --set stop_rule=paper.
LR_DEFAULT = 3e-5
ANCHOR_DEFAULT = 10.0
STOP_DEFAULT = "kept"
KEEP_FLOOR_DEFAULT = 0.99
MAX_STEPS_DEFAULT = 200
PAPER_FORM = {"lr": 1e-3, "anchor": 0.0, "stop_rule": "paper", "max_steps": 100}


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
        return {n: a + d for n, a, d in zip(self.names, self.anchors, self.deltas)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, self.effective_parameters(), (x,), strict=False)

    @torch.no_grad()
    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """θ' = θ + δ as a state dict of the base architecture (buffers unchanged)."""
        state = {k: v.detach().clone() for k, v in self.base.state_dict().items()}
        for n, a, d in zip(self.names, self.anchors, self.deltas):
            state[n] = (a + d).detach().clone()
        return {k: v.cpu() for k, v in state.items()}


@dataclass(frozen=True)
class CPTConfig(MethodConfig):
    lr: float = hp(
        LR_DEFAULT,
        "Adam step size. Adam's first steps move every weight by about this much whatever the penalty, so on "
        "large models the paper's 1e-3 changes far more than the penalty allows; 3e-5 lets the penalty and the "
        "anchor act.",
        min=1e-6,
        max=1e-1,
        log=True,
    )
    max_steps: int = hp(MAX_STEPS_DEFAULT, "Upper bound on optimizer steps.", min=1, max=5000)
    stop_rule: str = hp(
        STOP_DEFAULT,
        MethodConfig.__dataclass_fields__["stop_rule"].metadata["help"],
        choices=STOP_RULES,
    )
    keep_floor: float = hp(
        KEEP_FLOOR_DEFAULT,
        MethodConfig.__dataclass_fields__["keep_floor"].metadata["help"],
        min=0.0,
        max=1.0,
    )
    strength: float = hp(
        1000.0,
        "λ: how strongly any change to the model is penalised. Low = change freely; high = protect current "
        "behaviour. The penalty is relative to the model's own weights, so a value means the same for any model.",
        min=1.0,
        max=1e6,
        log=True,
    )
    penalty: str = hp(
        "l2",
        "Shape of the change penalty: l2 (small everywhere), l1 (few weights), l1+l2, nuclear (low rank).",
        choices=PENALTIES,
    )
    anchor: float = hp(
        ANCHOR_DEFAULT,
        "μ: weight of the function-space anchor, μ·KL(old model ‖ repaired model) on a minibatch of unlabelled "
        "reference images (typical inputs). Keeps the answers on ordinary images, not just the weights. "
        "0 = off (the paper's form); it also does nothing without reference images.",
        min=0.0,
        max=1e4,
    )
    anchor_batch: int = hp(64, "Reference images per step for the anchor.", min=1, max=4096)


class CPT(Method):
    name = "cpt"
    title = "Change-penalized tuning"
    Config = CPTConfig

    def __init__(self, base_model, config: CPTConfig, device, unlabeled=None):
        super().__init__(base_model, config, device, unlabeled)
        self.names = select_parameters(self.base, config.params)
        self.model = DeltaModel(self.base, self.names).to(device)
        self.scales = anchor_scales(self.model.anchors)

    def trainable_parameters(self):
        return list(self.model.deltas)

    def forward(self, x):
        return self.model(x)

    def penalty(self):
        return self.config.strength * penalty_value(self.config.penalty, list(self.model.deltas), self.scales)

    def update(self, x, y):
        """One step; for ``l2`` the penalty's gradient 2λδ/Σ‖θ‖² is added in closed form, which keeps a
        CPT step within a few percent of a plain fine-tuning step (``python -m core perf``)."""
        if self.config.anchor > 0 and self.reference is not None:
            return self._anchored_update(x, y)
        if self.config.penalty != "l2":
            return super().update(x, y)
        deltas = list(self.model.deltas)
        return self.update_with_l2_pull(x, y, deltas, lambda: deltas, self.config.strength, self.scales["l2"])

    def _anchored_update(self, x, y):
        """One step on CE + μ·KL on reference images + λ·P, both batches in one forward pass (eval mode,
        so the images do not interact)."""
        if self.optimizer is None:
            self.optimizer = self.make_optimizer()
        from core.devices import autocast
        from core.penalties import l2_norm_sq

        xr, old = self.reference.batch(self.config.anchor_batch)
        with autocast(self.device):
            logits = self.forward(torch.cat([x, xr]))
        task = nn.functional.cross_entropy(logits[: len(x)].float(), y)
        kl = anchor_kl(logits[len(x) :], old)
        deltas = list(self.model.deltas)
        closed = self.config.penalty == "l2"
        pen = torch.zeros((), device=self.device) if closed else self.penalty()
        self.optimizer.zero_grad(set_to_none=True)
        (task + self.config.anchor * kl + pen).backward()
        if closed:
            with torch.no_grad():
                coef, scale = self.config.strength, self.scales["l2"]
                pen = coef * l2_norm_sq(deltas) / scale
                grads = [d.grad if d.grad is not None else torch.zeros_like(d) for d in deltas]
                torch._foreach_add_(grads, deltas, alpha=2.0 * coef / scale)
                for d, g in zip(deltas, grads):
                    d.grad = g
        self.optimizer.step()
        t, q, a = float(task.detach()), float(pen.detach()), float(kl.detach())
        return {"loss": t + q + self.config.anchor * a, "task_loss": t, "penalty": q, "anchor": a}

    def merged_state_dict(self):
        return self.model.merged_state_dict()

    def delta_state_dict(self):
        return {n: d.detach().float().cpu().clone() for n, d in zip(self.names, self.model.deltas)}
