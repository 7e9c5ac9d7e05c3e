"""Running a repair: the training loop, the stopping rules, evaluation and the run's files.

One loop serves every method in :mod:`core.methods`: each step calls ``method.update`` on a batch
of counterexamples, then checks the stopping rule.

* **paper** (Penzel et al. 2024, §3.3): stop as soon as every counterexample in the tuning set is
  classified correctly *and* at least ``min_steps`` (ε) steps have passed; otherwise run to
  ``max_steps``. Checked after each step on the current θ + δ.
* **kept**: the paper's rule, plus a floor on the label-free kept estimate: after every step, the
  share of reference images (typical, unlabelled; :mod:`core.anchor`) whose answer is unchanged is
  measured; as soon as it falls below ``keep_floor`` the run stops. Either way (floor, or the
  paper's condition, or ``max_steps``) the run ends on the step with the most counterexamples
  fixed among those above the floor, the earliest such step (the least change); that is step 0,
  the unchanged model, if no step fixed more than the old model did. Without reference images it
  is the paper's rule.
* **heldout**: every ``eval_every`` steps, measure worst-group accuracy on a labelled validation
  set; keep the best state, stop after ``patience`` checks without improvement, restore the best.

The evaluation set's rows with ``split == "val"`` are the validation set (used for the held-out
rule and the live curves); the reported before/after numbers use the other rows only, so no
number shown to the user was used to steer the run.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from core.bundle import ModelBundle, save_bundle
from core.datasets import ImageDataset, load_pixels, normalize
from core.devices import describe_device, select_device
from core.errors import UserError
from core.methods import get_method, make_config
from core.metrics import compare_predictions, group_metrics, predict_logits

Progress = Callable[[dict], None]


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


@dataclass
class PreparedData:
    """Tensors for one run: counterexamples, the reported evaluation part and the validation part."""

    x_ce: torch.Tensor
    y_ce: torch.Tensor
    x_eval: torch.Tensor | None = None
    y_eval: np.ndarray | None = None
    attr_eval: list | None = None
    eval_indices: np.ndarray | None = None
    x_val: torch.Tensor | None = None
    y_val: np.ndarray | None = None
    attr_val: list | None = None
    unlabeled: torch.Tensor | None = None
    reference: torch.Tensor | None = None  # typical unlabelled images: anchor + kept estimate


def split_eval(dataset: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the reported rows and of the validation rows (``split == "val"``)."""
    splits = np.array([(r.split or "").lower() for r in dataset.records])
    val = np.flatnonzero(splits == "val")
    rep = np.flatnonzero(splits != "val")
    return rep, val


def prepare_data(
    bundle: ModelBundle,
    counterexamples: ImageDataset,
    eval_set: ImageDataset | None = None,
    validation: ImageDataset | None = None,
    unlabeled: ImageDataset | None = None,
    eval_pixels: np.ndarray | None = None,
    reference: ImageDataset | None = None,
) -> PreparedData:
    """Decode and normalise every image once, up front, so the loop touches only tensors.

    Reference images (see :mod:`core.anchor`): ``reference`` if given, else the ``unlabeled``
    images, else none (the anchor and the kept floor are then off). Not the validation rows: they
    follow the unbiased evaluation distribution, not the typical one, and half their answers should
    change."""
    meta = bundle.meta
    if len(counterexamples) == 0:
        raise UserError("there are no counterexamples to tune on; label at least one")

    def tensors(ds: ImageDataset, pixels=None) -> torch.Tensor:
        return normalize(load_pixels(ds, meta.input_size) if pixels is None else pixels, meta.mean, meta.std)

    data = PreparedData(tensors(counterexamples), torch.as_tensor(counterexamples.labels))
    if eval_set is not None:
        x_all = tensors(eval_set, eval_pixels)
        rep, val = split_eval(eval_set)
        data.x_eval, data.eval_indices = x_all[rep], rep
        data.y_eval = eval_set.labels[rep]
        data.attr_eval = [eval_set.attributes[i] for i in rep]
        if validation is None and len(val):
            data.x_val, data.y_val = x_all[val], eval_set.labels[val]
            data.attr_val = [eval_set.attributes[i] for i in val]
    if validation is not None:
        data.x_val, data.y_val, data.attr_val = tensors(validation), validation.labels, validation.attributes
    if unlabeled is not None:
        data.unlabeled = tensors(unlabeled)
    if reference is not None:
        data.reference = tensors(reference)
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


def _worst_group(preds, y, attrs, class_names) -> float:
    return group_metrics(y, preds, attrs, class_names, bootstrap=0)["worst_group_accuracy"]


