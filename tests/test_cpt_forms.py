"""CPT trains θ' in place; the δ form is the same optimisation (core/engine/methods/cpt.py, docs/DESIGN.md §3).

Both forms must give the same weights after N steps (to float rounding: θ' is rounded to θ's precision at every
step), and going back to step 0 must give θ bit for bit, on a network with BatchNorm and dropout run the way the
loop runs it (eval mode: frozen statistics, dropout off).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.engine.configs import make_config
from core.engine.loop import PreparedData, train_method
from core.engine.methods import get_method
from core.engine.methods.cpt import DeltaModel, MergedWeights

CPU = torch.device("cpu")


class BNDropNet(nn.Module):
    """Conv, BatchNorm (non-trivial running statistics), ReLU, dropout, linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Linear(24, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        h = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.classifier(torch.flatten(self.pool(h), 1))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return BNDropNet().train()  # the methods must put their copies in eval mode themselves


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g)
    return x, y, torch.randn(32, 3, 8, 8, generator=g)


def _run(base, over: dict, delta_form: bool, steps: int, reference=None):
    cfg = make_config("cpt", {"lr_scale": "none", "anchor": 0.0, **over})
    m = get_method("cpt")(base, cfg, CPU, delta_form=delta_form)
    if reference is not None:
        m.use_reference(reference)
    x, y, _ = _data()
    stats = [m.update(x, y) for _ in range(steps)]
    return m, stats


CASES = [
    {"penalty": "l2", "strength": 50.0, "lr": 1e-2},
    {"penalty": "l1", "strength": 5.0, "lr": 1e-2},
    {"penalty": "l1+l2", "strength": 5.0, "lr": 1e-2},
    {"penalty": "l2", "strength": 50.0, "lr": 1e-2, "params": "classifier"},
    {"penalty": "l2", "strength": 50.0, "lr": 1e-2, "params": "conv.*,bn.weight"},
    {"penalty": "l2", "strength": 50.0, "lr": 1e-3, "optimizer": "ngd"},
    {"penalty": "l2", "strength": 50.0, "lr": 1e-2, "anchor": 5.0},
    {"penalty": "l1", "strength": 5.0, "lr": 1e-2, "anchor": 5.0, "invariance": "colour", "mix": 0.5},
    {"penalty": "l2", "strength": 50.0, "lr": 1e-2, "importance": "mas"},  # Ω from the counterexamples
    {"penalty": "l2", "strength": 50.0, "lr": 1e-2, "anchor": 5.0, "importance": "mas", "anchor_confidence": 2.0},
]


