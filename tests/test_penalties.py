"""Penalties are pure functions: 0 at δ=0, positive after a step, and their gradient reaches δ."""

import pytest
import torch

from core.engine.penalties import PENALTIES, anchor_scales, penalty_value


@pytest.fixture()
def anchors():
    torch.manual_seed(0)
    return [torch.randn(8, 4, 3, 3), torch.randn(8), torch.randn(5, 8)]


@pytest.mark.parametrize("name", PENALTIES)
def test_zero_at_anchor(name, anchors):
    deltas = [torch.zeros_like(a, requires_grad=True) for a in anchors]
    assert float(penalty_value(name, deltas, anchor_scales(anchors))) == 0.0


@pytest.mark.parametrize("name", PENALTIES)
def test_positive_after_a_step_and_gradient_reaches_delta(name, anchors):
    deltas = [torch.zeros_like(a, requires_grad=True) for a in anchors]
    opt = torch.optim.SGD(deltas, lr=0.1)
    # One step of a task-like loss moves δ away from zero.
    loss = sum((d * torch.randn_like(d)).sum() for d in deltas)
    loss.backward()
    opt.step()
    opt.zero_grad()
    value = penalty_value(name, deltas, anchor_scales(anchors))
    assert float(value) > 0
    value.backward()
    for d in deltas:
        assert d.grad is not None and float(d.grad.abs().sum()) > 0


def test_l2_is_relative_change_independent_of_model_size():
    # A uniform 10 % change gives P = 0.01 for a tiny and for a large set of weights alike.
    for shape in [(10,), (512, 256, 3, 3)]:
        theta = [torch.randn(shape)]
        delta = [0.1 * theta[0]]
        assert float(penalty_value("l2", delta, anchor_scales(theta))) == pytest.approx(0.01, rel=1e-4)
        assert float(penalty_value("l1", delta, anchor_scales(theta))) == pytest.approx(0.1, rel=1e-4)


def test_nuclear_prefers_low_rank_change():
    theta = [torch.randn(16, 16)]
    scales = anchor_scales(theta)
    u, v = torch.randn(16, 1), torch.randn(1, 16)
    rank_one = u @ v
    full = torch.randn(16, 16)
    full = full * (rank_one.norm() / full.norm())  # same Frobenius norm
    assert float(penalty_value("nuclear", [rank_one], scales)) < float(penalty_value("nuclear", [full], scales))
    assert float(penalty_value("l2", [rank_one], scales)) == pytest.approx(float(penalty_value("l2", [full], scales)))


def test_unknown_penalty_names_the_choices(anchors):
    from core.errors import UserError

    with pytest.raises(UserError, match="l1\\+l2"):
        penalty_value("l3", anchors, anchor_scales(anchors))
