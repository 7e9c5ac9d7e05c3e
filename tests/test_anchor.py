"""The function-space anchor, the 'kept' stopping rule, and auto's progress and 'change nothing'."""

from __future__ import annotations

import numpy as np
import torch

from core.engine.anchor import Reference, anchor_kl
from core.engine.configs import SIZE_REFERENCE, make_config
from core.engine.loop import PreparedData, train_method
from core.engine.methods import get_method
from core.engine.results import NoChangeCode, StopReason
from core.engine.strength import CANDIDATES, choose_strength
from tests.conftest import unlearnable

CPU = torch.device("cpu")


def _cpt(model, reference, **over):
    cfg = make_config("cpt", {"max_steps": 20, "min_steps": 0, "lr_scale": "none", **over})
    impl = get_method("cpt")(model, cfg, CPU)
    impl.use_reference(reference)
    return impl, cfg


def test_anchor_is_zero_at_delta_zero(tiny_model):
    torch.manual_seed(0)
    x_ref = torch.randn(16, 3, 12, 12)
    impl, _ = _cpt(tiny_model, x_ref, anchor=5.0)
    xr, old = impl.reference.batch(16)
    kl = anchor_kl(impl.forward(xr), old)
    assert abs(float(kl.detach())) < 1e-6
    assert impl.reference.agreement(impl.predict) == 1.0


def test_anchor_gradient_reaches_delta(tiny_model):
    torch.manual_seed(0)
    x_ref = torch.randn(16, 3, 12, 12)
    impl, _ = _cpt(tiny_model, x_ref, anchor=5.0)
    with torch.no_grad():  # move away from δ = 0, where the KL has a zero gradient
        for d in impl.trainable_parameters():
            d.add_(0.05 * torch.randn_like(d))
    xr, old = impl.reference.batch(16)
    anchor_kl(impl.forward(xr), old).backward()
    grads = [d.grad for d in impl.trainable_parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in impl.base.parameters())  # θ stays frozen


def test_anchor_uses_no_labels_of_reference_images(tiny_model):
    # The Reference takes images only; an update with the anchor gives the same δ whatever labels the
    # reference images might have had (they are never passed), and a step changes the anchor value.
    torch.manual_seed(0)
    x_ref = torch.randn(32, 3, 12, 12)
    x, y = torch.randn(4, 3, 12, 12), torch.tensor([0, 1, 2, 0])
    deltas = []
    for _ in range(2):
        impl, _ = _cpt(tiny_model, x_ref.clone(), anchor=5.0)
        for _ in range(3):
            stats = impl.update(x, y)
        assert stats.anchor is not None and stats.anchor > 0
        deltas.append([d.clone() for d in impl.changes()])
    assert all(torch.equal(a, b) for a, b in zip(*deltas))
    import inspect

    assert list(inspect.signature(Reference).parameters)[:1] == ["x"]


def test_anchor_keeps_more_reference_answers(tiny_model):
    torch.manual_seed(1)
    x_ref = torch.randn(64, 3, 12, 12)
    x, y = torch.randn(6, 3, 12, 12), torch.tensor([0, 1, 2, 0, 1, 2])
    agree = {}
    for mu in (0.0, 50.0):
        impl, _ = _cpt(tiny_model, x_ref, anchor=mu, lr=1e-2)
        for _ in range(15):
            impl.update(x, y)
        agree[mu] = impl.reference.agreement(impl.predict)
    assert agree[50.0] >= agree[0.0]


def test_kept_rule_restores_the_best_step_above_the_floor(tiny_model):
    torch.manual_seed(0)
    x_ref = torch.randn(64, 3, 12, 12)
    x, y = torch.randn(6, 3, 12, 12), torch.tensor([0, 1, 2, 0, 1, 2])
    impl, cfg = _cpt(tiny_model, x_ref, anchor=0.0, lr=5e-2, strength=1.0, keep_floor=0.999, max_steps=30, backtracks=0)
    result = train_method(impl, PreparedData(x, y), CPU, ["a", "b", "c"])
    agreements = [h.reference_agreement for h in result.history]
    assert all(a is not None for a in agreements)
    assert result.reason is StopReason.KEPT_FLOOR
    assert agreements[-1] < 0.999
    # The result is a state from before the floor was crossed: its estimate is above the floor.
    assert impl.reference.agreement(impl.predict) >= 0.999


def test_backtracking_undoes_a_step_under_the_floor_and_halves_the_step(tiny_model):
    torch.manual_seed(0)
    x_ref = torch.randn(64, 3, 12, 12)
    x, y = torch.randn(6, 3, 12, 12), torch.tensor([0, 1, 2, 0, 1, 2])
    impl, cfg = _cpt(tiny_model, x_ref, anchor=0.0, lr=5e-2, strength=1.0, keep_floor=0.999, max_steps=40, backtracks=3)
    states = []
    snapshot = impl.snapshot
    impl.snapshot = lambda: states.append(snapshot()) or states[-1]  # the state before each step
    result = train_method(impl, PreparedData(x, y), CPU, ["a", "b", "c"])
    history, reason = result.history, result.reason
    undone = [i for i, h in enumerate(history) if h.backtracked]
    assert undone, "the floor was never crossed: the test proves nothing"
    assert all(history[i].reference_agreement < 0.999 for i in undone)
    assert len(undone) <= 3 and ((reason is StopReason.KEPT_FLOOR) == (len(undone) == 3 and len(history) < 40))
    assert impl.optimizer.param_groups[0]["lr"] == 5e-2 * 0.5 ** len(undone)
    assert impl.reference.agreement(impl.predict) >= 0.999  # whatever was kept is above the floor
    if undone[0] + 1 < len(history):  # after an undo the run went on from the state before that step
        assert history[undone[0] + 1].step == history[undone[0]].step + 1


