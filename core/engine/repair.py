"""A whole repair: data prepared once, the strength resolved, the loop run, before/after measured, files written.

:func:`repair` runs one typed :class:`core.engine.request.RunRequest` on prepared tensors;
:func:`run_repair` is the same from datasets, for the CLI, the benchmark and tests. The loop itself and
its stopping rules are in :mod:`core.engine.loop`. The evaluation set's rows with ``split == "val"``
are the validation set (the held-out rule and the live curves); the reported before/after numbers
use the other rows only, so no number shown to the user was used to steer the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from core.engine import checkauto
from core.engine import guard as check_guard
from core.engine.check_results import CheckSource, SplitCounts
from core.engine.check_rows import CHECK_SHARE
from core.engine.checksplit import split_dataset
from core.engine.configs import strength_of
from core.engine.devices import describe_device, select_device
from core.engine.events import Progress, StepEvent
from core.engine.inference import DiskImages, normalize, predict_logits
from core.engine.loop import PredictAdapter, PreparedData
from core.engine.methods.base import RepairMethod
from core.engine.metrics import compare_predictions, group_metrics
from core.engine.request import DataRefs, RunRequest
from core.engine.results import (
    AutoReport,
    Comparison,
    GroupMetrics,
    LoopResult,
    NoChange,
    NoChangeCode,
    RestoreRule,
    RunMetrics,
    Stop,
    StopReason,
)
from core.engine.runfolder import PredictionRow, RunFolder
from core.engine.strength import STALL_STEPS, choose_strength
from core.errors import UserError
from core.formats.bundle import ModelBundle, save_bundle
from core.formats.datasets import ImageDataset, load_pixels


@dataclass
class RepairResult:
    """Everything a run produced; :func:`write_run` puts it on disk."""

    metrics: RunMetrics
    history: list[StepEvent]
    merged_state: dict | None
    delta: dict | None
    layer_changes: list[dict]
    before_pred: np.ndarray
    after_pred: np.ndarray
    eval_indices: np.ndarray
    config: dict = field(default_factory=dict)

    @property
    def cancelled(self) -> bool:
        return self.metrics.cancelled

    @property
    def stop(self) -> Stop:
        return self.metrics.stop


def prepare_data(
    bundle: ModelBundle,
    counterexamples: ImageDataset,
    eval_set: ImageDataset | None = None,
    validation: ImageDataset | None = None,
    unlabeled: ImageDataset | None = None,
    eval_pixels: np.ndarray | DiskImages | None = None,
    reference: ImageDataset | None = None,
    check_share: float = CHECK_SHARE,
) -> PreparedData:
    """Decode every image once, up front, so the loop never decodes an image again.

    The counterexamples (few, used at every step) become a tensor. The evaluation, validation,
    unlabelled and reference images become :class:`core.engine.inference.DiskImages`: decoded once,
    in batches, into an anonymous file and read back a batch at a time, so that the memory a run
    holds does not grow with the number of images (``eval_pixels``, already decoded by the benchmark's
    cache in memory or by the workbench's on disk, are used as they are).

    Reference images (see :mod:`core.engine.anchor`): ``reference`` if given, else the ``unlabeled``
    images, else none (the anchor and the kept floor are then off). Not the validation rows: they
    follow the unbiased evaluation distribution, not the typical one, and half their answers should
    change.

    The evaluation set's check split (:mod:`core.engine.checksplit`): its ``split=val`` rows, else a seeded,
    group-stratified ``check_share`` of it (0: none), becomes the validation part; the reported numbers use the rest.
    A separate ``validation`` set replaces it."""
    meta = bundle.meta
    if len(counterexamples) == 0:
        raise UserError("there are no counterexamples to tune on; label at least one")

    def on_disk(ds: ImageDataset) -> DiskImages:
        return DiskImages.decode(ds, meta)

    if eval_pixels is not None and not isinstance(eval_pixels, DiskImages):
        eval_pixels = DiskImages(eval_pixels, meta.mean, meta.std, batch=1024)
    x_ce = normalize(load_pixels(counterexamples, meta.input_size), meta.mean, meta.std)
    data = PreparedData(x_ce, torch.as_tensor(counterexamples.labels))
    if eval_set is not None:
        x_all = on_disk(eval_set) if eval_pixels is None else eval_pixels
        share = check_share if validation is None else 0.0  # a separate validation set is the check split
        rep, val, data.split = split_dataset(eval_set, share)  # the split=val rows, else a carved share
        data.x_eval, data.eval_indices = x_all.subset(rep), rep
        labels, attributes = eval_set.labels, eval_set.attributes  # each a whole-set list: built once, not per row
        data.y_eval = labels[rep]
        data.attr_eval = [attributes[i] for i in rep]
        if validation is None and len(val):
            data.x_val, data.y_val = x_all.subset(val), labels[val]
            data.attr_val = [attributes[i] for i in val]
    if validation is not None:
        data.x_val, data.y_val, data.attr_val = on_disk(validation), validation.labels, validation.attributes
        reported = data.split.reported if data.split is not None else 0
        data.split = SplitCounts(reported, len(validation), CheckSource.VAL_ROWS)
    if unlabeled is not None:
        data.unlabeled = on_disk(unlabeled)
    if reference is not None:
        data.reference = on_disk(reference)
    elif data.unlabeled is not None:
        data.reference = data.unlabeled
    return data


def layer_changes(delta: dict[str, torch.Tensor] | None, base_state: dict[str, torch.Tensor]) -> list[dict]:
    """‖δ‖ and ‖δ‖/‖θ‖ per layer (parameters grouped by module), largest relative change first."""
    if not delta:
        return []
    layers: dict[str, list[float]] = {}
    for name, d in delta.items():
        layer = name.rsplit(".", 1)[0]
        acc = layers.setdefault(layer, [0.0, 0.0, 0])
        acc[0] += float(d.float().pow(2).sum())
        acc[1] += float(base_state[name].float().pow(2).sum())
        acc[2] += int(d.numel())
    rows = [
        {
            "layer": k,
            "norm": math.sqrt(v[0]),
            "relative": math.sqrt(v[0]) / math.sqrt(v[1]) if v[1] > 0 else float("nan"),
            "parameters": v[2],
        }
        for k, v in layers.items()
    ]
    return sorted(rows, key=lambda r: -r["relative"] if r["relative"] == r["relative"] else 0)


def repair(
    bundle: ModelBundle,
    request: RunRequest,
    data: PreparedData,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    backend=None,
) -> RepairResult:
    """Run one typed request on prepared tensors; evaluate before/after on ``data``'s evaluation part.

    An automatic strength is resolved here, once, before the loop: :func:`core.engine.strength.choose_strength`
    picks λ from the counterexamples and the reference images only (never evaluation labels) or
    answers "change nothing".

    ``metrics.no_change`` is None when the model was changed, else a
    :class:`core.engine.results.NoChange`: why the result is the old model. ``progress`` receives the
    training steps' events and, with auto, its candidates' events (see
    :func:`core.engine.strength.choose_strength`).
    """
    dev = select_device(request.device)
    torch.manual_seed(request.seed)
    np.random.seed(request.seed)
    t0 = time.perf_counter()
    auto, cfg = None, request.config
    by_check = request.is_auto and checkauto.applies(cfg, data)  # auto steered by the labelled check split
    if request.is_auto and not by_check:
        auto = choose_strength(bundle, data, request.method, request.config, dev, seed=request.seed,
                               progress=progress, should_stop=should_stop, backend=backend)  # fmt: skip
        cfg = replace(request.config, strength=auto.chosen) if auto.chosen is not None else None
    if (auto is not None and auto.cancelled) or (should_stop is not None and should_stop()):
        return _cancelled(request, auto, t0)
    before = np.zeros(0, dtype=np.int64)
    if data.x_eval is not None:
        before = data.old.classes(bundle.model.to(dev), data.x_eval, dev)  # predicted once per prepared draw
        bundle.model.to("cpu")
    if cfg is None:  # auto chose "change nothing": the repaired model is the old one
        outcome = _Outcome(None, LoopResult([], Stop(StopReason.AUTO_NO_CHANGE)), bundle.state_dict(), None,
                           before.copy(), request.config)  # fmt: skip
    else:
        cfg = check_guard.resolve_rule(cfg, data)  # the check rule needs a check split, else it is the kept rule
        outcome = _train(bundle, request, cfg, data, dev, before, progress, should_stop, stall=auto is not None,
                         by_check=by_check)  # fmt: skip
        auto = outcome.auto or auto
        if outcome.loop.cancelled:  # nothing of a cancelled run is kept: stop now, without evaluating it
            return _cancelled(request, auto, t0, outcome.loop.history)
    metrics = _metrics(request, data, bundle.meta.class_names, outcome, auto, before, dev, t0)
    metrics = replace(metrics, counterexamples_fixed=_fixed_at_end(bundle, data, outcome, dev))
    return RepairResult(
        metrics=metrics,
        history=outcome.loop.history,
        merged_state=outcome.merged,
        delta=outcome.delta,
        layer_changes=layer_changes(outcome.delta, bundle.state_dict()),
        before_pred=before,
        after_pred=outcome.after,
        eval_indices=data.eval_indices if data.eval_indices is not None else np.zeros(0, dtype=np.int64),
        config=asdict(outcome.config),
    )


@dataclass
class _Outcome:
    """What the loop left (or, when auto changed nothing, the old model): the method, the loop's result,
    the repaired state, δ, the new answers and the config the run used."""

    impl: RepairMethod | None
    loop: LoopResult
    merged: dict | None
    delta: dict | None
    after: np.ndarray
    config: object
    guard: check_guard.CheckGuard | None = None  # the check rule's guard, holding its report
    auto: AutoReport | None = None  # automatic strength chosen on the check split


def _train(bundle, request, cfg, data, dev, before, progress, should_stop, stall: bool, by_check: bool) -> _Outcome:
    """The method built and run through the loop (:mod:`core.engine.checkauto`), its result merged and its answers on
    the evaluation part; with ``by_check``, automatic strength's guarded repairs on the check split, the best kept.

    With auto (``stall``), the repair runs under the same rules its trials were scored with (they stop once
    STALL_STEPS pass without a new counterexample fixed), so what was measured is what is run."""
    args = (bundle.model, request.method, cfg, data, dev, bundle.meta.class_names, request.seed)
    if by_check:
        run = checkauto.auto_by_check(*args, progress=progress, should_stop=should_stop)
    else:
        run = checkauto.train_one(*args, progress=progress, should_stop=should_stop,
                                  stall_steps=STALL_STEPS if stall else None)  # fmt: skip
    impl = run.impl
    if run.loop.cancelled:
        return _Outcome(impl, run.loop, None, None, before, run.config, run.guard, run.auto)
    after = before
    if data.x_eval is not None:
        after = predict_logits(PredictAdapter(impl), data.x_eval, dev).argmax(1).numpy()
    if run.auto is not None and run.auto.chosen is None:  # no λ beat the old model: it is the result, with no δ
        return _Outcome(impl, run.loop, bundle.state_dict(), None, after, run.config, run.guard, run.auto)
    merged, delta = impl.merged_state_dict(), impl.delta_state_dict()
    return _Outcome(impl, run.loop, merged, delta, after, run.config, run.guard, run.auto)


def _fixed_at_end(bundle, data, outcome: _Outcome, dev) -> int | None:
    """How many counterexamples the resulting model gets right: the step or strength the rule kept (or the old
    model), not the last step the loop ran."""
    if data.x_ce is None or not len(data.y_ce):
        return None
    keeps_old = outcome.impl is None or (outcome.auto is not None and outcome.auto.chosen is None)
    model = bundle.model.to(dev) if keeps_old else PredictAdapter(outcome.impl)
    pred = predict_logits(model, data.x_ce, dev).argmax(1)
    bundle.model.to("cpu")
    return int((pred == torch.as_tensor(data.y_ce).cpu()).sum())


def _no_change(auto: AutoReport | None, stop: Stop, cfg) -> NoChange | None:
    """Why the result is the old model: auto chose nothing, or the check or kept rule went back to step 0."""
    if auto is not None and auto.chosen is None:
        return auto.no_change
    if stop.kept_old_model and stop.restored.rule is RestoreRule.CHECK:
        return check_guard.no_change(cfg)
    if stop.kept_old_model:
        if stop.reason is StopReason.KEPT_FLOOR:
            return NoChange.of(NoChangeCode.KEPT_FLOOR, 1 - cfg.keep_floor)
        return NoChange.of(NoChangeCode.NOTHING_FIXED)
    return None


def _metrics(request, data, class_names, outcome: _Outcome, auto, before, dev, t0) -> RunMetrics:
    """The run's metrics: before/after on the evaluation part (when there is one), how it stopped and why
    it changed nothing (when it did not)."""
    impl, loop, after = outcome.impl, outcome.loop, outcome.after
    old = new = comparison = None
    if data.x_eval is not None:
        old = GroupMetrics.from_json(group_metrics(data.y_eval, before, data.attr_eval, class_names))
        new = GroupMetrics.from_json(group_metrics(data.y_eval, after, data.attr_eval, class_names))
        comparison = Comparison.from_json(compare_predictions(data.y_eval, before, after))
    reference = impl.reference if impl is not None else None
    return RunMetrics(
        method=request.method,
        strength=strength_of(outcome.config) if impl is not None and not (auto and auto.chosen is None) else None,
        steps=len(loop.history),
        before=old,
        after=new,
        comparison=comparison,
        seconds=time.perf_counter() - t0,
        device=describe_device(dev),
        stop=loop.stop,
        cancelled=False,
        counterexamples=int(len(data.y_ce)),
        config=asdict(outcome.config),
        auto_strength=auto,
        seed=request.seed,
        no_change=_no_change(auto, loop.stop, outcome.config),
        reference_agreement=reference.agreement(impl.predict) if reference is not None else None,
        split=data.split,
        check=outcome.guard.report if outcome.guard is not None else None,
    )


def _cancelled(request: RunRequest, auto: AutoReport | None, t0: float, history: list[StepEvent] | None = None):
    """The result of a run cancelled in the sweep or the loop: its steps so far and nothing else."""
    history = history or []
    metrics = RunMetrics(
        method=request.method,
        steps=len(history),
        stop=Stop(StopReason.CANCELLED),
        cancelled=True,
        auto_strength=auto,
        seconds=time.perf_counter() - t0,
    )
    empty = np.zeros(0, dtype=np.int64)
    return RepairResult(metrics, history, None, None, [], empty, empty, empty, config=asdict(request.config))


def run_repair(
    bundle: ModelBundle,
    counterexamples: ImageDataset,
    eval_set: ImageDataset | None = None,
    *,
    method: str = "cpt",
    config: dict | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    validation: ImageDataset | None = None,
    unlabeled: ImageDataset | None = None,
    eval_pixels: np.ndarray | None = None,
    data: PreparedData | None = None,
    reference: ImageDataset | None = None,
    backend=None,
    check_share: float = CHECK_SHARE,
) -> RepairResult:
    """Repair ``bundle`` on ``counterexamples`` with ``method``; evaluate before/after on ``eval_set``.

    ``config`` holds the method's settings (:func:`core.engine.configs.config_schema`); ``strength``
    may be ``"auto"``. They are checked once, into a :class:`RunRequest`. ``reference``: typical
    unlabelled images for CPT's function-space anchor, the ``kept`` stopping rule and auto's kept
    estimate (:mod:`core.engine.anchor`); defaults as in :func:`prepare_data`. ``data`` skips the
    decoding when the tensors are already prepared (the benchmark, sweeps). ``backend``
    (:mod:`core.engine.backends`) is where automatic strength runs its trials. ``check_share``: the share of
    ``eval_set`` carved into the check split when it has no ``split=val`` rows (:mod:`core.engine.checksplit`).
    """
    request = RunRequest.build(method, config or {}, DataRefs(counterexamples=""), seed=seed, device=device)
    if data is None:
        data = prepare_data(
            bundle, counterexamples, eval_set, validation, unlabeled, eval_pixels, reference, check_share
        )
    return repair(bundle, request, data, progress=progress, should_stop=should_stop, backend=backend)


def write_run(result: RepairResult, meta, out_dir: str | Path, eval_set: ImageDataset | None = None) -> Path:
    """Write a run folder (:class:`core.engine.runfolder.RunFolder`): metrics.json, model/, delta.safetensors,
    history.csv, predictions.csv, layer_changes.csv."""
    folder = RunFolder(out_dir)
    folder.write_metrics(result.metrics)
    write_weights(folder, result.merged_state, result.delta or None, meta)  # no δ file for an empty δ
    folder.write_history(result.history)
    rows = []
    for k, i in enumerate(result.eval_indices.tolist()):
        rec = eval_set.records[i] if eval_set is not None else None
        rows.append(
            PredictionRow(
                index=i,
                path=rec.path if rec else "",
                label=rec.label if rec else "",
                attribute=(rec.attribute or "") if rec else "",
                before=int(result.before_pred[k]),
                after=int(result.after_pred[k]),
            )
        )
    folder.write_predictions(rows)
    folder.write_layer_changes(result.layer_changes)
    return folder.root


def write_weights(folder: RunFolder, merged_state: dict | None, delta: dict | None, meta) -> None:
    """The repaired model (a bundle in ``model/``) and δ of a run, each when it is not None."""
    folder.root.mkdir(parents=True, exist_ok=True)
    if merged_state is not None:
        save_bundle(merged_state, meta, folder.model_dir)
    if delta is not None:
        save_file({k: v.contiguous() for k, v in delta.items()}, str(folder.delta_file))