@pytest.mark.parametrize("over", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_in_place_and_delta_forms_give_the_same_weights(over):
    base = _net()
    ref = _data()[2] if over.get("anchor") else None
    merged, stats_m = _run(base, over, delta_form=False, steps=12, reference=ref)
    delta, stats_d = _run(base, over, delta_form=True, steps=12, reference=ref)
    assert isinstance(merged.model, MergedWeights) and isinstance(delta.model, DeltaModel)
    a, b = merged.merged_state_dict(), delta.merged_state_dict()
    assert a.keys() == b.keys()
    moved = 0.0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
        moved += float((a[k] - base.state_dict()[k]).abs().sum())
    assert moved > 0, "no step moved the weights: the comparison proves nothing"
    for k, d in merged.delta_state_dict().items():
        torch.testing.assert_close(d, delta.delta_state_dict()[k], rtol=1e-4, atol=1e-6, msg=k)
    for s, t in zip(stats_m, stats_d):
        assert s.task_loss == pytest.approx(t.task_loss, rel=1e-4, abs=1e-6)
        assert s.penalty == pytest.approx(t.penalty, rel=1e-3, abs=1e-9)
    # The same Adam state: its moments are those of the same gradients.
    if merged.config.optimizer == "adam":
        for p, q in zip(merged.trainable_parameters(), delta.trainable_parameters()):
            sa, sb = merged.optimizer.state[p], delta.optimizer.state[q]
            torch.testing.assert_close(sa["exp_avg_sq"], sb["exp_avg_sq"], rtol=1e-4, atol=1e-12)
            assert int(sa["step"]) == int(sb["step"]) == 12


def test_each_penalty_trains_in_the_form_chosen_for_it():
    """l2, l1 and l1+l2 train θ' in place; nuclear keeps δ at full precision (its gradient, from δ's singular
    vectors, is not continuous where they are close: rounding θ' to θ's precision changes its path)."""
    base = _net()
    for penalty, form in (
        ("l2", MergedWeights),
        ("l1", MergedWeights),
        ("l1+l2", MergedWeights),
        ("nuclear", DeltaModel),
    ):
        m = get_method("cpt")(base, make_config("cpt", {"penalty": penalty}), CPU)
        assert isinstance(m.model, form), penalty
    # One nuclear step from δ = 0 is the same in both forms (the same δ = 0 going in).
    merged, _ = _run(base, {"penalty": "nuclear", "strength": 5.0, "lr": 1e-2}, False, 1)
    delta, _ = _run(base, {"penalty": "nuclear", "strength": 5.0, "lr": 1e-2}, True, 1)
    for k, d in merged.delta_state_dict().items():
        torch.testing.assert_close(d, delta.delta_state_dict()[k], rtol=1e-5, atol=1e-7, msg=k)


def test_in_place_form_starts_as_the_base_and_trains_no_frozen_tensor():
    base = _net()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    m, _ = _run(base, {"penalty": "l2", "strength": 5.0, "lr": 1e-2, "params": "classifier"}, False, 0)
    x, _, _ = _data()
    with torch.no_grad():
        assert torch.equal(m.predict(x), base.eval()(x))  # step 0 is the old model, bit for bit
    base.train()
    m.update(*_data()[:2])
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())  # the caller's model untouched
    assert all(torch.equal(v, before[k]) for k, v in m.base.state_dict().items())  # the frozen θ too
    net = m.model.net
    assert not net.training and not net.bn.training and not net.drop.training
    assert net.conv.weight is m.base.conv.weight  # untuned tensors are the base's own, not copies
    assert net.classifier.weight is not m.base.classifier.weight
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["classifier.weight", "classifier.bias"]


@pytest.mark.parametrize("delta_form", [False, True])
def test_going_back_to_step_zero_gives_theta_bit_for_bit(delta_form):
    base = _net()
    theta = {k: v.clone() for k, v in base.state_dict().items()}
    m, _ = _run(base, {"penalty": "l2", "strength": 5.0, "lr": 1e-2}, delta_form, 0)
    origin = m.snapshot()
    x, y, _ = _data()
    for _ in range(5):
        m.update(x, y)
    assert any(float(d.abs().sum()) > 0 for d in m.changes())
    m.restore(origin)
    merged = m.merged_state_dict()
    assert all(torch.equal(merged[k], theta[k]) for k in theta)
    assert all(float(d.abs().sum()) == 0 for d in m.changes())
    with torch.no_grad():
        assert torch.equal(m.predict(x), base.eval()(x))


def test_a_loop_that_keeps_step_zero_returns_theta_bit_for_bit():
    """The kept rule with an unreachable floor goes back to step 0, the unchanged model."""
    base = _net()
    theta = {k: v.clone() for k, v in base.state_dict().items()}
    x, y, ref = _data()
    cfg = make_config(
        "cpt",
        {"lr_scale": "none", "lr": 5e-2, "anchor": 0.0, "stop_rule": "kept", "keep_floor": 1.0, "backtracks": 0,
         "max_steps": 10, "min_steps": 0},
    )  # fmt: skip
    m = get_method("cpt")(base, cfg, CPU)
    m.use_reference(ref)
    result = train_method(m, PreparedData(x, y), CPU, ["a", "b", "c"])
    assert result.stop.restored is not None and result.stop.restored.step == 0
    assert len(result.history) >= 1
    merged = m.merged_state_dict()
    assert all(torch.equal(merged[k], theta[k]) for k in theta)
