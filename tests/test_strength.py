"""Automatic strength: decided without evaluation labels, and able to choose "change nothing"."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from core.bundle import load_bundle
from core.datasets import load_dataset
from core.strength import CANDIDATES, choose_strength
from core.tuning import prepare_data, run_repair

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
    first = choose_strength(b, data, "cpt", CFG, torch.device("cpu"))
    scrambled = dataclasses.replace(data, y_eval=np.random.default_rng(1).permutation(data.y_eval))
    second = choose_strength(b, scrambled, "cpt", CFG, torch.device("cpu"))
    assert first == second
    assert first["chosen"] in CANDIDATES
    assert [r["strength"] for r in first["candidates"]] == list(CANDIDATES)


def test_auto_can_choose_to_change_nothing(demo_dir):
    b, ce, ev = load(demo_dir)
    # Counterexamples whose labels are noise: nothing learned from some generalises to the others.
    rng = np.random.default_rng(0)
    noisy = dataclasses.replace(
        ce, records=[dataclasses.replace(r, label=int(rng.integers(0, 10))) for r in ce.records]
    )
    result = run_repair(b, noisy, ev, config={**CFG, "strength": "auto"})
    assert result.metrics["auto_strength"]["chosen"] is None
    assert result.stop_reason == "auto_no_change"
    assert result.metrics["kept_decisions"] == 1.0 and result.metrics["changed_predictions"] == 0


def test_auto_repairs_the_demo(demo_dir):
    b, ce, ev = load(demo_dir, n=16)
    result = run_repair(b, ce, ev, config={**CFG, "strength": "auto"})
    m = result.metrics
    assert m["auto_strength"]["chosen"] is not None
    assert m["after"]["accuracy"] > m["before"]["accuracy"]
    assert m["strength"] == m["auto_strength"]["chosen"]
