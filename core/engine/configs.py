"""Every repair method's settings, without torch: one frozen dataclass per method, and the registry.

Hyperparameters are declared once, in a frozen dataclass per method whose field ``metadata``
carries the help text and widget hints (``min``, ``max``, ``log``, ``choices``). The CLI and the
workbench build their options from :func:`config_schema`, and :func:`make_config` is the one place
a user's values are checked. The implementations (:mod:`core.engine.methods`) need torch; this
module does not, so the workbench's page process can build and validate a run request.

``finetune`` is one method with named presets: ``finetune_es``, ``finetune_head`` and
``finetune_head_es`` are ``finetune`` with other defaults (the paper's baselines, docs/DESIGN.md §3).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from core.errors import UserError

PENALTIES = ("l2", "l1", "l1+l2", "nuclear")

# Defaults chosen on the three benchmark suites (docs/BENCHMARKS.md, "Choosing CPT's defaults").
# The paper's exact form: --set lr=0.001 --set anchor=0 --set stop_rule=paper.
LR_DEFAULT = 3e-5
ANCHOR_DEFAULT = 10.0
STOP_DEFAULT = "check"  # the labelled check split when there is one, else "kept"
KEEP_FLOOR_DEFAULT = 0.99
MAX_STEPS_DEFAULT = 200
BACKTRACKS_DEFAULT = 6
LR_SCALES = ("size", "none")
LR_SCALE_DEFAULT = "size"
SIZE_REFERENCE = 10_000_000  # lr_scale "size": lr is the step for a model with this many tuned weights
PAPER_FORM = {"lr": 1e-3, "lr_scale": "none", "anchor": 0.0, "stop_rule": "paper", "max_steps": 100, "backtracks": 0}
STOP_RULES = ("paper", "heldout", "none", "kept", "check")
# Augmented copies of the counterexamples (core.engine.augment): torchvision crops, flips and erasing, no colour.
AUGMENT_POLICIES = ("none", "crop", "flip", "erase", "crop+flip", "crop+erase", "crop+flip+erase")
CHECK_FLOOR_DEFAULT = 0.97
# The invariance hint (core.engine.invariance): what the user says should not matter.
INVARIANCES = ("none", "colour", "flip", "region")


def hp(default, help: str, **hints):
    """A dataclass field with help text and widget hints kept in its metadata."""
    return field(default=default, metadata={"help": help, **hints})


@dataclass(frozen=True)
class MethodConfig:
    """Settings shared by every method: optimiser, step budget, stopping rule, tuned parameters."""

    lr: float = hp(1e-3, "Adam step size.", min=1e-5, max=1e-1, log=True)
    max_steps: int = hp(100, "Upper bound on optimizer steps.", min=1, max=5000)
    min_steps: int = hp(
        10,
        "ε of the paper's rule: never stop before this many steps, even if every counterexample is already right.",
        min=0,
        max=5000,
    )
    stop_rule: str = hp(
        "paper",
        "paper: stop once every counterexample is right and at least min_steps have passed (Penzel et al. "
        "2024); heldout: keep the step with the best held-out worst-group accuracy, stop after `patience` "
        "checks without improvement (needs a labelled validation set); none: run max_steps; kept: the paper's "
        "rule, but also stop as soon as the share of reference images whose answer is unchanged falls below "
        "keep_floor, and keep the best step above the floor (no reference images: the paper's rule); check: steer "
        "by the labelled check split, keeping the step (and the strength after the fact, θ + α·δ) with the best "
        "worst-group and balanced accuracy there among those that keep check_floor of its right decisions (no check "
        "split: the kept rule).",
        choices=STOP_RULES,
    )
    keep_floor: float = hp(
        0.97,
        "kept rule: the lowest share of reference images (typical, unlabelled) that must keep the old "
        "model's answer; the run keeps the step with the most counterexamples fixed above it.",
        min=0.0,
        max=1.0,
    )
    backtracks: int = hp(
        0,
        "kept rule: when a step takes the share of unchanged reference answers under keep_floor, undo it and "
        "halve the step size, up to this many times, before stopping at the floor (0: stop at once).",
        min=0,
        max=20,
    )
    check_floor: float = hp(
        CHECK_FLOOR_DEFAULT,
        "check rule: the least share of the labelled check split's right decisions a chosen step must keep "
        "(the check split: the evaluation rows marked split=val, else a share carved automatically).",
        min=0.0,
        max=1.0,
    )
    augment: str = hp(
        "none",
        "Augmented copies of the counterexamples at every step: crop (a random 70–100 % crop, resized back), flip "
        "(left-right; not for digits or text), erase (a random small rectangle blanked), or combinations; none: off.",
        choices=AUGMENT_POLICIES,
    )
    patience: int = hp(5, "Held-out rule: checks without improvement before stopping.", min=1, max=100)
    eval_every: int = hp(5, "Held-out rule and live curves: steps between held-out checks.", min=1, max=500)
    batch_size: int = hp(64, "Counterexamples per step (all of them when there are fewer).", min=1, max=4096)
    params: str = hp(
        "all",
        "Which weights may change: 'all', 'classifier' (the last linear layer), or comma-separated name "
        "patterns such as 'features.2.*,classifier.*'.",
    )


@dataclass(frozen=True)
class CPTConfig(MethodConfig):
    lr: float = hp(
        LR_DEFAULT,
        "Adam step size. Adam's first steps move every weight by about this much whatever the penalty, so on "
        "large models the paper's 1e-3 changes far more than the penalty allows; 3e-5 lets the penalty and the "
        "anchor act.",
        min=1e-6,
        max=1e-1,
        log=True,
    )
    optimizer: str = hp(
        "adam",
        "adam: Adam with step size lr; ngd: normalised gradient descent, each step moves δ by the share lr of "
        "‖θ‖ along the gradient.",
        choices=("adam", "ngd"),
    )
    lr_scale: str = hp(
        LR_SCALE_DEFAULT,
        "size: the Adam step is lr·√(10,000,000 / n) for a model with n tuned weights, so the first steps "
        "change the weights by the same overall amount (‖step‖ ≈ lr·√10⁷) on a small network as on a large "
        "one; lr is the step of a 10-million-weight model (ResNet-18 has 11 M). none: lr as given (the paper).",
        choices=LR_SCALES,
    )
    max_steps: int = hp(MAX_STEPS_DEFAULT, "Upper bound on optimizer steps.", min=1, max=5000)
    stop_rule: str = hp(
        STOP_DEFAULT,
        MethodConfig.__dataclass_fields__["stop_rule"].metadata["help"],
        choices=STOP_RULES,
    )
    keep_floor: float = hp(
        KEEP_FLOOR_DEFAULT,
        MethodConfig.__dataclass_fields__["keep_floor"].metadata["help"],
        min=0.0,
        max=1.0,
    )
    backtracks: int = hp(
        BACKTRACKS_DEFAULT,
        MethodConfig.__dataclass_fields__["backtracks"].metadata["help"],
        min=0,
        max=20,
    )
    strength: float = hp(
        1000.0,
        "λ: how strongly any change to the model is penalised. Low = change freely; high = protect current "
        "behaviour. The penalty is relative to the model's own weights, so a value means the same for any model.",
        min=1.0,
        max=1e6,
        log=True,
    )
    penalty: str = hp(
        "l2",
        "Shape of the change penalty: l2 (small everywhere), l1 (few weights), l1+l2, nuclear (low rank).",
        choices=PENALTIES,
    )
    anchor: float = hp(
        ANCHOR_DEFAULT,
        "μ: weight of the function-space anchor, μ·KL(old model ‖ repaired model) on a minibatch of unlabelled "
        "reference images (typical inputs). Keeps the answers on ordinary images, not just the weights. "
        "0 = off (the paper's form); it also does nothing without reference images.",
        min=0.0,
        max=1e4,
    )
    anchor_batch: int = hp(64, "Reference images per step for the anchor.", min=1, max=4096)
    invariance: str = hp(
        "none",
        "What should not matter, enforced on reference images: the repaired model must give a transformed "
        "reference image the old model's answer on the original. colour: random gains, offsets and channel order; "
        "flip: left-right and up-down flips (where a mark sits); region: the boxes of invariance_region blanked.",
        choices=INVARIANCES,
    )
    invariance_region: str = hp(
        "",
        "For invariance 'region': boxes x0,y0,x1,y1 in fractions of the image (0–1), several separated by ';' "
        "(e.g. 0,0,0.2,0.2 for the top-left corner).",
    )
    invariance_weight: float = hp(10.0, "ν: weight of the invariance term (needs reference images).", min=0.0, max=1e4)
    mix: float = hp(
        0.0,
        "Weight of CutMix between the counterexamples and reference images: a box of a counterexample pasted into "
        "a typical image at the same place, the label mixed by area (the typical image's label: the old model's "
        "answer). 0 = off; needs reference images.",
        min=0.0,
        max=100.0,
    )


@dataclass(frozen=True)
class FineTuneConfig(MethodConfig):
    """Plain fine-tuning of θ itself: all layers, a fixed budget (the presets change both)."""

    stop_rule: str = hp("none", **MethodConfig.__dataclass_fields__["stop_rule"].metadata)


@dataclass(frozen=True)
class L2SPConfig(MethodConfig):
    strength: float = hp(
        1000.0,
        "λ (the α of Li et al. 2018): how strongly the weights are pulled back to where they started, "
        "relative to their own size.",
        min=1.0,
        max=1e6,
        log=True,
    )


@dataclass(frozen=True)
class LastLayerConfig(MethodConfig):
    typical_weight: float = hp(
        1.0,
        "μ: how much keeping the old decisions on typical images counts against fitting the counterexamples.",
        min=0.0,
        max=1000.0,
    )
    typical_images: int = hp(512, "How many unlabelled typical images to keep decisions on.", min=1, max=100000)


@dataclass(frozen=True)
class LoRAConfig(MethodConfig):
    rank: int = hp(4, "r: the rank of each weight change (capped by the layer's size).", min=1, max=256)
    alpha: float = hp(4.0, "LoRA scale α; the change is (α/r)·B·A.", min=0.01, max=1024.0, log=True)


@dataclass(frozen=True)
class MASConfig(MethodConfig):
    strength: float = hp(
        1000.0,
        "λ: how strongly weights that matter to the current outputs are held in place.",
        min=1.0,
        max=1e6,
        log=True,
    )
    importance_images: int = hp(
        256, "How many unlabelled images estimate each weight's importance Ω.", min=1, max=100000
    )


@dataclass(frozen=True)
class SideTuningConfig(MethodConfig):
    side: str = hp(
        "small", "Side network: small (a new two-conv net) or copy (a copy of the base).", choices=("small", "copy")
    )
    alpha_mode: str = hp(
        "anneal",
        "anneal: α falls linearly from 1 to alpha_end over anneal_steps; fixed: α = alpha_end throughout.",
        choices=("anneal", "fixed"),
    )
    alpha_end: float = hp(
        0.5, "Weight of the base's output once annealed (or throughout when fixed).", min=0.0, max=1.0
    )
    anneal_steps: int = hp(20, "Steps over which α falls from 1 to alpha_end.", min=1, max=5000)
    side_width: int = hp(32, "Channels of the small side network.", min=4, max=512)


_TYPE_NAMES = {"int": "int", "float": "float", "str": "str", "bool": "bool"}


def describe_schema(config_cls) -> list[dict]:
    """Widget specs for a config dataclass: name, type, default, help and hints."""
    out = []
    for f in dataclasses.fields(config_cls):
        md = dict(f.metadata)
        out.append(
            {
                "name": f.name,
                "type": _TYPE_NAMES.get(f.type if isinstance(f.type, str) else f.type.__name__, "str"),
                "default": f.default,
                "help": md.get("help", ""),
                "min": md.get("min"),
                "max": md.get("max"),
                "log": md.get("log", False),
                "choices": md.get("choices"),
            }
        )
    return out


@dataclass(frozen=True)
class MethodSpec:
    """A method as the CLI and the workbench list it: name, title, settings, and what it needs."""

    name: str
    title: str
    config: type
    base: str  # the implementation in core.engine.methods (a preset names its parent method)
    defaults: dict[str, Any] = field(default_factory=dict)  # a preset's own defaults
    mergeable: bool = True  # the result is an ordinary model of the same architecture


SPECS: dict[str, MethodSpec] = {
    s.name: s
    for s in (
        MethodSpec("cpt", "Change-penalized tuning", CPTConfig, "cpt"),
        MethodSpec("finetune", "Fine-tuning (all layers)", FineTuneConfig, "finetune"),
        MethodSpec(
            "finetune_es",
            "Fine-tuning (all layers) + early stopping",
            FineTuneConfig,
            "finetune",
            {"stop_rule": "paper"},
        ),
        MethodSpec(
            "finetune_head",
            "Fine-tuning (classifier only)",
            FineTuneConfig,
            "finetune",
            {"params": "classifier"},
        ),
        MethodSpec(
            "finetune_head_es",
            "Fine-tuning (classifier only) + early stopping",
            FineTuneConfig,
            "finetune",
            {"params": "classifier", "stop_rule": "paper"},
        ),
        MethodSpec("l2sp", "L2-SP (fine-tuning pulled towards the start)", L2SPConfig, "l2sp"),
        MethodSpec("mas", "MAS (importance-weighted pull towards the start)", MASConfig, "mas"),
        MethodSpec(
            "side_tuning", "Side-tuning (frozen base + small side network)", SideTuningConfig, "side_tuning", {}, False
        ),
        MethodSpec("lora", "LoRA (low-rank change)", LoRAConfig, "lora"),
        MethodSpec("last_layer", "Last-layer retraining (DFR-style)", LastLayerConfig, "last_layer"),
    )
}


def method_spec(name: str) -> MethodSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; valid methods: {', '.join(SPECS)}") from None


def config_schema(name: str) -> list[dict]:
    """Widget specs (name, type, default, help, min, max, log, choices) of a method's settings,
    with a preset's own defaults in place."""
    spec = method_spec(name)
    return [{**f, "default": spec.defaults.get(f["name"], f["default"])} for f in describe_schema(spec.config)]


