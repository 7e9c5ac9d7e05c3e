"""Strength after the fact (core/engine/interpolation.py): θ + α·δ between the old model and a repair.

A real CPT repair on a small CNN; the interpolated model at α = 0 must give the old model's answers
and at α = 1 the repair's, exactly; in between the weights lie on the segment.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.engine.inference import predict_logits
from core.engine.repair import PreparedData, run_repair
from core.engine.weight_interpolation import interpolate_state, interpolated_model, scaled_delta
from core.errors import UserError
from core.formats.architectures import SmallCNN
from core.formats.bundle import BundleMeta, ModelBundle

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def repaired():
    torch.manual_seed(0)
    base = SmallCNN(10, 3, width=16).eval()
    with torch.no_grad():
        for m in base.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(1)
    x_ce, y_ce = torch.randn(12, 3, 28, 28, generator=g), torch.randint(0, 10, (12,), generator=g)
    x_eval = torch.randn(200, 3, 28, 28, generator=g)
    y_eval = torch.randint(0, 10, (200,), generator=g).numpy()
    meta = BundleMeta("small_cnn", 10, [str(i) for i in range(10)], [3, 28, 28], [0.0] * 3, [1.0] * 3)
    data = PreparedData(x_ce, y_ce, x_eval, y_eval, ["a"] * 200, np.arange(200))
    # A low strength and enough steps that many answers change, so the ends are told apart.
    res = run_repair(ModelBundle(meta, base), None, method="cpt", config={"strength": 1.0, "max_steps": 40}, data=data)
    return base, res, x_eval


def _answers(model, x) -> np.ndarray:
    return predict_logits(model, x, CPU).argmax(1).numpy()


def test_alpha_zero_is_the_old_model_and_alpha_one_the_repair(repaired):
    base, res, x = repaired
    assert (res.before_pred != res.after_pred).sum() > 0  # the repair changed answers
    old = interpolated_model(base, res.merged_state, 0.0)
    new = interpolated_model(base, res.merged_state, 1.0)
    assert np.array_equal(_answers(old, x), res.before_pred)
    assert np.array_equal(_answers(new, x), res.after_pred)
    for k, v in interpolate_state(base.state_dict(), res.merged_state, 1.0).items():
        assert torch.equal(v, res.merged_state[k]), k
    for k, v in interpolate_state(base.state_dict(), res.merged_state, 0.0).items():
        assert torch.equal(v, base.state_dict()[k]), k


def test_halfway_lies_on_the_segment_and_the_old_model_is_untouched(repaired):
    base, res, _ = repaired
    before = {k: v.clone() for k, v in base.state_dict().items()}
    half = interpolate_state(base.state_dict(), res.merged_state, 0.5)
    delta = scaled_delta(base.state_dict(), res.merged_state, 0.5)
    assert delta, "the repair changed some weights"
    for k, d in delta.items():
        assert torch.allclose(half[k], before[k] + d, atol=1e-6), k
        assert torch.allclose(2 * d, res.delta[k], atol=1e-6), k
    interpolated_model(base, res.merged_state, 0.5)
    for k, v in base.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_zero_to_one_is_refused(repaired, alpha):
    base, res, _ = repaired
    with pytest.raises(UserError, match="between 0 and 1"):
        interpolate_state(base.state_dict(), res.merged_state, alpha)
