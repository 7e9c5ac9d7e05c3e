"""The paper's early-stopping rule stops when, and only when, it should; the held-out rule restores
the best step."""

import numpy as np
import torch

from core.engine.configs import make_config
from core.engine.events import StepStats
from core.engine.loop import PreparedData, train_method
from core.engine.repair import run_repair
from core.engine.results import StopReason
from core.engine.strength import choose_strength
from core.formats.architectures import SmallCNN
from core.formats.bundle import BundleMeta, ModelBundle

DEV = torch.device("cpu")


class Scripted:
    """A stand-in method (a core.engine.methods.base.RepairMethod) whose predictions become right after a
    chosen number of updates."""

    reference = None  # no reference images: the kept rule is the paper's rule

    def __init__(self, n, right_after, n_classes=3):
        self.steps, self.n, self.right_after, self.nc = 0, n, right_after, n_classes
        self.state = [torch.zeros(1)]

    def update(self, x, y):
        self.steps += 1
        self.y = y
        return StepStats(1.0, 1.0, 0.0)

    def halve_step(self):
        return False

    def predict(self, x):
        y = self.y if self.steps >= self.right_after else (self.y + 1) % self.nc
        return (
            torch.nn.functional.one_hot(y[: len(x)], self.nc).float()
            if len(x) == len(self.y)
            else torch.zeros(len(x), self.nc)
        )

    def snapshot(self):
        return [torch.tensor([float(self.steps)])]

    def restore(self, snap):
        self.restored = int(snap[0])


def data(n=4):
    return PreparedData(torch.zeros(n, 3, 4, 4), torch.tensor([0, 1, 2, 0][:n]))


def run(right_after, **cfg):
    m = Scripted(4, right_after)
    m.config = make_config("cpt", cfg)
    result = train_method(m, data(), DEV, ["a", "b", "c"])
    return m, result.history, result.reason


def test_stops_once_all_right_after_min_steps():
    m, history, reason = run(right_after=3, min_steps=5, max_steps=50)
    assert reason == "all_fixed" and len(history) == 5


def test_stops_at_the_first_step_all_are_right_when_past_min_steps():
    m, history, reason = run(right_after=7, min_steps=2, max_steps=50)
    assert reason == "all_fixed" and len(history) == 7


def test_runs_to_max_steps_when_never_all_right():
    m, history, reason = run(right_after=10_000, min_steps=1, max_steps=12)
    assert reason == "max_steps" and len(history) == 12


def test_rule_none_ignores_fixed_counterexamples():
    m, history, reason = run(right_after=1, min_steps=0, max_steps=9, stop_rule="none")
    assert reason == "max_steps" and len(history) == 9


def test_cancel_is_polled_every_step():
    m = Scripted(4, 10_000)
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 3

    m.config = make_config("cpt", {"max_steps": 100})
    result = train_method(m, data(), DEV, ["a", "b", "c"], should_stop=should_stop)
    assert result.cancelled and result.reason is StopReason.CANCELLED and len(result.history) == 3


def test_heldout_rule_keeps_best_step():
    m = Scripted(4, 10_000)
    d = data()
    d.x_val = torch.zeros(4, 3, 4, 4)
    d.y_val = torch.tensor([0, 1, 2, 0]).numpy()
    d.attr_val = ["a", "a", "b", "b"]
    cfg = make_config("cpt", {"stop_rule": "heldout", "eval_every": 1, "patience": 3, "min_steps": 0, "max_steps": 40})
    m.config = cfg
    result = train_method(m, d, DEV, ["a", "b", "c"])
    history, reason = result.history, result.reason
    # validation predictions never change (all zeros → class 0), so the first check is the best
    assert reason is StopReason.HELDOUT_PATIENCE and m.restored == 1 and len(history) == 4
    assert result.restored_step == 1 and result.stop.describe() == "heldout_patience; restored best held-out step 1"


def _small_repair_inputs():
    torch.manual_seed(0)
    meta = BundleMeta("small_cnn", 10, [str(i) for i in range(10)], [3, 28, 28], [0.0] * 3, [1.0] * 3)
    g = torch.Generator().manual_seed(1)
    x_eval = torch.randn(64, 3, 28, 28, generator=g)
    d = PreparedData(
        torch.randn(8, 3, 28, 28, generator=g),
        torch.randint(0, 10, (8,), generator=g),
        x_eval,
        torch.randint(0, 10, (64,), generator=g).numpy(),
        ["a"] * 64,
        np.arange(64),
    )
    return ModelBundle(meta, SmallCNN(10, 3, width=8).eval()), d


def _stop_after(n: int):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > n

    return should_stop, calls


def test_cancel_ends_the_automatic_strength_sweep_at_once():
    bundle, d = _small_repair_inputs()
    should_stop, calls = _stop_after(5)
    report = choose_strength(
        bundle, d, "cpt", make_config("cpt", {"max_steps": 50, "min_steps": 50}), DEV, should_stop=should_stop
    )
    assert report.cancelled and report.chosen is None
    assert calls["n"] == 6  # asked once more after the first yes, then nothing else ran


def test_a_cancelled_repair_stops_without_evaluating_or_merging():
    bundle, d = _small_repair_inputs()
    for strength in ("auto", 10.0):
        should_stop, calls = _stop_after(3)
        res = run_repair(
            bundle, None, method="cpt", config={"strength": strength, "max_steps": 50}, data=d, should_stop=should_stop
        )
        assert res.cancelled and res.stop.reason is StopReason.CANCELLED, strength
        assert res.merged_state is None and len(res.after_pred) == 0 and res.metrics.steps <= 3
