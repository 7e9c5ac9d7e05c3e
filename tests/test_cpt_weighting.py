"""CPT's importance-weighted change penalty (``importance``) and confidence-weighted anchor (``anchor_confidence``)."""

from __future__ import annotations

import pytest
import torch

from core.engine.anchor import anchor_kl, confidence_weights
from core.engine.configs import ANCHOR_CONFIDENCE_DEFAULT, make_config
from core.engine.methods import get_method
from core.engine.methods.mas import mas_importance
from core.engine.penalties import anchor_scales, importance_scale, penalty_value, weighted_l2
from core.errors import UserError
from tests.test_cpt import assert_closed_form_matches_autograd

CPU = torch.device("cpu")


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 12, 12, generator=g), torch.randint(0, 3, (n,), generator=g)


def _cpt(model, **over):
    return get_method("cpt")(model, make_config("cpt", {"lr_scale": "none", "anchor": 0.0, **over}), CPU)


def test_weighted_l2_is_zero_at_theta_and_means_what_l2_means_for_a_uniform_change():
    torch.manual_seed(0)
    anchors = [torch.randn(8, 4, 3, 3), torch.randn(8)]
    weights = [torch.rand_like(a) for a in anchors]
    scale = importance_scale(weights, anchors)
    assert float(weighted_l2([torch.zeros_like(a) for a in anchors], weights, scale)) == 0.0
    tenth = [0.1 * a for a in anchors]  # every weight changed by 10 % of itself
    assert float(weighted_l2(tenth, weights, scale)) == pytest.approx(0.01, rel=1e-5)
    assert float(penalty_value("l2", tenth, anchor_scales(anchors))) == pytest.approx(0.01, rel=1e-5)
    deltas = [torch.full_like(a, 0.1, requires_grad=True) for a in anchors]
    weighted_l2(deltas, weights, scale).backward()
    for d, w in zip(deltas, weights):  # the gradient is 2Ωδ/scale: zero where Ω is zero
        torch.testing.assert_close(d.grad, 2 * w * 0.1 / scale)


def test_the_closed_form_weighted_pull_matches_autograd(tiny_model):
    def make():
        m = _cpt(tiny_model, strength=50.0, lr=0.01, importance="mas")
        m.use_reference(torch.randn(20, 3, 12, 12, generator=torch.Generator().manual_seed(5)))
        return m

    assert_closed_form_matches_autograd(make, *batch())


def test_importance_comes_from_the_reference_images_else_the_counterexamples(tiny_model):
    x, y = batch()
    ref = torch.randn(20, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    m = _cpt(tiny_model, importance="mas")
    assert m.needs_reference()
    m.use_reference(ref)
    expected = mas_importance(m.base, m.names, ref)
    assert m.importance_source == "reference images"
    for a, b in zip(m.omega, expected):
        torch.testing.assert_close(a, b)
    alone = _cpt(tiny_model, importance="mas")
    alone.update(x, y)
    assert alone.importance_source.startswith("counterexample images")
    for a, b in zip(alone.omega, mas_importance(alone.base, alone.names, x)):
        torch.testing.assert_close(a, b)
    plain = _cpt(tiny_model)
    plain.update(x, y)
    assert make_config("cpt").importance == "none" and plain.omega is None


def test_weighting_moves_the_important_weights_less_and_the_others_more(tiny_model):
    """At the same λ the weighted penalty's change has less of its size where Ω is large than the plain one's."""
    x, y = batch()
    ref = torch.randn(20, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    share = {}
    for kind in ("none", "mas"):
        m = _cpt(tiny_model, strength=1e4, lr=0.01, importance=kind)
        m.use_reference(ref)
        for _ in range(30):
            m.update(x, y)
        omega = mas_importance(m.base, m.names, ref)
        deltas = m.changes()
        size = sum(float(d.pow(2).sum()) for d in deltas)
        share[kind] = sum(float((o * d.pow(2)).sum()) for o, d in zip(omega, deltas)) / size
    assert share["mas"] < 0.5 * share["none"]


def test_importance_needs_the_l2_penalty(tiny_model):
    with pytest.raises(UserError) as e:
        _cpt(tiny_model, importance="mas", penalty="l1")
    assert e.value.key == "cpt_importance_l2"


def test_confidence_weights_average_one_and_favour_confident_answers():
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.6, 0.3, 0.1]])
    old = probs.log()
    norm = float(probs.max(1).values.pow(2).mean())
    w = confidence_weights(old, 2.0, norm)
    assert float(w.mean()) == pytest.approx(1.0)
    assert w[0] > w[2] > w[1]
    new = torch.zeros(3, 3)  # uniform new answers: every image has moved
    per_image = (probs * (old - torch.log_softmax(new, 1))).sum(1)
    assert float(anchor_kl(new, old, w)) == pytest.approx(float((w * per_image).mean()))
    assert float(anchor_kl(new, old)) == pytest.approx(float(per_image.mean()))


def test_cpt_normalises_the_confidence_weights_over_its_reference_images(tiny_model):
    ref = torch.randn(40, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    m = _cpt(tiny_model, anchor=5.0, anchor_confidence=3.0)
    m.use_reference(ref)
    w = confidence_weights(m.reference.old_log_probs, 3.0, m.confidence_norm)
    assert float(w.mean()) == pytest.approx(1.0, rel=1e-5)
    assert float(w.std()) > 0
    plain = _cpt(tiny_model, anchor=5.0, anchor_confidence=0.0)
    plain.use_reference(ref)
    assert plain.confidence_norm == 1.0
    assert make_config("cpt").anchor_confidence == ANCHOR_CONFIDENCE_DEFAULT == 3.0  # measured: the fifth study


def test_the_confidence_weighted_anchor_changes_the_run_only_when_asked(tiny_model):
    x, y = batch()
    ref = torch.randn(40, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    runs = {}
    for conf in (0.0, 3.0):
        m = _cpt(tiny_model, anchor=5.0, strength=10.0, lr=0.01, anchor_confidence=conf)
        m.use_reference(ref)
        for _ in range(5):
            m.update(x, y)
        runs[conf] = torch.cat([d.flatten() for d in m.changes()])
    assert not torch.allclose(runs[0.0], runs[3.0])
