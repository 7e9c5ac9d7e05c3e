"""Automatic strength: decided without evaluation labels, and able to choose "change nothing"."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from core.engine.configs import make_config
from core.engine.repair import prepare_data, run_repair
from core.engine.results import StopReason
from core.engine.strength import CANDIDATES, choose_strength
from core.formats.bundle import load_bundle
from core.formats.datasets import load_dataset
from tests.conftest import unlearnable

CFG = {"max_steps": 30, "min_steps": 5}


def load(demo_dir, n=8):
    b = load_bundle(demo_dir / "model")
    names = b.meta.class_names
    ce = load_dataset(demo_dir / "counterexamples", names).subset(range(n))
    ev = load_dataset(demo_dir / "eval", names)
    return b, ce, ev


def test_choice_does_not_depend_on_eval_labels(demo_dir):
    b, ce, ev = load(demo_dir)
    data = prepare_data(b, ce, ev)
    first = choose_strength(b, data, "cpt", make_config("cpt", CFG), torch.device("cpu"))
    scrambled = dataclasses.replace(data, y_eval=np.random.default_rng(1).permutation(data.y_eval))
    second = choose_strength(b, scrambled, "cpt", make_config("cpt", CFG), torch.device("cpu"))
    assert first == second
    assert first.chosen in CANDIDATES
    assert [r.strength for r in first.candidates] == list(CANDIDATES)


def test_auto_can_choose_to_change_nothing(demo_dir):
    b, ce, ev = load(demo_dir, n=4)
    # Give each of 4 counterexamples a different label that is neither its truth nor the model's
    # answer. With 4 folds of one image, every held-out image carries a label that no training
    # image had, so no strength can fix held-out images: auto must keep the old model.
    from core.engine.inference import load_tensors

    x, _ = load_tensors(ce, b.meta)
    with torch.no_grad():
        pred = b.model(x).argmax(1).tolist()
    result = run_repair(b, unlearnable(ce, pred), ev, config={**CFG, "strength": "auto"})
    assert result.metrics.auto_strength.chosen is None
    assert result.stop.reason is StopReason.AUTO_NO_CHANGE
    assert result.metrics.comparison.kept_decisions == 1.0 and result.metrics.comparison.changed_predictions == 0


def test_auto_repairs_the_demo(demo_dir):
    b, ce, ev = load(demo_dir, n=16)
    result = run_repair(b, ce, ev, config={**CFG, "strength": "auto"})
    m = result.metrics
    assert m.auto_strength.chosen is not None
    assert m.after.accuracy > m.before.accuracy
    assert m.strength == m.auto_strength.chosen


def test_early_exit_gives_the_full_sweeps_answer(demo_dir):
    b, ce, ev = load(demo_dir, n=16)
    data = prepare_data(b, ce, ev)
    cfg = make_config("cpt", CFG)
    quick = choose_strength(b, data, "cpt", cfg, torch.device("cpu")).to_json()
    full = choose_strength(b, data, "cpt", cfg, torch.device("cpu"), early_exit=False).to_json()
    assert [r["strength"] for r in full["candidates"]] == list(CANDIDATES)
    assert full["skipped"] == [] and full["runs"] >= quick["runs"]
    assert quick["chosen"] == full["chosen"] and quick["code"] == full["code"]
    # what the quick sweep did run, it scored exactly as the full sweep did
    assert quick["candidates"] == full["candidates"][: len(quick["candidates"])]
    assert quick["skipped"] == [lam for lam in CANDIDATES if lam not in {r["strength"] for r in quick["candidates"]}]


def test_strongest_candidate_first_and_a_stalled_trial_stops(demo_dir):
    from core.engine.loop import PreparedData, train_method
    from core.engine.methods import get_method

    assert list(CANDIDATES) == sorted(CANDIDATES, reverse=True)
    b, ce, ev = load(demo_dir, n=8)
    data = prepare_data(b, ce, ev)
    # λ = 10⁶ barely moves the model: with a stall limit the trial ends long before max_steps
    cfg = make_config("cpt", {"max_steps": 300, "min_steps": 5, "strength": 1e6, "stop_rule": "paper"})
    impl = get_method("cpt")(b.model, cfg, torch.device("cpu"))
    result = train_method(
        impl, PreparedData(data.x_ce, data.y_ce), torch.device("cpu"), b.meta.class_names, stall_steps=10
    )
    assert result.reason is StopReason.STALLED and len(result.history) < 300
    fixed = [h.fixed for h in result.history]
    assert max(fixed[-10:]) <= max(fixed[:-10])  # nothing new was fixed in the last 10 steps


def test_each_trial_derives_from_the_reference_images_what_a_run_derives(demo_dir, monkeypatch):
    """A trial shares the sweep's reference images (their old answers computed once) and still gets what CPT
    derives from them in a run: the anchor's left-out images near its own counterexamples, the weights' mean."""
    from core.engine import strength
    from core.engine.methods.cpt import CPT

    b, ce, ev = load(demo_dir, n=6)
    data = prepare_data(b, ce, ev, reference=load_dataset(demo_dir / "reference", b.meta.class_names).subset(range(80)))
    seen = []
    adopt = CPT.adopt_reference

    def spy(self, ref, counterexamples=None):
        adopt(self, ref, counterexamples)
        seen.append((ref, len(counterexamples), ref.anchor_rows is not None, self.confidence_norm))

    monkeypatch.setattr(CPT, "adopt_reference", spy)
    cfg = make_config("cpt", {"max_steps": 3, "min_steps": 1, "anchor_skip": 0.2, "anchor_confidence": 3.0})
    trials = strength._prepare_trials(b, data, "cpt", cfg, torch.device("cpu"), seed=0)
    strength._run_trial(trials, (0, 1))
    (ref, n_ce, skipped, norm) = seen[-1]
    assert ref is trials.ref and n_ce == len(data.y_ce) - len(trials.folds[1])  # the trial's own counterexamples
    assert skipped and 0 < norm < 1  # max p_old³ averages below one
