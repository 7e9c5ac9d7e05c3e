"""The guard on right answers: the check rule keeps the best step (and α) that keeps enough right decisions
(docs/REPAIR_GUARD.md)."""

from __future__ import annotations

import json

import numpy as np
import torch

from core.engine.check_results import CheckScore
from core.engine.checksplit import CheckSet
from core.engine.configs import make_config
from core.engine.events import StepStats
from core.engine.guard import NET_GAIN_Z, CheckGuard, build_guard, net_gain_z, objective, resolve_rule
from core.engine.loop import PreparedData, train_method
from core.engine.results import RunMetrics

DEV = torch.device("cpu")


class Threshold:
    """A stand-in method with one trainable number p, moved +1 by every update: an image with feature x is class 0
    when x < p, else class 1. Raising p fixes class-0 images (x small) first, then breaks class-1 images."""

    def __init__(self, **cfg):
        self.p = torch.zeros(1)
        self.config = make_config("cpt", {"stop_rule": "check", "min_steps": 0, **cfg})
        self.optimizer = None

    def update(self, x, y):
        self.p += 1.0
        return StepStats(1.0, 1.0, 0.0)

    def predict(self, x):
        x = x.reshape(len(x), -1)[:, :1]
        return torch.cat([self.p - x, x - self.p], 1)

    def snapshot(self):
        return [self.p.clone()]

    def restore(self, snap):
        self.p = snap[0].clone()


def _check(broken_from: float) -> CheckSet:
    """Group (0, a): five class-0 images the old model (p = 0) gets wrong, fixed once p passes 0.5 … 4.5.
    Group (1, b): ten class-1 images it gets right, broken once p passes broken_from, broken_from + 1, …"""
    x = np.array([0.5, 1.5, 2.5, 3.5, 4.5] + [broken_from + i for i in range(10)], dtype=np.float32)
    y = np.array([0] * 5 + [1] * 10)
    return CheckSet(torch.from_numpy(x).view(-1, 1), y, ["a"] * 5 + ["b"] * 10, np.ones(15, dtype=np.int64), DEV)


def _run(method, check, floor, every=1, patience=50, max_steps=12, alphas=(0.25, 0.5, 0.75)):
    guard = CheckGuard(check, floor, every=every, patience=patience, alphas=alphas)
    method.config = make_config("cpt", {"stop_rule": "check", "min_steps": 0, "max_steps": max_steps})
    data = PreparedData(torch.zeros(2, 1), torch.tensor([0, 1]))
    loop = train_method(method, data, DEV, ["a", "b"], guard=guard)
    return guard, loop.history, loop.stop.describe()


def test_keeps_the_earliest_best_step_that_keeps_enough_right_answers():
    m = Threshold()
    guard, history, reason = _run(m, _check(broken_from=5.5), floor=0.9)
    r = guard.report
    assert r.step == 5 and r.alpha == 1.0 and float(m.p) == 5.0  # group a all fixed at p = 5, nothing broken yet
    assert r.score.worst_group == 1.0 and r.score.kept == 1.0 and r.base.worst_group == 0.0
    assert "restored step 5" in reason and history[4].check["fixed"] == 5


def test_a_step_under_the_floor_never_qualifies_and_step_zero_is_the_fallback():
    m = Threshold()
    guard, _, _ = _run(m, _check(broken_from=0.7), floor=0.95, max_steps=3)
    # every step that fixes a class-0 image also breaks a class-1 one (kept 0.9 < 0.95): the old model stays
    assert guard.report.step == 0 and float(m.p) == 0.0


def test_a_step_that_only_trades_right_answers_for_others_does_not_win_by_noise():
    m = Threshold()
    # p = 1 fixes one class-0 image and breaks one class-1 image: the worst group rises (0 → 0.2) and 0.9 of the right
    # answers are kept, but nothing was gained on balance
    guard, _, _ = _run(m, _check(broken_from=0.7), floor=0.9, max_steps=1, alphas=())
    assert guard.checks[1]["fixed"] == 1 and guard.checks[1]["broken"] == 1 and guard.checks[1]["worst_group"] == 0.2
    assert guard.report.step == 0 and float(m.p) == 0.0


