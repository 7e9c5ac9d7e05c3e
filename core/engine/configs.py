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
from typing import Any, ClassVar

from core.errors import UserError

PENALTIES = ("l2", "l1", "l1+l2", "nuclear")

# Defaults chosen on the three benchmark suites (docs/BENCHMARKS.md, "Choosing CPT's defaults").
# The paper's exact form: --set lr=0.001 --set anchor=0 --set stop_rule=paper.
LR_DEFAULT = 3e-5
# μ 3 and 5 under the check rule (2026-12-07, docs/BENCHMARKS.md "Third study"): μ 3 gained worst group on five of
# seven suites but lost 0.04 on standard-resnet18 and under the label-free kept rule; μ 5 lost 0.10 there. Kept at 10.
# μ 3 with check_early_steps=30 (docs/BENCHMARKS.md "Fourth study") passed the rule on all seven cells over draws 0
# and 1 (standard-resnet18 0.342 → 0.405 at kept 0.950), but a third draw took kept there to 0.947 < 0.95. Kept at 10.
ANCHOR_DEFAULT = 10.0
# The anchor holds the old model's confident answers harder: each reference image's KL times p_old(its answer)³,
# mean 1 (docs/BENCHMARKS.md "Fifth study", 2026-12-07, 16 shots, draws 0 and 1): worst group +0.037 / +0.081 on
# the demo at 4 / 16 shots, +0.028 photo, +0.027 standard-mobilenet, +0.034 shape-mobilenet, level on both ResNet-18
# suites (0.342 → 0.342, 0.302 → 0.296), accuracy up or level, kept ≥ 0.964; a third draw on mark-resnet18 and
# photo kept the 3-draw means within 0.01 (photo draw 2: the guard found no step and kept the old model).
ANCHOR_CONFIDENCE_DEFAULT = 3.0
STOP_DEFAULT = "check"  # the labelled check split when there is one, else "kept"
KEEP_FLOOR_DEFAULT = 0.99
# 400 steps changed nothing (same study): 13 of 14 guarded runs stop on the check split's patience before 200.
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
# 30 alone (docs/BENCHMARKS.md "Fourth study"): worst group +0.01 to +0.03 on four of seven cells, level on the others,
# but mark-resnet18 lost 0.021 of accuracy (a check-split peak the reported rows did not confirm). Kept at 0.
CHECK_EARLY_DEFAULT = 0
# CPT's importance-weighted change penalty (core.engine.methods.cpt): none, or MAS's Ω from the reference images.
IMPORTANCES = ("none", "mas")
IMPORTANCE_IMAGES = 256  # reference images that estimate Ω (MAS's own default count)
# The invariance hint (core.engine.invariance): what the user says should not matter.
INVARIANCES = ("none", "colour", "flip", "region")
KEEP_TARGET = 0.97  # automatic strength: the least share of reference answers a chosen λ must keep (estimated)

STOP_RULE_HELP = (
    "check (default): every few steps the repair is measured on the check images (evaluation rows set aside, "
    "never in the reported numbers); it keeps the step, and the strength after the fact, with the best "
    "worst-group and balanced accuracy among those that keep enough of their right answers. Without check "
    "images it works like kept. kept: like paper, but also stop before the old answers on the reference "
    "images change more than allowed, keeping the best step. paper: once every counterexample is right "
    "(after the fewest steps). heldout: keep the best step on the held-out check images. none: run all "
    "steps."
)
KEEP_FLOOR_HELP = (
    "For “kept”: the least share of reference images that must keep the old answer. The repair stops before it "
    "changes more, and keeps the best step above it."
)
BACKTRACKS_HELP = (
    "For “kept”: when a step would change more of the answers on reference images than allowed, it is undone and "
    "retried with half the step, up to this many times, before the repair stops. 0: stop at once."
)


def hp(default, help: str, **hints):
    """A dataclass field with help text and widget hints kept in its metadata."""
    return field(default=default, metadata={"help": help, **hints})


