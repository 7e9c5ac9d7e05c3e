"""Every environment setting the workbench reads, declared once and parsed in one place.

Each setting is a :class:`Setting`: its variable's name, its default and the kind of value it takes.
``SETTING.get()`` reads the variable at the moment it is called (never at import), so a server or a
test can change it without a restart. An unset or empty variable means the default; a value of the
wrong kind is refused with a :class:`~core.errors.UserError` that names the variable and the value,
with a message key, so a page shows it in its language instead of crashing:

| variable | default | kind | what it sets |
|---|---|---|---|
| ``BIASREPAIR_HOME`` | ``<repo>/.workbench`` | path | the store's folder (``core.app.store``) |
| ``BIASREPAIR_MAX_UNZIPPED_MB`` | 1024 | whole number | what a dataset zip may unpack to |
| ``BIASREPAIR_MAX_IMAGES`` | 100000 | whole number | images in one dataset or upload |
| ``BIASREPAIR_MAX_IMAGE_PIXELS`` | 40000000 | whole number | width × height of one image |
| ``BIASREPAIR_STORE_BUDGET_MB`` | 20480 | whole number | disk the store may use in all |
| ``BIASREPAIR_EVAL_BATCH`` | 64 | whole number | images decoded and evaluated at a time |
| ``BIASREPAIR_SESSION_HOURS`` | 12 | number | how long a sign-in lasts |
| ``BIASREPAIR_DEMO_SANDBOX_HOURS`` | 12 | number | how long a demo visitor's own copy of the demo is kept |
| ``BIASREPAIR_DEMO_PREBUILD`` | 1 | number or 0 | build the demo at server start (0: on its first open) |
| ``BIASREPAIR_SIGNIN_ATTEMPTS`` | 5 | whole number | wrong passwords that lock a name |
| ``BIASREPAIR_SIGNIN_LOCK_MINUTES`` | 15 | number | the window those are counted in |
| ``BIASREPAIR_ADMIN_USER`` / ``_PASSWORD`` | none | text | the first admin, on a store without accounts |
| ``BIASREPAIR_LABEL_REFRESH`` | 3 | number or 0 | seconds between looks for other curators' labels (0: never) |
| ``BIASREPAIR_WORKER_THREADS`` | cores ÷ 2 | whole number | torch's threads in each of the two worker processes |
| ``BIASREPAIR_BACKEND`` | local | text | where independent runs go (``core.engine.backends`` checks the name) |
| ``BIASREPAIR_USER`` | none | text | who the CLI acts as |
| ``BIASREPAIR_CACHE`` | ``<repo>/.cache`` | path | where the standard suite's built base models are kept |

This module sits beside ``core.errors`` at the bottom of the layers: every layer may import it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from core.errors import UserError

T = TypeVar("T")
MAX_DIGITS = 15  # a whole number longer than this is a typo, not a setting


def text(name: str, raw: str) -> str:
    """Any text."""
    return raw


def whole(name: str, raw: str) -> int:
    """A positive whole number."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_DIGITS or int(raw) <= 0:
        raise UserError(
            f"{name} must be a positive whole number, got {raw[:40]!r}", "setting_whole", name=name, value=raw[:40]
        )
    return int(raw)


def _float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def positive(name: str, raw: str) -> float:
    """A positive number."""
    value = _float(raw)
    if not value > 0:
        raise UserError(
            f"{name} must be a positive number, got {raw[:40]!r}", "setting_number", name=name, value=raw[:40]
        )
    return value


def positive_or_zero(name: str, raw: str) -> float:
    """Zero or a positive number."""
    value = _float(raw)
    if not value >= 0:
        raise UserError(
            f"{name} must be 0 or a positive number, got {raw[:40]!r}",
            "setting_number_or_zero",
            name=name,
            value=raw[:40],
        )
    return value


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: its name, its default (the value when unset or empty), the parser
    that checks and converts its text, and whether surrounding spaces are dropped (not for a secret)."""

    name: str
    default: T
    parse: Callable[[str, str], T]
    strip: bool = True

    def raw(self) -> str:
        """The variable's text; "" when unset."""
        value = os.environ.get(self.name, "")
        return value.strip() if self.strip else value

    def get(self) -> T:
        """The setting's value, read now; its default when unset or empty. A bad value raises a
        :class:`UserError` naming the variable and the value."""
        raw = self.raw()
        return self.parse(self.name, raw) if raw else self.default


HOME: Setting[str] = Setting("BIASREPAIR_HOME", "", text)
MAX_UNZIPPED_MB: Setting[int] = Setting("BIASREPAIR_MAX_UNZIPPED_MB", 1024, whole)
MAX_IMAGES: Setting[int] = Setting("BIASREPAIR_MAX_IMAGES", 100_000, whole)
MAX_IMAGE_PIXELS: Setting[int] = Setting("BIASREPAIR_MAX_IMAGE_PIXELS", 40_000_000, whole)
STORE_BUDGET_MB: Setting[int] = Setting("BIASREPAIR_STORE_BUDGET_MB", 20 * 1024, whole)
EVAL_BATCH: Setting[int] = Setting("BIASREPAIR_EVAL_BATCH", 64, whole)
WORKER_THREADS: Setting[int] = Setting("BIASREPAIR_WORKER_THREADS", 0, whole)  # 0 (unset): the cores ÷ the queues
SESSION_HOURS: Setting[float] = Setting("BIASREPAIR_SESSION_HOURS", 12.0, positive)
DEMO_SANDBOX_HOURS: Setting[float] = Setting("BIASREPAIR_DEMO_SANDBOX_HOURS", 12.0, positive)
DEMO_PREBUILD: Setting[float] = Setting("BIASREPAIR_DEMO_PREBUILD", 1.0, positive_or_zero)
SIGNIN_ATTEMPTS: Setting[int] = Setting("BIASREPAIR_SIGNIN_ATTEMPTS", 5, whole)
SIGNIN_LOCK_MINUTES: Setting[float] = Setting("BIASREPAIR_SIGNIN_LOCK_MINUTES", 15.0, positive)
ADMIN_USER: Setting[str] = Setting("BIASREPAIR_ADMIN_USER", "", text)
ADMIN_PASSWORD: Setting[str] = Setting("BIASREPAIR_ADMIN_PASSWORD", "", text, strip=False)
LABEL_REFRESH: Setting[float] = Setting("BIASREPAIR_LABEL_REFRESH", 3.0, positive_or_zero)
BACKEND: Setting[str] = Setting("BIASREPAIR_BACKEND", "", text)
USER: Setting[str] = Setting("BIASREPAIR_USER", "", text)
CACHE: Setting[str] = Setting("BIASREPAIR_CACHE", "", text)

ALL: dict[str, Setting] = {
    s.name: s
    for s in (
        HOME,
        MAX_UNZIPPED_MB,
        MAX_IMAGES,
        MAX_IMAGE_PIXELS,
        STORE_BUDGET_MB,
        EVAL_BATCH,
        WORKER_THREADS,
        SESSION_HOURS,
        DEMO_SANDBOX_HOURS,
        DEMO_PREBUILD,
        SIGNIN_ATTEMPTS,
        SIGNIN_LOCK_MINUTES,
        ADMIN_USER,
        ADMIN_PASSWORD,
        LABEL_REFRESH,
        BACKEND,
        USER,
        CACHE,
    )
}