def test_the_best_of_several_guarded_runs_must_clear_a_higher_bar():
    # auto keeps the best of three guarded runs: a net gain that passes the sign test once (23 fixed, 11 broken:
    # z = 2.06) is what the best of three runs of noise reaches, so it does not pass there
    assert net_gain_z(1) == NET_GAIN_Z and net_gain_z(3) > net_gain_z(2) > NET_GAIN_Z
    s = CheckScore(kept=0.986, worst_group=0.125, accuracy=0.777, balanced=0.776, fixed=23, broken=11)
    check = _check(broken_from=5.5)
    assert CheckGuard(check, 0.97).qualifies(s)
    assert not CheckGuard(check, 0.97, trials=3).qualifies(s)
    assert CheckGuard(check, 0.97, trials=3).qualifies(CheckScore(0.99, 0.5, 0.8, 0.8, fixed=40, broken=10))


def test_alpha_after_the_fact_recovers_a_run_that_went_too_far():
    m = Threshold()
    # checked only at step 10 (p = 10: group a fixed, but 3 of group b broken: kept 0.7 < 0.9); α = 0.5 gives p = 5,
    # α = 0.75 (p = 7.5) is as good, and the smaller change wins the tie
    guard, _, _ = _run(m, _check(broken_from=7.5), floor=0.9, every=10, max_steps=10)
    r = guard.report
    assert r.step == 10 and r.alpha == 0.5 and float(m.p) == 5.0
    assert r.score.worst_group == 1.0 and r.score.kept == 1.0
    assert {(c["step"], c["alpha"]) for c in r.checks} >= {(0, 1.0), (10, 1.0), (10, 0.25), (10, 0.5), (10, 0.75)}


def test_patience_ends_the_run_after_checks_without_a_new_best():
    m = Threshold()
    guard, history, reason = _run(m, _check(broken_from=5.5), floor=0.9, patience=4, max_steps=40)
    # steps 1–3 fix 1–3 rows and break none: too few to tell from noise (fixed − broken < 2·√changed); 4 and 5 are
    # new bests, then 6, 7, 8 and 9 are not
    assert reason.startswith("check_patience") and len(history) == 9
    assert guard.report.step == 5
    # Each step said where the run would stop unless the check split improved (the Repair page's time left):
    # step 4 after steps 1–3 without a new best, then each new best (4, 5) moved it four checks on.
    assert [e.stop_by for e in history] == [4, 4, 4, 8, 9, 9, 9, 9, 9]


def test_the_objective_rewards_the_worst_group_and_the_balanced_accuracy():
    check = _check(5.5)
    base = check.score_predictions(np.ones(15, dtype=np.int64))
    fixed = check.score_predictions(np.array([0] * 5 + [1] * 10))
    assert objective(fixed) > objective(base)


def test_the_check_rule_falls_back_to_the_kept_rule_without_a_check_split():
    cfg = make_config("cpt", {"stop_rule": "check"})
    data = PreparedData(torch.zeros(2, 1), torch.tensor([0, 1]))
    assert resolve_rule(cfg, data).stop_rule == "kept"
    assert build_guard(cfg, data, None, DEV) is None
    data.x_val, data.y_val, data.attr_val = torch.zeros(3, 1), np.array([0, 1, 0]), ["a"] * 3
    assert resolve_rule(cfg, data).stop_rule == "check"
    paper = make_config("cpt", {"stop_rule": "paper"})
    assert resolve_rule(paper, data) is paper and build_guard(paper, data, None, DEV) is None


