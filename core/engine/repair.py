"""A whole repair: data prepared once, the strength resolved, the loop run, before/after measured, files written.

:func:`repair` runs one typed :class:`core.engine.request.RunRequest` on prepared tensors;
:func:`run_repair` is the same from datasets, for the CLI, the benchmark and tests. The loop itself and
its stopping rules are in :mod:`core.engine.loop`. The evaluation set's rows with ``split == "val"``
are the validation set (the held-out rule and the live curves); the reported before/after numbers
use the other rows only, so no number shown to the user was used to steer the run.
"""

from __future__ import annotations

import csv
import json
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
from core.engine.checksplit import CHECK_SHARE, CheckSource, SplitCounts, split_dataset
from core.engine.devices import describe_device, select_device
from core.engine.inference import DiskImages, normalize, predict_logits
from core.engine.loop import PredictAdapter, PreparedData, Progress
from core.engine.metrics import compare_predictions, group_metrics
from core.engine.request import DataRefs, RunRequest
from core.engine.strength import STALL_STEPS, choose_strength
from core.errors import UserError
from core.formats.bundle import ModelBundle, save_bundle
from core.formats.datasets import ImageDataset, load_pixels


@dataclass
class RepairResult:
    """Everything a run produced; :func:`write_run` puts it on disk."""

    metrics: dict
    history: list[dict]
    merged_state: dict | None
    delta: dict | None
    layer_changes: list[dict]
    before_pred: np.ndarray
    after_pred: np.ndarray
    eval_indices: np.ndarray
    cancelled: bool = False
    stop_reason: str = ""
    config: dict = field(default_factory=dict)


