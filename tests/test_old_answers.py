"""The old model's answers, computed once per prepared draw and never handed to another model or other rows."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import torch

from core.engine.inference import predict_logits
from core.engine.old_answers import OldAnswers, model_fingerprint
from core.engine.repair import prepare_data, repair, run_repair
from core.engine.request import DataRefs, RunRequest
from core.formats.architectures import SmallCNN
from tests.test_strength import load

DEV = torch.device("cpu")


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(3, 3, width=8).eval()


def _rows(seed: int, n: int = 40) -> torch.Tensor:
    return torch.randn(n, 3, 12, 12, generator=torch.Generator().manual_seed(seed))


def _truth(model, x) -> np.ndarray:
    return predict_logits(model, x, DEV).argmax(1).numpy()


def test_the_same_model_on_the_same_rows_is_predicted_once():
    model, x, old = _model(0), _rows(0), OldAnswers()
    first = old.classes(model, x, DEV)
    again = old.classes(copy.deepcopy(model), x, DEV)  # an equal copy of the model: the same answers
    assert old.passes == 1 and again is first
    assert np.array_equal(first, _truth(model, x))
    assert not first.flags.writeable  # shared: nobody may write into it


def test_another_model_or_the_model_changed_in_place_gets_its_own_answers():
    a, b, x, old = _model(0), _model(1), _rows(0), OldAnswers()
    old.classes(a, x, DEV)
    assert np.array_equal(old.classes(b, x, DEV), _truth(b, x)) and old.passes == 2
    with torch.no_grad():
        a.classifier.weight.neg_()  # the same object, other weights
        a.classifier.bias.neg_()
    changed = old.classes(a, x, DEV)
    assert old.passes == 3 and np.array_equal(changed, _truth(a, x))
    assert not np.array_equal(changed, _truth(b, x))


def test_other_rows_or_rows_written_over_get_their_own_answers():
    model, x, old = _model(0), _rows(0), OldAnswers()
    old.classes(model, x, DEV)
    same_values = x.clone()  # equal values in another tensor: not the rows that were predicted
    old.classes(model, same_values, DEV)
    assert old.passes == 2
    other = _rows(1)
    assert np.array_equal(old.classes(model, other, DEV), _truth(model, other)) and old.passes == 3
    x.copy_(_rows(2))  # the predicted tensor itself, written over in place
    assert np.array_equal(old.classes(model, x, DEV), _truth(model, _rows(2))) and old.passes == 4


def test_the_fingerprint_sees_buffers_and_a_pickled_cache_arrives_empty():
    a = _model(0)
    b = copy.deepcopy(a)
    bn = next(m for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean += 0.5  # only a buffer differs: the model answers differently in eval mode
    assert model_fingerprint(a) != model_fingerprint(b) and model_fingerprint(a) == model_fingerprint(_model(0))
    old = OldAnswers()
    old.classes(a, _rows(0), DEV)
    moved = pickle.loads(pickle.dumps(old))  # another process: identities there are other objects
    assert moved.passes == 0 and moved._entries == []


_demo = load  # the demo's model, its first n counterexamples and its evaluation set


def test_repairs_on_one_prepared_draw_predict_the_old_model_once_and_another_model_gets_its_own(demo_dir):
    b, ce, ev = _demo(demo_dir)
    data = prepare_data(b, ce, ev)
    assert data.x_val is not None  # the demo's evaluation set has a check split: the guard scores the old model
    expected = _truth(b.model, data.x_eval)
    cfg = {"max_steps": 3, "min_steps": 1}
    first = run_repair(b, ce, config=cfg, data=data)
    again = run_repair(b, ce, method="lora", config=cfg, data=data)
    assert data.old.passes == 2  # the reported rows and the check rows, once for both repairs
    assert np.array_equal(first.before_pred, expected) and np.array_equal(again.before_pred, expected)
    # the step-0 score the guard falls back to is the old model's own: nothing fixed, nothing broken
    check = first.metrics.check
    assert check is not None and check.base.fixed == 0 and check.base.broken == 0 and check.base.kept == 1.0
    other = copy.deepcopy(b)  # another model on the same prepared draw: never the old model's answers
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    truth = _truth(other.model, data.x_eval)
    assert not np.array_equal(truth, expected)
    request = RunRequest.build("cpt", cfg, DataRefs(counterexamples=""))
    res = repair(other, request, data)
    assert np.array_equal(res.before_pred, truth) and data.old.passes == 4
    assert res.metrics.before.accuracy == float(np.mean(truth == data.y_eval))


def test_a_benchmark_predicts_the_base_model_once_for_all_its_draws_and_methods(demo_dir):
    from core.bench.benchmark import run_benchmark
    from core.bench.suites import demo_suite_at

    suite = demo_suite_at({name: demo_dir / name for name in ("model", "eval", "pool")})
    df = run_benchmark(suite, [1, 2], 1, ["last_layer"], auto=True, sweep=False, device="cpu", max_steps=2,
                       log=lambda s: None, paper=False)  # fmt: skip
    assert list(df["method"]) == ["last_layer", "cpt_auto"] * 2 and df["accuracy_before"].nunique() == 1
    assert (df[df["method"] == "cpt_auto"]["check_rows"] > 0).all()  # auto: a guarded repair per λ on the check split
    assert suite.old.passes == 2  # the reported rows and the check split, once for two draws × (method, 3 λ of auto)
    sent = suite.__getstate__()  # what a parallel backend sends its workers: the pixels, no tensors, no answers
    assert sent["shared_tensors"] == {} and sent["eval_pixels"] is not None and suite.shared_tensors
    assert pickle.loads(pickle.dumps(sent["old"])).passes == 0
