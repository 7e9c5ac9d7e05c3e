"""The explicit registry of repair methods, one file each (see core/methods/base.py).

``METHODS`` maps a method's CLI/UI name to its class. A miss raises :class:`UserError` listing
the valid names.
"""

from __future__ import annotations

import dataclasses

from core.engine.methods.base import Method, describe_schema
from core.engine.methods.cpt import CPT
from core.engine.methods.finetune import FineTune, FineTuneES, FineTuneHead, FineTuneHeadES
from core.engine.methods.l2sp import L2SP
from core.engine.methods.last_layer import LastLayer
from core.engine.methods.lora import LoRA
from core.engine.methods.mas import MAS
from core.engine.methods.side_tuning import SideTuning
from core.errors import UserError

METHODS: dict[str, type[Method]] = {
    CPT.name: CPT,
    FineTune.name: FineTune,
    FineTuneES.name: FineTuneES,
    FineTuneHead.name: FineTuneHead,
    FineTuneHeadES.name: FineTuneHeadES,
    L2SP.name: L2SP,
    MAS.name: MAS,
    SideTuning.name: SideTuning,
    LoRA.name: LoRA,
    LastLayer.name: LastLayer,
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None


def config_schema(name: str) -> list[dict]:
    """Widget specs (name, type, default, help, min, max, log, choices) of a method's config."""
    return describe_schema(get_method(name).Config)


def make_config(name: str, overrides: dict | None = None):
    """Build a method's frozen config from defaults plus ``overrides``, checking every value."""
    cls = get_method(name).Config
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in fields:
            raise UserError(f"method {name!r} has no setting {key!r}; settings: {', '.join(fields)}")
        spec = next(s for s in describe_schema(cls) if s["name"] == key)
        caster = {"int": int, "float": float, "str": str, "bool": bool}[spec["type"]]
        try:
            value = caster(value)
        except (TypeError, ValueError):
            raise UserError(f"setting {key} must be a {spec['type']}, got {value!r}") from None
        if spec["choices"] and value not in spec["choices"]:
            raise UserError(f"setting {key} must be one of {', '.join(spec['choices'])}, got {value!r}")
        if spec["min"] is not None and value < spec["min"]:
            raise UserError(f"setting {key} must be at least {spec['min']}, got {value}")
        if spec["max"] is not None and value > spec["max"]:
            raise UserError(f"setting {key} must be at most {spec['max']}, got {value}")
        kwargs[key] = value
    cfg = cls(**kwargs)
    if cfg.min_steps > cfg.max_steps:
        raise UserError(f"min_steps ({cfg.min_steps}) cannot exceed max_steps ({cfg.max_steps})")
    return cfg


__all__ = ["METHODS", "Method", "config_schema", "get_method", "make_config"]
