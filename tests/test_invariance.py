"""The invariance hint (core/engine/invariance.py) and its term inside change-penalized tuning."""

from __future__ import annotations

import pytest
import torch

from core.engine.configs import make_config
from core.engine.invariance import Invariance, invariance, parse_region
from core.engine.methods import get_method
from core.errors import UserError
from core.formats.architectures import SmallCNN


def _x():
    return torch.randn(8, 3, 10, 10, generator=torch.Generator().manual_seed(0))


def test_none_is_no_hint_and_bad_regions_are_refused():
    assert invariance("none") is None
    assert parse_region("0,0,0.2,0.2; 0.8,0.8,1,1") == [(0, 0, 0.2, 0.2), (0.8, 0.8, 1, 1)]
    for bad in ("", "0,0,1", "0.5,0,0.2,1", "0,0,1.5,1"):
        with pytest.raises(UserError):
            parse_region(bad)
    with pytest.raises(UserError):
        Invariance("texture")


def test_colour_changes_each_channel_but_keeps_the_spatial_pattern():
    x = _x()
    y = Invariance("colour", seed=1)(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    # a per-channel affine map (and a channel shuffle) keeps every channel perfectly correlated with one input channel
    for i in range(len(x)):
        corr = torch.corrcoef(torch.cat([x[i].reshape(3, -1), y[i].reshape(3, -1)]))[3:, :3].abs()
        assert torch.allclose(corr.max(1).values, torch.ones(3), atol=1e-4)


def test_flip_always_flips_and_region_blanks_only_its_box():
    x = _x()
    y = Invariance("flip", seed=2)(x)
    for i in range(len(x)):
        assert any(torch.equal(y[i], f) for f in (x[i].flip(2), x[i].flip(1), x[i].flip(1).flip(2)))
    z = Invariance("region", "0,0,0.3,0.5")(x)
    assert (
        (z[:, :, :5, :3] == 0).all()
        and torch.equal(z[:, :, 5:], x[:, :, 5:])
        and torch.equal(z[:, :, :, 3:], x[:, :, :, 3:])
    )


def test_the_hint_is_a_term_of_cpt_whose_gradient_reaches_delta():
    torch.manual_seed(0)
    base = SmallCNN(3, 3, width=8).eval()
    cfg = make_config("cpt", {"invariance": "colour", "anchor": 0.0, "lr": 1e-2, "lr_scale": "none"})
    m = get_method("cpt")(base, cfg, torch.device("cpu"))
    m.use_reference(torch.randn(32, 3, 12, 12, generator=torch.Generator().manual_seed(1)))
    stats = m.update(torch.randn(4, 3, 12, 12), torch.tensor([0, 1, 2, 0]))
    assert stats.invariance > 0  # the old model itself is not colour-invariant
    assert any(float(d.detach().abs().sum()) > 0 for d in m.changes())