@dataclass(frozen=True)
class MethodConfig:
    """Settings shared by every method: optimiser, step budget, stopping rule, tuned parameters.

    Each field's ``help`` is the one wording of its help text: the English of ``cfg_<name>_help`` in
    ``assets/i18n`` (a test keeps them equal); what a developer needs beyond it is in the comments."""

    renamed: ClassVar[dict[str, str]] = {}  # an old setting name a user may still type → its name now

    lr: float = hp(1e-3, "How big each learning step is.", min=1e-5, max=1e-1, log=True)  # Adam's step size
    max_steps: int = hp(100, "The repair stops here at the latest.", min=1, max=5000)
    # ε of the paper's rule (Penzel et al. 2024, §3.3).
    min_steps: int = hp(
        10, "Never stop before this many steps, even if every counterexample is already right.", min=0, max=5000
    )
    # paper: stop once every counterexample is right and at least min_steps have passed; heldout: keep the
    # step with the best held-out worst-group accuracy, stop after `patience` checks without improvement
    # (needs a labelled validation set); none: run max_steps; kept: the paper's rule, but also stop as soon
    # as the share of reference images whose answer is unchanged falls below keep_floor, and keep the best
    # step above the floor (no reference images: the paper's rule). See core.engine.loop.
    stop_rule: str = hp("paper", STOP_RULE_HELP, choices=STOP_RULES)
    keep_floor: float = hp(0.97, KEEP_FLOOR_HELP, min=0.0, max=1.0)
    backtracks: int = hp(0, BACKTRACKS_HELP, min=0, max=20)
    # check rule: the guard on the labelled check split (core.engine.guard)
    check_floor: float = hp(
        CHECK_FLOOR_DEFAULT,
        "For “check”: the least share of the check images' right answers that the repair must keep. The "
        "check images are the evaluation rows marked split=val, or a share set aside automatically; they are "
        "never in the reported numbers.",
        min=0.0,
        max=1.0,
    )
    # the guard scores every step in this many first steps, then every GUARD_EVERY (core.engine.guard); its
    # patience is counted in steps, so the run does not stop sooner
    check_early_steps: int = hp(
        CHECK_EARLY_DEFAULT,
        "For “check”: during this many first steps the check images are measured after every step instead of "
        "every fifth, so that a best step early in the repair is not missed. 0: every fifth step throughout.",
        min=0,
        max=5000,
    )
    # fresh random copies of the counterexamples at every step (core.engine.augment); no colour jitter
    augment: str = hp(
        "none",
        "At every step each counterexample is shown as a fresh random copy: crop (a random part of 70–100 % "
        "of the image, resized back), flip (mirrored left-right; not for digits or text), erase (a small "
        "random rectangle blanked), or combinations. none: as they are.",
        choices=AUGMENT_POLICIES,
    )
    patience: int = hp(5, "For “heldout”: checks without improvement before stopping.", min=1, max=100)
    eval_every: int = hp(5, "Steps between held-out checks (also the live curve).", min=1, max=500)
    batch_size: int = hp(64, "All counterexamples are used when there are fewer.", min=1, max=4096)
    # 'all', 'classifier' (the last linear layer), or comma-separated fnmatch patterns such as
    # 'features.2.*,classifier.*' (core.engine.methods.base.select_parameters).
    params: str = hp("all", "“all”, “classifier” (last layer only) or name patterns.")


