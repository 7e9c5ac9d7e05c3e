"""Invariants of change-penalized tuning (docs/DESIGN.md §3)."""

import numpy as np
import pytest
import torch

from core.engine.configs import make_config
from core.engine.methods import get_method
from core.engine.methods.base import select_parameters
from core.engine.methods.cpt import DeltaModel

DEV = torch.device("cpu")


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 12, 12, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_output_equals_base_bit_for_bit_at_delta_zero(tiny_model):
    x, _ = batch()
    names = [n for n, _ in tiny_model.named_parameters()]
    wrapped = DeltaModel(tiny_model, names)
    with torch.no_grad():
        assert torch.equal(wrapped(x), tiny_model(x))


def test_base_untouched_and_bn_stats_frozen(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    cfg = make_config("cpt", {"strength": 10.0, "lr": 0.05, "lr_scale": "none"})
    m = get_method("cpt")(tiny_model, cfg, DEV)
    x, y = batch()
    for _ in range(5):
        m.update(x, y)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the method's own frozen copy keeps θ and the BatchNorm running statistics too
    for k, v in m.base.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(float(d.abs().sum()) > 0 for d in m.changes())


def test_merged_model_equals_theta_plus_delta(tiny_model):
    cfg = make_config("cpt", {"strength": 1.0, "lr": 0.05, "lr_scale": "none"})
    m = get_method("cpt")(tiny_model, cfg, DEV)
    x, y = batch()
    for _ in range(5):
        m.update(x, y)
    merged = type(tiny_model)(3, 3, width=8).eval()
    merged.load_state_dict(m.merged_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(x), m.predict(x), rtol=1e-5, atol=1e-5)
    delta = m.delta_state_dict()
    base = dict(tiny_model.named_parameters())
    for name, d in delta.items():
        torch.testing.assert_close(m.merged_state_dict()[name], base[name] + d)


def test_strength_limits_change(tiny_model):
    x, y = batch()
    norms = []
    for strength in (1.0, 10000.0):
        m = get_method("cpt")(
            tiny_model, make_config("cpt", {"strength": strength, "lr": 0.05, "lr_scale": "none"}), DEV
        )
        for _ in range(20):
            m.update(x, y)
        norms.append(sum(float(d.pow(2).sum()) for d in m.changes()))
    assert norms[1] < norms[0]


def test_parameter_subset_only_changes_those(tiny_model):
    m = get_method("cpt")(tiny_model, make_config("cpt", {"params": "classifier", "lr": 0.05, "lr_scale": "none"}), DEV)
    x, y = batch()
    for _ in range(3):
        m.update(x, y)
    changed = {n for n, d in m.delta_state_dict().items() if float(d.abs().sum()) > 0}
    assert changed == {"classifier.weight", "classifier.bias"}
    assert select_parameters(tiny_model, "features.0.*") == [
        "features.0.0.weight",
        "features.0.1.weight",
        "features.0.1.bias",
    ]


def test_unknown_parameter_pattern_and_method_are_explained(tiny_model):
    from core.errors import UserError

    with pytest.raises(UserError, match="matches no parameter"):
        select_parameters(tiny_model, "nothing.*")
    with pytest.raises(UserError, match="valid methods: cpt"):
        get_method("magic")
    with pytest.raises(UserError, match="at most"):
        make_config("cpt", {"strength": 1e9})


def test_cpu_training_is_deterministic(tiny_model):
    x, y = batch()
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = get_method("cpt")(tiny_model, make_config("cpt", {"lr": 0.01, "lr_scale": "none"}), DEV)
        for _ in range(3):
            m.update(x, y)
        outs.append(np.concatenate([d.detach().numpy().ravel() for d in m.changes()]))
    assert np.array_equal(outs[0], outs[1])


def assert_closed_form_matches_autograd(make, x, y, steps: int = 4) -> None:
    """CPT's update with its pull in closed form, and the generic update through autograd, from methods ``make()``
    builds alike: the same changes and penalty after ``steps`` steps."""
    from core.engine.methods.base import Method

    runs = []
    for closed_form in (True, False):
        m = make()
        for _ in range(steps):
            stats = m.update(x, y) if closed_form else Method.update(m, x, y)
        runs.append(([d.clone() for d in m.changes()], stats))
    for a, b in zip(runs[0][0], runs[1][0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert runs[0][1].penalty > 0
    assert runs[0][1].penalty == pytest.approx(runs[1][1].penalty, rel=1e-5)


def test_closed_form_l2_gradient_matches_autograd(tiny_model):
    def make():
        torch.manual_seed(0)
        return get_method("cpt")(
            tiny_model, make_config("cpt", {"strength": 50.0, "lr": 0.01, "lr_scale": "none"}), DEV
        )

    assert_closed_form_matches_autograd(make, *batch())