def test_size_scaled_step_and_normalised_gradient_step(tiny_model):
    n = sum(p.numel() for p in tiny_model.parameters())
    scaled = get_method("cpt")(tiny_model, make_config("cpt", {"lr": 1e-4}), CPU)
    assert abs(scaled.effective_lr() - 1e-4 * (SIZE_REFERENCE / n) ** 0.5) < 1e-12
    raw = get_method("cpt")(tiny_model, make_config("cpt", {"lr": 1e-4, "lr_scale": "none"}), CPU)
    assert raw.effective_lr() == 1e-4
    # normalised gradient descent: the first step (δ = 0, so the l2 pull is 0) has length lr·‖θ‖
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 12, 12), torch.tensor([0, 1, 2, 0])
    ngd = get_method("cpt")(tiny_model, make_config("cpt", {"optimizer": "ngd", "lr": 1e-3, "anchor": 0.0}), CPU)
    ngd.update(x, y)
    step = torch.linalg.vector_norm(torch.cat([d.detach().flatten() for d in ngd.changes()]))
    theta = torch.linalg.vector_norm(torch.cat([p.detach().flatten() for p in tiny_model.parameters()]))
    assert abs(float(step) - 1e-3 * float(theta)) < 1e-3 * float(theta) * 1e-3


def test_kept_rule_without_reference_is_the_paper_rule(tiny_model):
    torch.manual_seed(0)
    x, y = torch.randn(3, 3, 12, 12), torch.tensor([0, 1, 2])
    cfg = make_config(
        "cpt", {"max_steps": 200, "min_steps": 5, "stop_rule": "kept", "lr": 1e-2, "lr_scale": "none", "strength": 1.0}
    )
    impl = get_method("cpt")(tiny_model, cfg, CPU)
    result = train_method(impl, PreparedData(x, y), CPU, ["a", "b", "c"])
    history = result.history
    assert result.reason is StopReason.ALL_FIXED and history[-1].fixed == 3 and len(history) >= 5
    assert all(h.reference_agreement is None for h in history)


def _demo(demo_dir, n):
    from core.engine.repair import prepare_data
    from core.formats.bundle import load_bundle
    from core.formats.datasets import load_dataset

    b = load_bundle(demo_dir / "model")
    names = b.meta.class_names
    ce = load_dataset(demo_dir / "counterexamples", names).subset(range(n))
    ev = load_dataset(demo_dir / "eval", names)
    return b, ce, ev, prepare_data(b, ce, ev)


def test_auto_reports_progress_per_candidate_and_fold(demo_dir):
    b, _, _, data = _demo(demo_dir, 8)
    typed: list = []
    report = choose_strength(
        b, data, "cpt", make_config("cpt", {"max_steps": 20, "min_steps": 5}), CPU, progress=typed.append
    ).to_json()
    events = [e.to_json() for e in typed]  # as the workbench stores them
    runs = [e for e in events if "fold" in e]
    assert runs, "no progress events"
    assert {e["phase"] for e in events} == {"auto"}
    assert [e["strength"] for e in events if e.get("event") == "candidate_done"] == list(CANDIDATES)
    first = runs[0]
    assert (first["candidate"], first["fold"], first["done"]) == (1, 1, 0)
    assert all(e["total"] == len(CANDIDATES) * report["folds"] for e in events)
    assert all(1 <= e["fold"] <= e["folds"] == report["folds"] for e in runs)


def test_auto_change_nothing_has_a_reason_code(demo_dir):
    from core.engine.repair import run_repair

    b, ce, ev, data = _demo(demo_dir, 4)
    # Give each counterexample a label that is neither its truth nor the model's answer: no held-out
    # fold can be fixed, so auto must keep the old model and say why.
    with torch.no_grad():
        pred = b.model(data.x_ce).argmax(1).tolist()
    res = run_repair(b, unlearnable(ce, pred), ev, config={"strength": "auto", "max_steps": 20})
    nc = res.metrics.no_change
    assert nc is not None and nc.code in set(NoChangeCode) and nc.reason
    assert res.metrics.auto_strength.chosen is None
    assert res.metrics.comparison.changed_predictions == 0 and res.metrics.comparison.kept_decisions == 1.0
    assert res.delta is None


def test_auto_refuses_settings_that_break_reference_answers(demo_dir, monkeypatch):
    import core.engine.strength as st
    from core.bench.standard_suite import reference_pixels
    from core.engine.inference import normalize

    b, _, _, data = _demo(demo_dir, 8)
    data.reference = normalize(reference_pixels("demo", 128), b.meta.mean, b.meta.std)
    monkeypatch.setattr(st, "KEEP_TARGET", 1.01)  # nothing can keep more than every answer
    report = st.choose_strength(b, data, "cpt", make_config("cpt", {"max_steps": 20, "min_steps": 5}), CPU).to_json()
    assert report["chosen"] is None and report["code"] in ("no_safe_setting", "no_heldout_fix")
    assert not any(r["safe"] for r in report["candidates"])
    assert all(r["stopped_early"] for r in report["candidates"])  # one fold was enough to rule each out
    assert np.isfinite(report["base_cv_accuracy"])
