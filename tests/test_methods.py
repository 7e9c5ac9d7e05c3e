"""Shared invariants of every registered repair method (docs/DESIGN.md §3), parametrised over METHODS.

For each method, on a small CNN with trained-looking BatchNorm statistics and random 3×28×28
inputs: at init the repaired model's output equals the base's; three updates leave the base's
weights and buffers untouched and do change the output; mergeable methods' merged state dict
reproduces ``predict``; penalised methods have penalty 0 at the anchor; and every method runs
through ``run_repair``/``write_run``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from core.engine.configs import SPECS, config_schema, make_config
from core.engine.methods import METHODS
from core.engine.repair import PreparedData, run_repair, write_run
from core.formats.architectures import SmallCNN
from core.formats.bundle import BundleMeta, ModelBundle

EXPECTED = {
    "cpt",
    "finetune",
    "finetune_es",
    "finetune_head",
    "finetune_head_es",
    "l2sp",
    "mas",
    "side_tuning",
    "lora",
    "last_layer",
}
PENALISED = {"cpt", "l2sp", "mas", "last_layer"}
ALL = sorted(METHODS)


def make_base(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = SmallCNN(10, 3, width=16)
    # Non-trivial BatchNorm statistics, so "stats frozen" is a real check.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.8, 1.2)
    return model.eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, 28, 28, generator=g)
    y = torch.randint(0, 10, (12,), generator=g)
    unlabeled = torch.randn(40, 3, 28, 28, generator=g)
    return x, y, unlabeled


def build(name: str, base, unlabeled, **over):
    raw = {"lr_scale": "none"} if name == "cpt" else {}  # tests give the step itself
    cfg = make_config(name, {"lr": 1e-2, **raw, **over})
    return METHODS[name](base, cfg, torch.device("cpu"), unlabeled=unlabeled)


def state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_registry_has_every_baseline():
    assert EXPECTED <= set(METHODS)
    assert set(METHODS) == set(SPECS)
    for name, cls in METHODS.items():
        assert cls.name == SPECS[name].base
        assert SPECS[name].title
        assert dataclasses.is_dataclass(SPECS[name].config)
        schema = config_schema(name)
        assert all(s["help"] for s in schema), name
        make_config(name, {})


@pytest.mark.parametrize("name", ALL)
def test_output_equals_base_at_init(name, batch):
    x, _, unl = batch
    base = make_base()
    method = build(name, base, unl)
    with torch.no_grad():
        expected = base(x)
    assert torch.equal(method.predict(x), expected)


@pytest.mark.parametrize("name", ALL)
def test_three_updates_leave_base_untouched(name, batch):
    x, y, unl = batch
    base = make_base()
    before = state_copy(base)
    method = build(name, base, unl)
    inner_before = state_copy(method.base)
    start = method.predict(x)
    for _ in range(3):
        stats = method.update(x, y)
        assert set(stats.to_json()) == {"loss", "task_loss", "penalty"}
        assert all(isinstance(v, float) for v in stats.to_json().values())
    after = method.predict(x)
    assert not torch.allclose(after, start), "three updates did not change the model at all"
    for k, v in state_copy(base).items():
        assert torch.equal(v, before[k]), f"caller's base changed: {k}"
    for k, v in state_copy(method.base).items():
        assert torch.equal(v, inner_before[k]), f"frozen base changed: {k}"
    assert not method.base.training


@pytest.mark.parametrize("name", ALL)
def test_merged_state_reproduces_predict(name, batch):
    x, y, unl = batch
    base = make_base()
    method = build(name, base, unl)
    for _ in range(3):
        method.update(x, y)
    merged = method.merged_state_dict()
    if not SPECS[name].mergeable:
        assert merged is None
        assert method.delta_state_dict() is None
        return
    fresh = SmallCNN(10, 3, width=16).eval()
    fresh.load_state_dict(merged)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), method.predict(x), atol=1e-5, rtol=1e-5)
    # BatchNorm statistics are carried over unchanged (never updated from the counterexamples).
    base_state = base.state_dict()
    for k, v in merged.items():
        if "running_" in k or "num_batches" in k:
            assert torch.equal(v, base_state[k]), k
    delta = method.delta_state_dict()
    assert delta and all(k in base_state for k in delta)
    assert any(float(d.abs().sum()) > 0 for d in delta.values())


@pytest.mark.parametrize("name", sorted(PENALISED))
def test_penalty_zero_at_anchor(name, batch):
    x, y, unl = batch
    method = build(name, make_base(), unl, strength=100.0) if name != "last_layer" else build(name, make_base(), unl)
    if name == "mas":
        assert method.omega is not None  # importance from the unlabelled images
    assert float(method.penalty().detach()) == 0.0
    for _ in range(3):
        method.update(x, y)
    assert float(method.penalty().detach()) > 0.0


def test_l2sp_matches_cpt_l2(batch):
    """L2-SP on θ and CPT with the l2 penalty on δ = θ − θ₀ are the same objective (l2sp.py)."""
    x, y, unl = batch
    base = make_base()
    a = build("l2sp", base, unl, strength=100.0)
    b = build("cpt", base, unl, strength=100.0, penalty="l2")
    for _ in range(3):
        a.update(x, y)
        b.update(x, y)
    torch.testing.assert_close(a.predict(x), b.predict(x), atol=1e-4, rtol=1e-4)


def test_params_setting_limits_what_changes(batch):
    x, y, unl = batch
    for name in ("finetune", "lora", "cpt"):
        method = build(name, make_base(), unl, params="classifier")
        for _ in range(3):
            method.update(x, y)
        changed = {k for k, d in method.delta_state_dict().items() if float(d.abs().sum()) > 0}
        assert changed and all(k.startswith("classifier.") for k in changed), (name, changed)


def test_lora_change_is_low_rank(batch):
    x, y, unl = batch
    method = build("lora", make_base(), unl, rank=2)
    for _ in range(3):
        method.update(x, y)
    for name, d in method.delta_state_dict().items():
        rank = int(torch.linalg.matrix_rank(d.reshape(d.shape[0], -1)))
        assert rank <= 2, (name, rank)


def test_side_tuning_base_weight_schedule(batch):
    x, y, unl = batch
    method = build("side_tuning", make_base(), unl, anneal_steps=4, base_weight=0.25)
    assert method.base_weight() == 1.0
    for _ in range(5):
        method.update(x, y)
    assert method.base_weight() == pytest.approx(0.25)
    fixed = build("side_tuning", make_base(), unl, blend="fixed", base_weight=0.5)
    assert fixed.base_weight() == 0.5
    # the settings' old names (alpha_mode, alpha_end) still work
    old = build("side_tuning", make_base(), unl, alpha_mode="fixed", alpha_end=0.5)
    assert old.config == fixed.config


def test_last_layer_needs_typical_images():
    from core.errors import UserError

    with pytest.raises(UserError, match="unlabelled"):
        build("last_layer", make_base(), None)


@pytest.mark.parametrize("name", ALL)
def test_run_repair_and_write_run(name, batch, tmp_path):
    x, y, unl = batch
    meta = BundleMeta("small_cnn", 10, [str(i) for i in range(10)], [3, 28, 28], [0.0] * 3, [1.0] * 3)
    base = make_base()
    bundle = ModelBundle(meta, base)
    data = PreparedData(
        x_ce=x,
        y_ce=y,
        x_eval=unl,
        y_eval=torch.randint(0, 10, (len(unl),)).numpy(),
        attr_eval=["a"] * len(unl),
        eval_indices=torch.arange(len(unl)).numpy(),
        unlabeled=unl,
    )
    res = run_repair(bundle, None, method=name, config={"max_steps": 4, "min_steps": 1}, data=data)
    assert res.metrics.steps >= 1 and res.metrics.method == name
    out = write_run(res, meta, tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == name and "kept_decisions" in metrics
    assert (out / "model").exists() == SPECS[name].mergeable
