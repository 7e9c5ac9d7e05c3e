"""Translations are complete: same keys and placeholders in English and Japanese, none missing."""

from __future__ import annotations

import string

from core.app.i18n import LANGUAGES, catalog, t
from tests.i18n_keys import used_keys


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def test_every_used_key_exists_in_every_language():
    used = used_keys()
    assert len(used) > 150
    for lang in LANGUAGES:
        missing = sorted(used - set(catalog(lang)))
        assert missing == [], (lang, missing)


def test_languages_have_the_same_keys_and_placeholders():
    en, ja = catalog("en"), catalog("ja")
    assert set(en) == set(ja)
    assert [k for k in en if _fields(en[k]) != _fields(ja[k])] == []
    assert all(v.strip() for v in ja.values())


def test_japanese_is_really_japanese():
    ja = catalog("ja")
    non_ascii = [k for k, v in ja.items() if any(ord(ch) > 0x3000 for ch in v)]
    # Every sentence-like string carries kana or kanji; a few short items may be symbols only.
    assert len(non_ascii) / len(ja) > 0.95


def test_t_fills_placeholders_and_falls_back():
    assert t("tune_watch_item", "ja", run=3) == "修正 #3"
    assert t("no_such_key", "ja") == "no_such_key"
    assert t("nav_model", "xx") == t("nav_model", "en")


def test_every_method_and_setting_has_words_in_both_languages():
    from core.engine.configs import SPECS as METHODS
    from core.engine.configs import config_schema

    for lang in LANGUAGES:
        words = catalog(lang)
        for name in METHODS:
            assert f"method_{name}" in words, (lang, name)
            for spec in config_schema(name):
                if spec["name"] != "strength":
                    assert f"cfg_{spec['name']}" in words and f"cfg_{spec['name']}_help" in words, (lang, spec["name"])
