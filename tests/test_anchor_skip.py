"""The anchor that leaves out the reference images most like a counterexample (CPT's ``anchor_skip``)."""

from __future__ import annotations

import torch
from torch import nn

from core.engine.anchor import Reference, far_from
from core.engine.configs import make_config
from core.engine.methods import get_method

CPU = torch.device("cpu")


def _points() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A model whose penultimate features are its 2-d input; ten reference images at angles 0°…90°, and one
    counterexample at 90° (the last reference images are the most like it)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2)).eval()
    angles = torch.linspace(0, torch.pi / 2, 10)
    ref = torch.stack([angles.cos(), angles.sin()], 1) * torch.arange(1, 11).unsqueeze(1)  # lengths do not matter
    return model, ref, torch.tensor([[0.0, 3.0]])


def test_the_images_nearest_a_counterexample_are_left_out():
    model, ref, ce = _points()
    assert far_from(model, ref, ce, 0.2, CPU).tolist() == list(range(8))
    assert far_from(model, ref, ce, 0.0, CPU).tolist() == list(range(10))
    assert len(far_from(model, ref, ce, 1.0, CPU)) == 1  # never an empty anchor


def test_the_anchor_draws_only_the_kept_images_and_the_stream_is_unchanged_without():
    model, ref, _ = _points()
    plain, again = Reference(ref, model, CPU), Reference(ref, model, CPU)
    x, _ = plain.batch(4)
    assert torch.equal(x, again.batch(4)[0])
    kept = Reference(ref, model, CPU)
    kept.anchor_rows = torch.tensor([0, 1, 2])
    for _ in range(5):
        x, old = kept.batch(8)
        assert len(x) == 3 and all(any(torch.equal(r, ref[i]) for i in range(3)) for r in x)
        assert torch.allclose(old.exp().sum(1), torch.ones(3))


def test_cpt_leaves_them_out_only_when_asked_and_the_kept_estimate_uses_all(tiny_model):
    x_ref, x_ce = torch.randn(40, 3, 12, 12), torch.randn(4, 3, 12, 12)
    impl = get_method("cpt")(tiny_model, make_config("cpt", {"anchor_skip": 0.25}), CPU)
    impl.use_reference(x_ref, counterexamples=x_ce)
    assert len(impl.reference.anchor_rows) == 30 and len(impl.reference.x) == 40
    assert impl.reference.agreement(impl.predict) == 1.0
    plain = get_method("cpt")(tiny_model, make_config("cpt"), CPU)
    plain.use_reference(x_ref, counterexamples=x_ce)
    assert make_config("cpt").anchor_skip == 0.0 and plain.reference.anchor_rows is None
