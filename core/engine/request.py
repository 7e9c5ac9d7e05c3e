"""One typed run request: what a repair is asked to do, validated once where it enters.

A :class:`RunRequest` is built when a run is submitted (the workbench's Repair page, the CLI), from a
method name and the user's settings. Every setting is checked then, by
:func:`core.engine.configs.make_config`, and the request is frozen. It is stored as JSON with the run
and rebuilt by :meth:`RunRequest.from_json` alone, in the worker, so the worker runs exactly what was
checked. The strength is a number, :class:`Auto` (resolved once, by :mod:`core.engine.strength`, before
the loop starts), or ``None`` for a method without one. No torch here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from core.engine.configs import has_strength, make_config, strength_of
from core.errors import UserError

AUTO = "auto"


@dataclass(frozen=True)
class Auto:
    """Pick λ automatically, by the rule of :func:`core.engine.strength.choose_strength`."""


@dataclass(frozen=True)
class DataRefs:
    """Where a run's images are: folders or files that stay unchanged while the run waits."""

    counterexamples: str  # a manifest dataset folder
    evaluation: str | None = None  # a manifest dataset folder (rows split=val steer, the rest are reported)
    unlabeled_root: str | None = None  # images without labels (the pool), for methods that keep decisions
    unlabeled_items: str | None = None  # items.csv (path, attribute) under unlabeled_root
    reference_root: str | None = None  # typical images the anchor and the kept estimate use
    reference_items: str | None = None


@dataclass(frozen=True)
class RunRequest:
    method: str
    config: Any  # the method's frozen config from core.engine.configs, already validated
    strength: float | Auto | None
    data: DataRefs
    seed: int = 0
    device: str = "auto"

    @classmethod
    def build(cls, method: str, settings: dict, data: DataRefs, seed: int = 0, device: str = "auto") -> RunRequest:
        """Check ``settings`` (a setting name → value dict; ``strength`` may be ``"auto"``) for ``method``."""
        settings = dict(settings)
        raw_strength = settings.pop("strength", None)
        auto = isinstance(raw_strength, str) and raw_strength.strip().lower() == AUTO
        if auto and not has_strength(method):
            raise UserError(f"strength 'auto' needs a method with a penalty strength; {method!r} has none")
        if not auto and raw_strength is not None:
            settings["strength"] = raw_strength
        config = make_config(method, settings)
        strength: float | Auto | None = Auto() if auto else strength_of(config)
        return cls(method, config, strength, data, int(seed), device)

    @property
    def is_auto(self) -> bool:
        return isinstance(self.strength, Auto)

    def settings(self) -> dict:
        """The method's settings as plain values, with ``strength`` as ``"auto"`` where it is automatic."""
        out = dataclasses.asdict(self.config)
        if self.is_auto:
            out["strength"] = AUTO
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "method": self.method,
                "settings": self.settings(),
                "data": dataclasses.asdict(self.data),
                "seed": self.seed,
                "device": self.device,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> RunRequest:
        """The one way a stored request is rebuilt (and checked again, so a hand-edited row fails cleanly)."""
        raw = json.loads(text)
        return cls.build(
            raw["method"], raw["settings"], DataRefs(**raw["data"]), raw.get("seed", 0), raw.get("device", "auto")
        )
