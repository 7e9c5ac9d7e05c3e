"""Strength after the fact: the weights θ + α·δ between the old model (α = 0) and a repair (α = 1).

PAINT (Ilharco et al., "Patching open-vocabulary models by interpolating weights", NeurIPS 2022,
Eq. 1) interpolates θ_α = (1 − α)·θ_old + α·θ_new. With δ = θ_new − θ_old that is θ + α·δ: the
repair's change, scaled. A repair that fixed the counterexamples but broke too much elsewhere can so
be weakened without training again, and the trade-off is read off the evaluation set.

Both ends are exact: :func:`torch.lerp` returns ``start`` at weight 0 and ``end`` at weight 1 bit for
bit, so α = 0 gives the old model's answers and α = 1 the repair's (tests/test_interpolation.py).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from core.errors import UserError


def check_alpha(alpha: float) -> float:
    """α as a float in [0, 1], or a :class:`UserError` naming the bad value."""
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise UserError(f"the strength α must lie between 0 and 1, not {alpha}", "alpha_range", alpha=str(alpha))
    return a


def interpolate_state(
    base: dict[str, torch.Tensor], repaired: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """θ + α·(θ' − θ) for every floating-point entry of two state dicts of the same architecture.

    Integer buffers (BatchNorm's step counter) cannot be interpolated; they come from the nearer end.
    """
    a = check_alpha(alpha)
    if set(base) != set(repaired):
        raise UserError("the repaired weights do not match the old model's layers, so they cannot be interpolated")
    out = {}
    for name, b in base.items():
        r = repaired[name]
        if b.is_floating_point():
            out[name] = torch.lerp(b, r.to(b.dtype), a)
        else:
            out[name] = (b if a < 0.5 else r).clone()
    return out


def scaled_delta(base: dict[str, torch.Tensor], repaired: dict[str, torch.Tensor], alpha: float) -> dict:
    """α·δ per floating-point parameter that the repair changed: the audit record of an interpolated run."""
    a = check_alpha(alpha)
    return {
        k: (a * (repaired[k].float() - b.float())).contiguous()
        for k, b in base.items()
        if b.is_floating_point() and not torch.equal(b, repaired[k])
    }


def interpolated_model(model: nn.Module, repaired: dict[str, torch.Tensor], alpha: float) -> nn.Module:
    """A copy of ``model`` (the old model) carrying θ + α·δ, in eval mode; ``model`` is untouched."""
    out = copy.deepcopy(model).eval()
    out.load_state_dict(interpolate_state(model.state_dict(), repaired, alpha))
    return out