@dataclass(frozen=True)
class CPTConfig(MethodConfig):
    # Adam's first steps move every weight by about lr whatever the penalty, so on large models the paper's
    # 1e-3 changes far more than the penalty allows; 3e-5 lets the penalty and the anchor act.
    lr: float = hp(LR_DEFAULT, "How big each learning step is.", min=1e-6, max=1e-1, log=True)
    # ngd: normalised gradient descent, each step moves δ by the share lr of ‖θ‖ along the gradient.
    optimizer: str = hp(
        "adam",
        "adam (default): Adam with the step size above. ngd: each step moves the change along the gradient by a "
        "fixed share (the step size) of the weights' own size.",
        choices=("adam", "ngd"),
    )
    # size: the Adam step is lr·√(10,000,000 / n) for n tuned weights, so that the first steps change the
    # weights by the same overall amount (‖step‖ ≈ lr·√10⁷) on a small network as on a large one
    # (ResNet-18 has 11 M weights). none: lr as given (the paper).
    lr_scale: str = hp(
        LR_SCALE_DEFAULT,
        "size (default): the step is scaled to the number of weights that may change, so a small network and a "
        "large one change by the same overall amount per step; the step size above is the one for a "
        "10-million-weight model. none: the step size exactly as given (the paper's form).",
        choices=LR_SCALES,
    )
    max_steps: int = hp(MAX_STEPS_DEFAULT, "The repair stops here at the latest.", min=1, max=5000)
    stop_rule: str = hp(STOP_DEFAULT, STOP_RULE_HELP, choices=STOP_RULES)
    keep_floor: float = hp(KEEP_FLOOR_DEFAULT, KEEP_FLOOR_HELP, min=0.0, max=1.0)
    backtracks: int = hp(BACKTRACKS_DEFAULT, BACKTRACKS_HELP, min=0, max=20)
    # λ of Eq. 1; relative to the model's own weights (core.engine.penalties), so a value means the same
    # for any model. The Repair page shows it as its slider, with words of its own.
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
        "l2: small changes everywhere (default). l1: change few weights. nuclear: simple, low-rank changes.",
        choices=PENALTIES,
    )
    # mas: λ·Σ Ωᵢδᵢ² / Σ Ωᵢθᵢ² with MAS's Ω (Aljundi et al. 2018, Eq. 2) from the reference images (else the
    # counterexample images), normalised as MAS normalises it, so λ keeps its meaning; only with penalty l2.
    importance: str = hp(
        "none",
        "mas: the weights the old model's answers on the reference images depend on most are held harder, the "
        "others may change more (the l2 penalty weighted by each weight's importance, as in MAS). none: every "
        "weight alike.",
        choices=IMPORTANCES,
    )
    # μ·KL(old model ‖ repaired model) on a minibatch of unlabelled reference images (core.engine.anchor);
    # it does nothing without reference images.
    anchor: float = hp(
        ANCHOR_DEFAULT,
        "μ: how strongly the repaired model must give the same answers as the old one on the reference images "
        "(typical, unlabelled). 0 turns it off (the paper's form). Needs reference images.",
        min=0.0,
        max=1e4,
    )
    # each reference image's KL weighted by p_old(its answer)^γ, normalised to mean 1 over the reference images
    # (core.engine.methods.cpt), so μ keeps its meaning
    anchor_confidence: float = hp(
        ANCHOR_CONFIDENCE_DEFAULT,
        "How much more the anchor holds the old model's confident answers than its unsure ones (which are more "
        "likely the shortcut's mistakes): each reference image counts by the old model's confidence raised to "
        "this power. 0: every image alike.",
        min=0.0,
        max=10.0,
    )
    anchor_batch: int = hp(64, "How many reference images the anchor looks at in each step.", min=1, max=4096)
    # leaves out the reference images nearest (cosine, penultimate features of the old model) to a counterexample
    # (core.engine.anchor.far_from); the kept estimate still uses them all. 0.15 lost 0.025 worst group on
    # standard-resnet18 (docs/BENCHMARKS.md "Fourth study"): default 0.
    anchor_skip: float = hp(
        0.0,
        "The share of reference images most like one of your counterexamples (as the old model sees them) that "
        "the anchor leaves out, so that it does not hold the very answers the repair should change. 0: none.",
        min=0.0,
        max=0.9,
    )
    invariance: str = hp(
        "none",
        "A rule you know: colour (colour and tint should not change the answer), flip (where something sits "
        "in the image should not matter), region (the boxes below should not matter). The repaired model "
        "must give changed reference images the old answers. none: no rule.",
        choices=INVARIANCES,
    )  # enforced as the old answers on transformed reference images (core.engine.invariance)
    invariance_region: str = hp(
        "",
        "For region: x0,y0,x1,y1 as fractions of the image (0–1), several separated by ';'. For example "
        "0,0,0.2,0.2 is the top-left corner.",
    )
    invariance_weight: float = hp(
        10.0, "How strongly the rule above counts (needs reference images).", min=0.0, max=1e4
    )  # ν
    mix: float = hp(
        0.0,
        "Weight of CutMix: a box of a counterexample is pasted into a reference image at the same place, and "
        "the answer expected is mixed by area (the reference image's part keeps the old answer). 0: off. "
        "Needs reference images.",
        min=0.0,
        max=100.0,
    )  # CutMix with reference images (core.engine.mixing)


