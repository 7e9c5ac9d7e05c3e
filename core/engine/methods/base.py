"""The interface every repair method shares (DomainBed-style: ``update`` and ``predict``).

A method wraps a frozen base model. ``update(x, y)`` takes one optimizer step on a batch of
counterexamples and returns its :class:`core.engine.events.StepStats`; ``predict(x)`` returns logits of
the *current* repaired model. :class:`RepairMethod` is everything the loop (:mod:`core.engine.loop`) and
a whole repair (:mod:`core.engine.repair`) rely on; :class:`Method` implements it, so each method file
holds only what makes that method different.

The network always runs in eval mode: BatchNorm running statistics are never updated from a
handful of images and dropout is off (docs/DESIGN.md §3).

Each method is registered once, in :data:`core.engine.configs.SPECS` (name, title, settings class),
its implementation class in :data:`core.engine.methods.IMPLEMENTATIONS`.
"""

from __future__ import annotations

import copy
import fnmatch
from typing import ClassVar, Protocol

import torch
from torch import nn

from core.engine.anchor import Reference
from core.engine.configs import MethodConfig
from core.engine.devices import autocast
from core.engine.events import StepStats
from core.errors import UserError
from core.formats.architectures import last_linear


def select_parameters(model: nn.Module, spec: str) -> list[str]:
    """Resolve a parameter-subset spec ("all", "classifier", or fnmatch patterns) to names."""
    names = [n for n, _ in model.named_parameters()]
    spec = (spec or "all").strip()
    if spec in ("all", "*"):
        return names
    if spec == "classifier":
        found = last_linear(model)
        if found is None:
            raise UserError("params='classifier': this model has no linear layer")
        return [n for n in names if n.rsplit(".", 1)[0] == found[0]]
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise UserError(
            f"params={spec!r} matches no parameter; names look like: {', '.join(names[:6])}"
            + (" …" if len(names) > 6 else "")
        )
    return chosen


CPU_PULL_CHUNK = 1 << 18  # elements per fused pass of the l2 pull on a CPU (see add_l2_pull)


def _chunks(params: list[torch.Tensor]) -> list[list[int]]:
    """Consecutive groups of the tensors' indices: one group on a GPU (one fused launch); on a CPU, groups of about
    :data:`CPU_PULL_CHUNK` elements, whose temporaries the allocator reuses instead of paging in fresh memory for a
    whole model's worth of differences every step (measured: the pull cost 10 % of a ResNet-18 step at 64 px in
    one group, 4 % in groups)."""
    if not params or params[0].device.type != "cpu":
        return [list(range(len(params)))]
    groups, current, size = [], [], 0
    for i, t in enumerate(params):
        if current and size + t.numel() > CPU_PULL_CHUNK:
            groups.append(current)
            current, size = [], 0
        current.append(i)
        size += t.numel()
    return groups + [current] if current else groups