def prepare_data(
    bundle: ModelBundle,
    counterexamples: ImageDataset,
    eval_set: ImageDataset | None = None,
    validation: ImageDataset | None = None,
    unlabeled: ImageDataset | None = None,
    eval_pixels: np.ndarray | None = None,
    reference: ImageDataset | None = None,
    check_share: float = CHECK_SHARE,
) -> PreparedData:
    """Decode every image once, up front, so the loop never decodes an image again.

    The counterexamples (few, used at every step) become a tensor. The evaluation, validation,
    unlabelled and reference images become :class:`core.engine.inference.DiskImages`: decoded once,
    in batches, into an anonymous file and read back a batch at a time, so that the memory a run
    holds does not grow with the number of images (``eval_pixels``, already decoded in memory by the
    benchmark's cache, are used as they are).

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

    x_ce = normalize(load_pixels(counterexamples, meta.input_size), meta.mean, meta.std)
    data = PreparedData(x_ce, torch.as_tensor(counterexamples.labels))
    if eval_set is not None:
        x_all = on_disk(eval_set) if eval_pixels is None else DiskImages(eval_pixels, meta.mean, meta.std, batch=1024)
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

    ``metrics["no_change"]`` is ``None`` when the model was changed, else ``{"code", "reason"}``:
    why the result is the old model (codes in :data:`core.engine.strength.NO_CHANGE_CODES`).
    ``progress`` receives the training steps' events and, with auto, its candidates' events
    (``{"phase": "auto", ...}``, see :func:`core.engine.strength.choose_strength`).
    """
    method, seed = request.method, request.seed
    dev = select_device(request.device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    auto_info = None
    cfg = request.config
    by_check = request.is_auto and checkauto.applies(cfg, data)  # auto steered by the labelled check split
    if request.is_auto and not by_check:
        auto_info = choose_strength(
            bundle,
            data,
            method,
            request.config,
            dev,
            seed=seed,
            progress=progress,
            should_stop=should_stop,
            backend=backend,
        )
        cfg = replace(request.config, strength=auto_info["chosen"]) if auto_info["chosen"] is not None else None
    if (auto_info is not None and auto_info.get("cancelled")) or (should_stop is not None and should_stop()):
        return _cancelled(request, auto_info, t0)
    class_names = bundle.meta.class_names
    base_model = bundle.model
    before = after = np.zeros(0, dtype=np.int64)
    if data.x_eval is not None:
        before = predict_logits(base_model.to(dev), data.x_eval, dev).argmax(1).numpy()
        base_model.to("cpu")

    impl = guard = None
    if cfg is not None:
        cfg = check_guard.resolve_rule(cfg, data)  # the check rule needs a check split, else the kept rule
    if cfg is None:  # auto chose "change nothing": the repaired model is the old one
        history, stop_reason, cancelled = [], "auto_no_change", False
        merged, delta, after = bundle.state_dict(), None, before.copy()
        cfg = request.config
        strength = None
    else:
        if by_check:
            run = checkauto.auto_by_check(base_model, method, cfg, data, dev, class_names, seed,
                                          progress=progress, should_stop=should_stop)  # fmt: skip
            auto_info = run.auto_info
        else:
            # With auto, the repair runs under the same rules its trials were scored with (they stop once
            # STALL_STEPS pass without a new counterexample fixed), so what was measured is what is run.
            run = checkauto.train_one(base_model, method, cfg, data, dev, class_names, seed, progress=progress,
                                      should_stop=should_stop,
                                      stall_steps=STALL_STEPS if auto_info is not None else None)  # fmt: skip
        impl, guard, cfg = run.impl, run.guard, run.config
        history, stop_reason, cancelled = run.history, run.stop_reason, run.cancelled
        if cancelled:  # nothing of a cancelled run is kept: stop now, without evaluating it
            return _cancelled(request, auto_info, t0, history)
        merged = impl.merged_state_dict()
        delta = impl.delta_state_dict()
        if data.x_eval is not None:
            after = predict_logits(PredictAdapter(impl), data.x_eval, dev).argmax(1).numpy()
        no_strength = auto_info is not None and auto_info["chosen"] is None  # auto on the check split: no change
        strength = None if no_strength else getattr(cfg, "strength", None)
    ref_agreement = None
    no_change = None
    if auto_info is not None and auto_info["chosen"] is None:
        no_change = {"code": auto_info["code"], "reason": auto_info["rule"]}
    elif guard is not None and not cancelled and guard.report.step == 0:
        no_change = check_guard.no_change(cfg)
    elif not cancelled and "restored step 0 " in stop_reason:
        no_change = (
            {
                "code": "kept_floor",
                "reason": f"every step that fixed a counterexample changed more than {1 - cfg.keep_floor:.0%} of "
                "the answers on the reference images, so the old model is kept",
            }
            if stop_reason.startswith("kept_floor")
            else {
                "code": "nothing_fixed",
                "reason": "no step fixed more counterexamples than the old model, so the old model is kept",
            }
        )
    if impl is not None and impl.reference is not None:
        ref_agreement = impl.reference.agreement(impl.predict)
    metrics: dict = {"method": method, "strength": strength, "steps": len(history)}
    if data.x_eval is not None:
        metrics["before"] = group_metrics(data.y_eval, before, data.attr_eval, class_names)
        metrics["after"] = group_metrics(data.y_eval, after, data.attr_eval, class_names)
        metrics.update(compare_predictions(data.y_eval, before, after))
    metrics.update(
        {
            "seconds": time.perf_counter() - t0,
            "device": describe_device(dev),
            "stop_reason": stop_reason,
            "cancelled": cancelled,
            "counterexamples": int(len(data.y_ce)),
            "counterexamples_fixed": history[-1]["fixed"] if history else None,
            "config": asdict(cfg),
            "auto_strength": auto_info,
            "seed": seed,
            "no_change": no_change,
            "reference_agreement": ref_agreement,
            "split": data.split.to_json() if data.split is not None else None,
            "check": guard.report.to_json() if guard is not None and not cancelled else None,
        }
    )
    return RepairResult(
        metrics=metrics,
        history=history,
        merged_state=merged,
        delta=delta,
        layer_changes=layer_changes(delta, bundle.state_dict()),
        before_pred=before,
        after_pred=after,
        eval_indices=data.eval_indices if data.eval_indices is not None else np.zeros(0, dtype=np.int64),
        cancelled=cancelled,
        stop_reason=stop_reason,
        config=asdict(cfg),
    )


def _cancelled(request: RunRequest, auto_info: dict | None, t0: float, history: list[dict] | None = None):
    """The result of a run cancelled in the sweep or the loop: its steps so far and nothing else."""
    history = history or []
    metrics = {
        "method": request.method,
        "steps": len(history),
        "cancelled": True,
        "stop_reason": "cancelled",
        "auto_strength": auto_info,
        "seconds": time.perf_counter() - t0,
    }
    return RepairResult(
        metrics=metrics,
        history=history,
        merged_state=None,
        delta=None,
        layer_changes=[],
        before_pred=np.zeros(0, dtype=np.int64),
        after_pred=np.zeros(0, dtype=np.int64),
        eval_indices=np.zeros(0, dtype=np.int64),
        cancelled=True,
        stop_reason="cancelled",
        config=asdict(request.config),
    )


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
    """Write a run folder: metrics.json, model/, delta.safetensors, history.csv, predictions.csv,
    layer_changes.csv."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_jsonable(result.metrics), indent=2), encoding="utf-8")
    if result.merged_state is not None:
        save_bundle(result.merged_state, meta, out / "model")
    if result.delta:
        save_file({k: v.contiguous() for k, v in result.delta.items()}, str(out / "delta.safetensors"))
    _write_csv(
        out / "history.csv",
        result.history,
        ["step", "loss", "task_loss", "penalty", "fixed", "total", "heldout_worst_group", "elapsed_s"],
    )
    rows = []
    for k, i in enumerate(result.eval_indices.tolist()):
        rec = eval_set.records[i] if eval_set is not None else None
        rows.append(
            {
                "index": i,
                "path": rec.path if rec else "",
                "label": rec.label if rec else "",
                "attribute": (rec.attribute or "") if rec else "",
                "before": int(result.before_pred[k]),
                "after": int(result.after_pred[k]),
            }
        )
    _write_csv(out / "predictions.csv", rows, ["index", "path", "label", "attribute", "before", "after"])
    _write_csv(out / "layer_changes.csv", result.layer_changes, ["layer", "norm", "relative", "parameters"])
    return out


def _write_csv(path: Path, rows: list[dict], cols: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
