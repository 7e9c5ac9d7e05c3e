"""The explicit registry of repair methods, one implementation per file.

``base`` (the shared interface), ``cpt`` (change-penalized tuning), ``finetune``, ``l2sp``, ``mas``,
``side_tuning``, ``lora`` and ``last_layer``. ``METHODS`` maps every method name the CLI and the
workbench list (:data:`core.engine.configs.SPECS`, presets included) to its implementation class. A
miss raises :class:`UserError` listing the valid names. Settings, titles and presets live in
:mod:`core.engine.configs`, which needs no torch.
"""

from __future__ import annotations

from core.engine.configs import SPECS, method_spec
from core.engine.methods.base import Method
from core.engine.methods.cpt import CPT
from core.engine.methods.finetune import FineTune
from core.engine.methods.l2sp import L2SP
from core.engine.methods.last_layer import LastLayer
from core.engine.methods.lora import LoRA
from core.engine.methods.mas import MAS
from core.engine.methods.side_tuning import SideTuning

IMPLEMENTATIONS: dict[str, type[Method]] = {
    cls.name: cls for cls in (CPT, FineTune, L2SP, MAS, SideTuning, LoRA, LastLayer)
}
METHODS: dict[str, type[Method]] = {name: IMPLEMENTATIONS[spec.base] for name, spec in SPECS.items()}


def get_method(name: str) -> type[Method]:
    """The implementation class of a listed method (a preset gives its parent's class)."""
    return IMPLEMENTATIONS[method_spec(name).base]


__all__ = ["IMPLEMENTATIONS", "METHODS", "Method", "get_method"]
