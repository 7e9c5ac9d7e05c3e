"""Translations: every string the workbench shows comes from ``assets/i18n/<lang>.json``.

English and Japanese are complete (a test checks that both files have the same keys and that every
key the pages use exists). ``t(key, **values)`` fills ``{placeholders}`` with ``str.format``. A key
missing from a language falls back to English, then to the key itself, so a gap shows up as a
visible key name instead of a crash.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

from core.errors import UserError

I18N_DIR = Path(__file__).resolve().parents[2] / "assets" / "i18n"
LANGUAGES = {"en": "English", "ja": "日本語"}
DEFAULT_LANGUAGE = "en"


@functools.cache
def catalog(lang: str) -> dict[str, str]:
    """The key → text map of one language."""
    path = I18N_DIR / f"{lang}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def t(key: str, lang: str = DEFAULT_LANGUAGE, **values) -> str:
    """The text for ``key`` in ``lang`` with ``values`` filled in."""
    if lang not in LANGUAGES:
        lang = DEFAULT_LANGUAGE
    text = catalog(lang).get(key) or catalog(DEFAULT_LANGUAGE).get(key) or key
    return text.format(**values) if values else text


def translator(lang: str) -> Callable[..., str]:
    """``t`` bound to one language, for a page to call as ``t("key", n=3)``."""
    return functools.partial(t, lang=lang if lang in LANGUAGES else DEFAULT_LANGUAGE)


def error_text(exc: BaseException, lang: str = DEFAULT_LANGUAGE) -> str:
    """A :class:`UserError` in ``lang``: its ``err_<key>`` translation with its parameters, or its
    English sentence when it has no key (or a translation is missing)."""
    key = getattr(exc, "key", None) if isinstance(exc, UserError) else None
    if key and f"err_{key}" in catalog(DEFAULT_LANGUAGE):
        try:
            return t(f"err_{key}", lang, **{k: _readable(k, v) for k, v in exc.params.items()})
        except (KeyError, IndexError):  # a placeholder without its value: the English sentence is still right
            return str(exc)
    return str(exc)


# Error parameters that name something (a run, a line of a file) rather than count it: shown as they are.
_IDENTIFIERS = frozenset({"run", "run_id", "from_run", "id", "line", "row", "version", "port"})


def _readable(key: str, value):
    """A count or size in an error message with thousands separators (12,345), in both languages; a
    number that names something (a run, a line) as it is."""
    if isinstance(value, int) and not isinstance(value, bool) and key not in _IDENTIFIERS:
        return f"{value:,}"
    return value


def error_translator(lang: str) -> Callable[[BaseException], str]:
    """``error_text`` bound to one language, for a page to call as ``err(exc)``."""
    return functools.partial(error_text, lang=lang if lang in LANGUAGES else DEFAULT_LANGUAGE)
