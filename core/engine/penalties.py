"""Change penalties P(δ) as pure functions (docs/DESIGN.md §3; Penzel et al. 2024, Eq. 1).

The tuning loss is ``L(δ) = CE(f_{θ+δ}(x), y) + λ · P(δ)``. Each penalty here takes the list of δ
tensors and the matching frozen θ tensors and returns a scalar that is exactly 0 at δ = 0.

**Normalisation, so that one λ means the same for any model.** Every penalty is divided by the
same norm of the anchor θ, taken over the tuned parameters:

* ``l2``      P = Σ‖δ‖²₂ / Σ‖θ‖²₂   — the squared *relative* change of the weights;
* ``l1``      P = Σ‖δ‖₁ / Σ‖θ‖₁     — relative absolute change (sparse: few weights move);
* ``l1+l2``   P = l1 + l2;
* ``nuclear`` P = Σ‖δ_l‖_* / Σ‖θ_l‖_* — matrices are reshaped to (out, in·k·k) so convolutions
  count as matrices; 1-D tensors (biases, norms) count as 1×n matrices, whose nuclear norm is
  their L2 norm. Low-rank change.

* ``l2`` weighted by importance (CPT's ``importance``): P = Σ Ωᵢδᵢ² / Σ Ωᵢθᵢ², MAS's Ω and MAS's
  normalisation (Aljundi et al. 2018, Eq. 5; :mod:`core.engine.methods.mas`).

A uniform 10 % change of every tuned weight gives ``l2`` = 0.01 and ``l1`` = 0.1 whatever the
model's size, so λ is "loss units per unit of relative change" for a 25k-parameter CNN and a
ResNet-50 alike. The denominators are constants (θ is frozen) and are computed once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from core.engine.configs import PENALTIES
from core.errors import UserError

Tensors = Sequence[torch.Tensor]


def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, -1) if t.ndim < 2 else t.reshape(t.shape[0], -1)


def _zero(ts: Tensors) -> torch.Tensor:
    return torch.zeros((), device=ts[0].device if len(ts) else "cpu")


def l2_norm_sq(ts: Tensors) -> torch.Tensor:
    # _foreach_norm does one fused pass over all tensors instead of a Python loop per tensor.
    if not len(ts):
        return _zero(ts)
    return torch.stack(torch._foreach_norm([t.float() for t in ts], 2)).pow(2).sum()


def l1_norm(ts: Tensors) -> torch.Tensor:
    if not len(ts):
        return _zero(ts)
    return torch.stack(torch._foreach_norm([t.float() for t in ts], 1)).sum()


def nuclear_norm(ts: Tensors) -> torch.Tensor:
    return sum((torch.linalg.svdvals(_as_matrix(t.float())).sum() for t in ts), _zero(ts))


def _raw(name: str) -> Callable[[Tensors], torch.Tensor]:
    return {"l2": l2_norm_sq, "l1": l1_norm, "nuclear": nuclear_norm}[name]


def anchor_scales(anchors: Tensors) -> dict[str, float]:
    """The constant denominators of every penalty for one set of frozen θ tensors."""
    with torch.no_grad():
        scales = {name: float(_raw(name)([a.detach().cpu() for a in anchors])) for name in ("l2", "l1", "nuclear")}
    # A zero anchor (e.g. all-zero biases only) would divide by zero; fall back to the raw norm.
    return {k: (v if v > 0 else 1.0) for k, v in scales.items()}


def penalty_value(name: str, deltas: Tensors, scales: dict[str, float]) -> torch.Tensor:
    """Normalised penalty ``name`` of the δ tensors, given :func:`anchor_scales` of θ."""
    if name == "l1+l2":
        return penalty_value("l1", deltas, scales) + penalty_value("l2", deltas, scales)
    if name not in ("l2", "l1", "nuclear"):
        raise UserError(f"unknown penalty {name!r}; choose one of {', '.join(PENALTIES)}")
    return _raw(name)(deltas) / scales[name]


def importance_scale(weights: Tensors, anchors: Tensors) -> float:
    """Σ Ωᵢθᵢ², the denominator of :func:`weighted_l2` (1.0 where it is 0)."""
    with torch.no_grad():
        total = sum(float((w.float() * a.detach().float().pow(2)).sum()) for w, a in zip(weights, anchors))
    return total if total > 0 else 1.0


def weighted_l2(deltas: Tensors, weights: Tensors, scale: float) -> torch.Tensor:
    """Σ Ωᵢδᵢ² / scale, with ``scale`` from :func:`importance_scale`: 0 at δ = 0, and a uniform 10 % change of
    every weight gives 0.01 as ``l2`` does."""
    return sum(((w * d.float().pow(2)).sum() for w, d in zip(weights, deltas)), _zero(deltas)) / scale