def make_config(name: str, overrides: dict | None = None):
    """Build a method's frozen config from its (preset) defaults plus ``overrides``, checking every value."""
    spec = method_spec(name)
    fields = {s["name"]: s for s in describe_schema(spec.config)}
    kwargs = dict(spec.defaults)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in fields:
            raise UserError(f"method {name!r} has no setting {key!r}; settings: {', '.join(fields)}")
        f = fields[key]
        caster = {"int": int, "float": float, "str": str, "bool": bool}[f["type"]]
        try:
            value = caster(value)
        except (TypeError, ValueError):
            raise UserError(f"setting {key} must be a {f['type']}, got {value!r}") from None
        if f["choices"] and value not in f["choices"]:
            raise UserError(f"setting {key} must be one of {', '.join(f['choices'])}, got {value!r}")
        if f["min"] is not None and value < f["min"]:
            raise UserError(f"setting {key} must be at least {f['min']}, got {value}")
        if f["max"] is not None and value > f["max"]:
            raise UserError(f"setting {key} must be at most {f['max']}, got {value}")
        kwargs[key] = value
    cfg = spec.config(**kwargs)
    if cfg.min_steps > cfg.max_steps:
        raise UserError(f"min_steps ({cfg.min_steps}) cannot exceed max_steps ({cfg.max_steps})")
    return cfg


def has_strength(name: str) -> bool:
    return any(f.name == "strength" for f in dataclasses.fields(method_spec(name).config))