@torch.no_grad()
def add_l2_pull(
    params: list[torch.Tensor],
    anchors: list[torch.Tensor] | None,
    coef: float,
    scale: float,
    weights: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Add the gradient of coef·Σ‖d‖²/scale, which is 2·coef·d/scale, to each parameter's ``.grad`` in fused passes,
    and return the penalty's value. d = p − a for the ``anchors`` a (θ' − θ for CPT in place, θ − θ₀ for L2-SP), or
    p itself where ``anchors`` is None (CPT's δ form). p − a is exact in floating point while p is within a factor
    2 of a (Sterbenz) and is only a temporary; tests/test_cpt.py checks the result equals autograd's gradient.
    ``weights`` Ω (one tensor per parameter): the pull of coef·Σ Ω·d²/scale instead, gradient 2·coef·Ω·d/scale."""
    norms: list[torch.Tensor] = []
    for idx in _chunks(params):
        ps = [params[i] for i in idx]
        ds = ps if anchors is None else list(torch._foreach_sub(ps, [anchors[i] for i in idx]))
        if weights is None:
            norms.extend(torch._foreach_norm([d.float() for d in ds], 2))
            pulls = ds
        else:
            pulls = list(torch._foreach_mul(ds, [weights[i].to(ds[0].dtype) for i in idx]))
            norms.extend(((w.float() * d.float()).sum().sqrt() for w, d in zip(pulls, ds)))
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
        torch._foreach_add_(grads, pulls, alpha=2.0 * coef / scale)
        for p, g in zip(ps, grads):
            p.grad = g
    total = torch.stack(norms).pow(2).sum() if norms else torch.zeros(())
    return coef * total / scale


@torch.no_grad()
def merged_with(base: nn.Module, updates: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base's state dict (buffers included) with ``updates`` in place of those entries, cloned to
    the CPU: θ' for every method whose result is an ordinary model of the base architecture."""
    state = {k: v.detach() for k, v in base.state_dict().items()}
    state.update({k: v.detach() for k, v in updates.items()})
    return {k: v.clone().cpu() for k, v in state.items()}


def trainable_copy(base: nn.Module, names: list[str]) -> tuple[nn.Module, list[nn.Parameter]]:
    """A copy of ``base`` (in eval mode) in which the parameters ``names`` are new trainable tensors, starting
    equal to the base's, and every other parameter *is* the base's own frozen tensor (shared, not copied: tuning
    the classifier alone does not hold a second copy of the whole network). Returns the copy and the trainable
    parameters in the order of ``names``."""
    chosen = set(names)
    shared = {id(p): p for n, p in base.named_parameters() if n not in chosen}
    net = copy.deepcopy(base, memo=shared).eval()
    params = dict(net.named_parameters())
    for n in names:
        params[n].requires_grad_(True)
    return net, [params[n] for n in names]


def frozen_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of the base on ``device``, in eval mode, with every parameter frozen."""
    m = copy.deepcopy(model).to(device).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


class RepairMethod(Protocol):
    """What the loop and a whole repair rely on, and all they rely on."""

    config: MethodConfig
    reference: Reference | None  # typical unlabelled images: the anchor and the kept estimate

    def needs_reference(self) -> bool:
        """Whether the method uses reference images (its anchor, or the kept stopping rule)."""

    def use_reference(self, x: torch.Tensor | None, seed: int = 0, counterexamples: torch.Tensor | None = None) -> None:
        """``counterexamples``: for a method that keeps the reference images most like them out of its anchor."""

    def adopt_reference(self, ref: Reference | None, counterexamples: torch.Tensor | None = None) -> None:
        """Take reference images whose old answers are already known (automatic strength's trials share one)."""

    def update(self, x: torch.Tensor, y: torch.Tensor) -> StepStats:
        """One optimizer step on a batch of counterexamples."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the current repaired model."""

    def snapshot(self) -> list[torch.Tensor]: ...

    def restore(self, snap: list[torch.Tensor]) -> None: ...

    def halve_step(self) -> bool:
        """Halve the step size of the steps to come (the kept rule's backtracking); False when it cannot."""

    def merged_state_dict(self) -> dict[str, torch.Tensor] | None: ...

    def delta_state_dict(self) -> dict[str, torch.Tensor] | None: ...


class Method:
    """Base class of every method (a :class:`RepairMethod`). Subclasses set ``name`` and implement the hooks."""

    name: ClassVar[str] = ""  # the implementation's name: MethodSpec.base in core.engine.configs.SPECS

    def __init__(
        self, base_model: nn.Module, config: MethodConfig, device: torch.device, unlabeled: torch.Tensor | None = None
    ):
        self.config = config
        self.device = device
        self.base = frozen_copy(base_model, device)
        self.unlabeled = unlabeled
        self.reference: Reference | None = None  # set by use_reference
        self.optimizer: torch.optim.Optimizer | None = None

    def needs_reference(self) -> bool:
        """The kept stopping rule measures the share of reference answers kept (and the check rule falls back to
        it without a check split, and reports it beside the check split's numbers)."""
        return self.config.stop_rule in ("kept", "check")

    def use_reference(self, x: torch.Tensor | None, seed: int = 0, counterexamples: torch.Tensor | None = None) -> None:
        """Give the method typical unlabelled images (anchor, kept estimate); see :mod:`core.engine.anchor`."""
        ref = Reference(x, self.base, self.device, seed) if x is not None and len(x) else None
        self.adopt_reference(ref, counterexamples)

    def adopt_reference(self, ref: Reference | None, counterexamples: torch.Tensor | None = None) -> None:
        """The reference images as :meth:`use_reference` gives them, their old answers already computed: what a
        method derives from them (CPT: which the anchor leaves out, its weights) is derived here."""
        self.reference = ref

    def halve_step(self) -> bool:
        if self.optimizer is None:
            return False
        for group in self.optimizer.param_groups:
            group["lr"] *= 0.5
        return True

    # -- hooks ---------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self) -> torch.Tensor:
        """λ·P for penalised methods; 0 otherwise."""
        return torch.zeros((), device=self.device)

    def merged_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The repaired weights θ' as a state dict of the base architecture (None if not mergeable)."""
        raise NotImplementedError

    def delta_state_dict(self) -> dict[str, torch.Tensor] | None:
        """θ' − θ per changed parameter, float32 on the CPU: the audit record of what the repair changed
        (None if not mergeable)."""
        raise NotImplementedError

    # -- shared machinery ------------------------------------------------------------------
    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.trainable_parameters(), lr=self.config.lr)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> StepStats:
        """One optimizer step on (x, y)."""
        if self.optimizer is None:
            self.optimizer = self.make_optimizer()

        with autocast(self.device):
            logits = self.forward(x)
        task = nn.functional.cross_entropy(logits.float(), y)
        pen = self.penalty()
        loss = task + pen
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return StepStats(float(loss.detach()), float(task.detach()), float(pen.detach()))

    def update_with_l2_pull(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        params: list[torch.Tensor],
        anchors: list[torch.Tensor] | None,
        coef: float,
        scale: float,
        weights: list[torch.Tensor] | None = None,
    ) -> StepStats:
        """One step on CE + coef·Σ‖d‖²/scale, the penalty's gradient 2·coef·d/scale added in closed form.

        d = p − a for each trainable tensor p in ``params`` and its anchor a (θ' − θ for CPT, θ − θ₀ for L2-SP),
        or p itself where ``anchors`` is None (CPT's δ form). Building the penalty through autograd would cost
        a second pass over every tensor; fused passes give the same gradient (tests/test_cpt.py checks it).
        ``weights``: the importance-weighted pull (:func:`add_l2_pull`).
        """
        if self.optimizer is None:
            self.optimizer = self.make_optimizer()

        with autocast(self.device):
            logits = self.forward(x)
        task = nn.functional.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        task.backward()
        pen = add_l2_pull(params, anchors, coef, scale, weights)
        self.optimizer.step()
        t, q = float(task.detach()), float(pen)
        return StepStats(t + q, t, q)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:

        with autocast(self.device):
            return self.forward(x).float()

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.trainable_parameters()]

    @torch.no_grad()
    def restore(self, snap: list[torch.Tensor]) -> None:
        for p, s in zip(self.trainable_parameters(), snap):
            p.copy_(s)