@dataclass(frozen=True)
class FineTuneConfig(MethodConfig):
    """Plain fine-tuning of θ itself: all layers, a fixed budget (the presets change both)."""

    stop_rule: str = hp("none", STOP_RULE_HELP, choices=STOP_RULES)


@dataclass(frozen=True)
class L2SPConfig(MethodConfig):
    # λ, the α of Li et al. 2018: the pull back towards the starting weights, relative to their own size.
    strength: float = hp(
        1000.0,
        "λ: how strongly the weights are pulled back to where they started, relative to their own size.",
        min=1.0,
        max=1e6,
        log=True,
    )


@dataclass(frozen=True)
class LastLayerConfig(MethodConfig):
    # μ of the KL term to the old model's answers on typical images (core.engine.methods.last_layer).
    typical_weight: float = hp(
        1.0,
        "How much keeping the old answers on typical images counts against fitting your counterexamples.",
        min=0.0,
        max=1000.0,
    )
    typical_images: int = hp(
        512,
        "How many candidate images are used as typical images whose answers should stay.",
        min=1,
        max=100000,
    )


@dataclass(frozen=True)
class LoRAConfig(MethodConfig):
    renamed: ClassVar[dict[str, str]] = {"alpha": "scale"}

    rank: int = hp(4, "Lower means a simpler change to each layer.", min=1, max=256)  # r, capped by the layer
    # The LoRA paper's α: the change is (scale / r)·B·A.
    scale: float = hp(4.0, "How strongly the low-rank change is applied.", min=0.01, max=1024.0, log=True)


@dataclass(frozen=True)
class MASConfig(MethodConfig):
    strength: float = hp(
        1000.0,
        "λ: how strongly weights that matter to the current outputs are held in place.",
        min=1.0,
        max=1e6,
        log=True,
    )
    # How many unlabelled images estimate each weight's importance Ω (Aljundi et al. 2018, Eq. 2).
    importance_images: int = hp(
        256, "How many candidate images are used to judge which weights matter.", min=1, max=100000
    )


@dataclass(frozen=True)
class SideTuningConfig(MethodConfig):
    renamed: ClassVar[dict[str, str]] = {"alpha_mode": "blend", "alpha_end": "base_weight"}

    side: str = hp(
        "small", "small: a new small network. copy: a copy of the original model.", choices=("small", "copy")
    )
    # The output is w·base(x) + (1 − w)·side(x) (the α of Zhang et al. 2020). anneal: w falls linearly from 1
    # to base_weight over anneal_steps; fixed: w = base_weight throughout.
    blend: str = hp(
        "anneal",
        "anneal: start with the original only and move to the final mix. fixed: use the final mix throughout.",
        choices=("anneal", "fixed"),
    )
    base_weight: float = hp(
        0.5,
        "How much the original model's answer counts at the end (1 = only the original).",
        min=0.0,
        max=1.0,
    )
    anneal_steps: int = hp(20, "Over how many steps the mix moves to its final value.", min=1, max=5000)
    side_width: int = hp(32, "Channels of the small extra network.", min=4, max=512)


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


