"""``benchmark --variant``: a method run under its own name with settings other than its defaults.

The benchmark runs every method with its defaults; a variant adds one more row per draw, e.g. change-penalized
tuning with an invariance hint (``cpt_colour=cpt:invariance=colour``) or another stopping rule, on the same draws.
"""

from __future__ import annotations

from core.engine.methods import get_method
from core.errors import UserError


def parse_variant(text: str) -> tuple[str, str, dict]:
    """``NAME=METHOD:KEY=VALUE KEY=VALUE …`` → (name, method, settings); checked when the run is built."""
    name, sep, rest = text.partition("=")
    method, _, settings = rest.partition(":")
    if not sep or not name.strip() or not method.strip():
        raise UserError(f"--variant expects NAME=METHOD:KEY=VALUE …, got {text!r}")
    get_method(method.strip())
    cfg = {}
    for kv in settings.split():
        key, eq, value = kv.partition("=")
        if not eq:
            raise UserError(f"--variant {name}: expected KEY=VALUE, got {kv!r}")
        cfg[key.strip()] = value.strip()
    return name.strip(), method.strip(), cfg