def train_method(
    method,
    data: PreparedData,
    config,
    device: torch.device,
    class_names: list[str],
    *,
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[list[dict], str, bool]:
    """The shared loop. Returns (history, stop_reason, cancelled); the method holds the result."""
    gen = torch.Generator().manual_seed(seed)
    x_ce, y_ce = data.x_ce.to(device), data.y_ce.to(device)
    x_val = data.x_val.to(device) if data.x_val is not None else None
    n = len(y_ce)
    history: list[dict] = []
    best = (-1.0, None, 0)  # (score, snapshot, step) for the held-out rule
    since_best = 0
    if config.stop_rule == "heldout" and x_val is None:
        raise UserError("stop_rule 'heldout' needs a labelled validation set (rows with split=val)")
    stop_reason, cancelled = "max_steps", False
    ref = getattr(method, "reference", None)
    kept_rule = config.stop_rule == "kept" and ref is not None
    floor = getattr(config, "keep_floor", 0.97)
    if kept_rule:  # step 0 = the unchanged model, the fallback when no step stays above the floor
        kept_best = (int((method.predict(x_ce).argmax(1) == y_ce).sum()), method.snapshot(), 0)
    start = time.perf_counter()
    for step in range(1, config.max_steps + 1):
        if should_stop is not None and should_stop():
            stop_reason, cancelled = "cancelled", True
            break
        if n > config.batch_size:
            idx = torch.randperm(n, generator=gen)[: config.batch_size].to(device)
            stats = method.update(x_ce[idx], y_ce[idx])
        else:
            stats = method.update(x_ce, y_ce)
        fixed = int((method.predict(x_ce).argmax(1) == y_ce).sum())
        heldout = None
        if x_val is not None and (step % config.eval_every == 0 or step == config.max_steps):
            val_pred = predict_logits(_PredictAdapter(method), x_val, device).argmax(1).numpy()
            heldout = _worst_group(val_pred, data.y_val, data.attr_val, class_names)
        event = {
            "step": step,
            "max_steps": config.max_steps,
            **stats,
            "fixed": fixed,
            "total": n,
            "heldout_worst_group": heldout,
            "reference_agreement": ref.agreement(method.predict) if kept_rule else None,
            "elapsed_s": time.perf_counter() - start,
            "device": describe_device(device),
        }
        history.append(event)
        if progress is not None:
            progress(event)
        if not all(math.isfinite(stats[k]) for k in ("loss", "task_loss", "penalty")):
            stop_reason = "diverged"
            break
        if kept_rule:
            if event["reference_agreement"] < floor:
                stop_reason = "kept_floor"
                break
            if fixed > kept_best[0]:  # ties keep the earlier step: the least change that fixes as many
                kept_best = (fixed, None, step)  # the current state; snapshot taken only if needed
        if config.stop_rule in ("paper", "kept") and fixed == n and step >= config.min_steps:
            stop_reason = "all_fixed"
            break
        if kept_rule and kept_best[2] == step:
            kept_best = (fixed, method.snapshot(), step)
        if config.stop_rule == "heldout" and heldout is not None:
            if heldout > best[0]:
                best, since_best = (heldout, method.snapshot(), step), 0
            else:
                since_best += 1
                if since_best >= config.patience and step >= config.min_steps:
                    stop_reason = "heldout_patience"
                    break
    if kept_rule and not cancelled and history and kept_best[2] != history[-1]["step"]:
        method.restore(kept_best[1])
        stop_reason = f"{stop_reason}; restored step {kept_best[2]} ({kept_best[0]}/{n} fixed)"
    if config.stop_rule == "heldout" and best[1] is not None and not cancelled:
        method.restore(best[1])
        stop_reason = f"{stop_reason}; restored best held-out step {best[2]}"
    return history, stop_reason, cancelled


class _PredictAdapter(torch.nn.Module):
    """Lets :func:`predict_logits` batch over a method's ``predict``."""

    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, x):
        return self.method.predict(x)


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
) -> RepairResult:
    """Repair ``bundle`` on ``counterexamples`` with ``method``; evaluate before/after on ``eval_set``.

    ``config`` holds method settings (see ``core.methods.config_schema``); ``strength`` may be
    ``"auto"``, which picks λ with :func:`core.strength.choose_strength` (never using eval labels).
    ``reference``: typical unlabelled images for CPT's function-space anchor, the ``kept`` stopping
    rule and auto's kept estimate (:mod:`core.anchor`); defaults as in :func:`prepare_data`.

    ``metrics["no_change"]`` is ``None`` when the model was changed, else ``{"code", "reason"}``:
    why the result is the old model (codes in :data:`core.strength.NO_CHANGE_CODES`).
    ``progress`` receives the training steps' events and, with auto, its candidates' events
    (``{"phase": "auto", ...}``, see :func:`core.strength.choose_strength`).
    """
    dev = select_device(device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    if data is None:
        data = prepare_data(bundle, counterexamples, eval_set, validation, unlabeled, eval_pixels, reference)
    overrides = dict(config or {})
    auto_info = None
    if overrides.get("strength") == "auto":
        from core.strength import choose_strength

        auto_info = choose_strength(bundle, data, method, overrides, dev, seed=seed, progress=progress)
        overrides["strength"] = auto_info["chosen"]
    cfg = make_config(method, overrides) if not auto_info or auto_info["chosen"] is not None else None
    class_names = bundle.meta.class_names
    base_model = bundle.model
    before = after = np.zeros(0, dtype=np.int64)
    if data.x_eval is not None:
        before = predict_logits(base_model.to(dev), data.x_eval, dev).argmax(1).numpy()
        base_model.to("cpu")

    impl = None
    if cfg is None:  # auto chose "change nothing": the repaired model is the old one
        history, stop_reason, cancelled = [], "auto_no_change", False
        merged, delta, after = bundle.state_dict(), None, before.copy()
        cfg = make_config(method, {k: v for k, v in overrides.items() if k != "strength"})
        strength = None
    else:
        impl = get_method(method)(base_model, cfg, dev, unlabeled=data.unlabeled)
        if getattr(cfg, "anchor", 0) > 0 or cfg.stop_rule == "kept":
            impl.use_reference(data.reference, seed)
        history, stop_reason, cancelled = train_method(
            impl, data, cfg, dev, class_names, seed=seed, progress=progress, should_stop=should_stop
        )
        merged = impl.merged_state_dict()
        delta = impl.delta_state_dict()
        if data.x_eval is not None:
            after = predict_logits(_PredictAdapter(impl), data.x_eval, dev).argmax(1).numpy()
        strength = getattr(cfg, "strength", None)
    ref_agreement = None
    no_change = None
    if auto_info is not None and auto_info["chosen"] is None:
        no_change = {"code": auto_info["code"], "reason": auto_info["rule"]}
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