def setting_key(name: str) -> str:
    """The translation key of a setting's label (its help: :func:`setting_help_key`)."""
    return f"cfg_{name}"


def setting_help_key(name: str) -> str:
    return f"cfg_{name}_help"


@dataclass(frozen=True)
class MethodSpec:
    """A method as the CLI and the workbench list it: its one registration.

    ``title`` is the English of its translation key :attr:`title_key` (a test keeps them equal);
    ``base`` names its implementation in :data:`core.engine.methods.IMPLEMENTATIONS` (a preset names its
    parent method's)."""

    name: str
    title: str
    config: type
    base: str
    defaults: dict[str, Any] = field(default_factory=dict)  # a preset's own defaults
    mergeable: bool = True  # the result is an ordinary model of the same architecture

    @property
    def title_key(self) -> str:
        return f"method_{self.name}"


SPECS: dict[str, MethodSpec] = {
    s.name: s
    for s in (
        MethodSpec("cpt", "Change-penalized tuning (recommended)", CPTConfig, "cpt"),
        MethodSpec("finetune", "Plain fine-tuning (all layers)", FineTuneConfig, "finetune"),
        MethodSpec(
            "finetune_es",
            "Plain fine-tuning (all layers), stopping early",
            FineTuneConfig,
            "finetune",
            {"stop_rule": "paper"},
        ),
        MethodSpec(
            "finetune_head",
            "Fine-tuning of the last layer only",
            FineTuneConfig,
            "finetune",
            {"params": "classifier"},
        ),
        MethodSpec(
            "finetune_head_es",
            "Fine-tuning of the last layer only, stopping early",
            FineTuneConfig,
            "finetune",
            {"params": "classifier", "stop_rule": "paper"},
        ),
        MethodSpec("l2sp", "L2-SP (fine-tuning pulled back towards the original)", L2SPConfig, "l2sp"),
        MethodSpec("mas", "MAS (protects the weights that matter most)", MASConfig, "mas"),
        MethodSpec(
            "side_tuning",
            "Side-tuning (a small extra network beside the original)",
            SideTuningConfig,
            "side_tuning",
            mergeable=False,
        ),
        MethodSpec("lora", "LoRA (simple, low-rank change)", LoRAConfig, "lora"),
        MethodSpec(
            "last_layer", "Last-layer retraining (keeps decisions on typical images)", LastLayerConfig, "last_layer"
        ),
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
    """Build a method's frozen config from its (preset) defaults plus ``overrides``, checking every value.
    A setting's old name (``renamed`` of its config class) is accepted for its new one."""
    spec = method_spec(name)
    fields = {s["name"]: s for s in describe_schema(spec.config)}
    kwargs = dict(spec.defaults)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        key = spec.config.renamed.get(key, key)
        if key not in fields:
            raise UserError(f"method {name!r} has no setting {key!r}; settings: {', '.join(fields)}")
        kwargs[key] = _checked(fields[key], value)
    cfg = spec.config(**kwargs)
    if cfg.min_steps > cfg.max_steps:
        raise UserError(f"min_steps ({cfg.min_steps}) cannot exceed max_steps ({cfg.max_steps})")
    return cfg


def _checked(f: dict, value):
    """``value`` cast to the setting's type and checked against its choices and bounds."""
    key = f["name"]
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
    return value


def has_strength(name: str) -> bool:
    return _has_strength_field(method_spec(name).config)


def _has_strength_field(config_cls) -> bool:
    return any(f.name == "strength" for f in dataclasses.fields(config_cls))


def strength_of(config) -> float | None:
    """λ of a method's config, or None for a method without a penalty strength."""
    return config.strength if _has_strength_field(type(config)) else None