def _repair_inputs(tmp_path, n_eval=120, val_rows=0):
    from core.formats.bundle import load_bundle, save_bundle
    from core.formats.datasets import load_dataset, write_manifest_dataset
    from tests.conftest import TINY_CLASSES, make_images

    meta_dir = tmp_path / "bundle"
    from core.formats.architectures import SmallCNN
    from core.formats.bundle import BundleMeta

    torch.manual_seed(0)
    save_bundle(SmallCNN(3, 3).state_dict(), BundleMeta("small_cnn", 3, TINY_CLASSES, [3, 12, 12],
                [0.5] * 3, [0.25] * 3), meta_dir)  # fmt: skip
    labels = [TINY_CLASSES[i % 3] for i in range(n_eval)]
    attrs = ["red" if (i // 3) % 2 else "blue" for i in range(n_eval)]
    splits = ["val" if i < val_rows else "test" for i in range(n_eval)] if val_rows else None
    ev = write_manifest_dataset(tmp_path / "eval", make_images(n_eval, 1), labels, attrs, splits=splits)
    ce = write_manifest_dataset(tmp_path / "ce", make_images(6, 2), [TINY_CLASSES[i % 3] for i in range(6)])
    ref = write_manifest_dataset(tmp_path / "ref", make_images(40, 3), [TINY_CLASSES[0]] * 40)
    bundle = load_bundle(meta_dir)
    names = bundle.meta.class_names
    return bundle, load_dataset(ce, names), load_dataset(ev, names), load_dataset(ref, names)


def test_a_repair_carves_a_check_split_guards_on_it_and_reports_only_the_rest(tmp_path):
    from core.engine.repair import run_repair, write_run

    bundle, ce, ev, ref = _repair_inputs(tmp_path)
    res = run_repair(bundle, ce, ev, config={"stop_rule": "check", "max_steps": 12, "min_steps": 0, "lr": 1e-2},
                     reference=ref)  # fmt: skip
    m = res.metrics
    assert m.split.to_json() == {"reported": 96, "check": 24, "source": "carved"}
    assert m.after.n == 96 and len(res.eval_indices) == 96  # reported numbers: the other rows only
    assert m.check is not None and m.check.checks[0]["step"] == 0
    assert "check split" in m.stop_reason
    assert RunMetrics.from_json(json.loads(json.dumps(m.to_json()))) == m  # metrics.json keeps the check split
    out = write_run(res, bundle.meta, tmp_path / "run", ev)
    import pandas as pd

    assert len(pd.read_csv(out / "predictions.csv")) == 96


def test_counterexamples_fixed_are_counted_on_the_model_the_rule_kept_not_the_last_step(tmp_path):
    import copy

    from core.engine.inference import load_tensors, predict_logits
    from core.engine.repair import run_repair

    bundle, ce, ev, ref = _repair_inputs(tmp_path)
    res = run_repair(bundle, ce, ev, config={"stop_rule": "check", "max_steps": 12, "min_steps": 0, "lr": 1e-2},
                     reference=ref)  # fmt: skip
    kept = copy.deepcopy(bundle.model)
    kept.load_state_dict(res.merged_state)
    x, y = load_tensors(ce, bundle.meta)
    fixed = int((predict_logits(kept, x, DEV).argmax(1) == y).sum())
    assert res.metrics.counterexamples_fixed == fixed
    assert res.metrics.stop.restored is not None and res.metrics.stop.restored.step < res.metrics.steps  # went back


def test_val_rows_are_the_check_split_and_share_zero_turns_the_carve_off(tmp_path):
    from core.engine.repair import run_repair

    bundle, ce, ev, ref = _repair_inputs(tmp_path, val_rows=30)
    res = run_repair(bundle, ce, ev, config={"max_steps": 3, "min_steps": 0}, reference=ref)
    assert res.metrics.split.to_json() == {"reported": 90, "check": 30, "source": "val_rows"}
    assert res.metrics.config["stop_rule"] == "check" and res.metrics.check is not None
    bundle, ce, ev, ref = _repair_inputs(tmp_path / "b")
    res = run_repair(bundle, ce, ev, config={"max_steps": 3, "min_steps": 0}, reference=ref, check_share=0.0)
    assert res.metrics.split.source == "none" and res.metrics.after.n == 120
    assert res.metrics.config["stop_rule"] == "kept" and res.metrics.check is None  # the label-free fallback


def test_auto_chooses_on_the_check_split_when_there_is_one(tmp_path):
    from core.engine.checkauto import CHECK_CANDIDATES
    from core.engine.repair import run_repair

    bundle, ce, ev, ref = _repair_inputs(tmp_path)
    res = run_repair(bundle, ce, ev, config={"strength": "auto", "stop_rule": "check", "max_steps": 6,
                                             "min_steps": 0, "lr": 1e-2}, reference=ref)  # fmt: skip
    auto = res.metrics.auto_strength
    assert auto.by == "check_split" and [c["strength"] for c in auto.check_trials] == list(CHECK_CANDIDATES)
    best = max(c["objective"] for c in auto.check_trials)
    first_best = next(c for c in auto.check_trials if c["objective"] >= best - 1e-12)
    if res.metrics.no_change is None:
        assert auto.chosen == first_best["strength"] == res.metrics.strength
    else:  # no λ beat the old model on the check split: auto changes nothing
        assert auto.chosen is None and res.metrics.no_change.code == "check_no_gain" and first_best["step"] == 0


def _early_peak() -> CheckSet:
    """Twenty class-0 images the old model gets wrong, fixed once p passes 0.5 and 1.5 (all at p = 2); thirty
    class-1 images it gets right, broken from p = 2.1 on (at p = 5 most are broken): the best step is step 2."""
    x = np.array([0.5] * 10 + [1.5] * 10 + [2.1 + i / 10 for i in range(30)], dtype=np.float32)
    y = np.array([0] * 20 + [1] * 30)
    return CheckSet(torch.from_numpy(x).view(-1, 1), y, ["a"] * 20 + ["b"] * 30, np.ones(50, dtype=np.int64), DEV)


def _early_run(early: int, patience: int = 50, max_steps: int = 5):
    m = Threshold()
    guard = CheckGuard(_early_peak(), 0.9, every=5, patience=patience, early=early)
    m.config = make_config("cpt", {"stop_rule": "check", "min_steps": 0, "max_steps": max_steps})
    loop = train_method(m, PreparedData(torch.zeros(2, 1), torch.tensor([0, 1])), DEV, ["a", "b"], guard=guard)
    return m, guard, loop.history


def test_early_checks_find_a_best_step_that_checks_every_fifth_step_miss():
    m, guard, _ = _early_run(early=0)
    # checked at step 5 only (p = 5: under the floor); α after the fact gets part of the way back (p = 1.25)
    assert guard.report.step == 5 and guard.report.score.worst_group == 0.5 and float(m.p) == 1.25
    m, guard, _ = _early_run(early=3)
    assert [c["step"] for c in guard.checks if c["alpha"] == 1.0][:5] == [0, 1, 2, 3, 5]
    assert guard.report.step == 2 and guard.report.alpha == 1.0 and float(m.p) == 2.0
    assert guard.report.score.worst_group == 1.0 and guard.report.score.kept == 1.0


def test_early_checks_do_not_make_the_run_stop_sooner():
    # patience 2 = two checks of five steps after the best (step 2): the run stops at the first check on or after
    # step 12, not after two of the early, one-step checks
    _, guard, history = _early_run(early=10, patience=2, max_steps=40)
    assert guard.report.step == 2 and len(history) == 15
    assert history[1].stop_by == 15 and history[-1].stop_by == 15


def test_the_setting_reaches_the_guard():
    cfg = make_config("cpt", {"check_early_steps": 30})
    assert make_config("cpt").check_early_steps == 0  # the default: every fifth step, as before it was a setting
    data = PreparedData(torch.zeros(2, 1), torch.tensor([0, 1]))
    data.x_val, data.y_val, data.attr_val = torch.zeros(3, 1), np.array([0, 1, 0]), ["a"] * 3
    base = torch.nn.Linear(1, 2)
    assert build_guard(cfg, data, base, DEV).early == 30
    assert build_guard(make_config("cpt"), data, base, DEV).early == 0
