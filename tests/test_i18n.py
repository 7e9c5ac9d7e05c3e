"""Translations are complete: same keys and placeholders in English and Japanese, none missing."""

from __future__ import annotations

import ast
import string
from pathlib import Path

import pytest

from core.app.i18n import LANGUAGES, catalog, error_text, t
from core.errors import UserError
from core.formats.zipsafety import read_zip_members
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
    assert t("tune_watch_item", "ja", run=3) == "修復 #3"
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


def _keyed_user_errors() -> list[tuple[str, str, set[str]]]:
    """(file, key, keyword parameters) of every ``UserError(message, "key", **params)`` in core/."""
    root = Path(__file__).resolve().parent.parent / "core"
    found = []
    for f in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "UserError"
                and len(node.args) >= 2
            ):
                assert isinstance(node.args[1], ast.Constant), f"{f.name}:{node.lineno} key must be a literal"
                found.append((f.name, node.args[1].value, {k.arg for k in node.keywords if k.arg}))
    return found


def test_every_keyed_core_error_has_words_and_the_same_placeholders_in_both_languages():
    keyed = _keyed_user_errors()
    assert len(keyed) >= 40
    for lang in LANGUAGES:
        words = catalog(lang)
        for where, key, params in keyed:
            assert f"err_{key}" in words, (lang, where, key)
            assert _fields(words[f"err_{key}"]) == params, (lang, where, key, params)


def test_a_core_error_reads_in_the_page_language_and_stays_english_for_the_cli():
    exc = UserError("x.zip is not a valid zip file", "zip_invalid", archive="x.zip")
    assert str(exc) == "x.zip is not a valid zip file"
    assert error_text(exc, "ja") == "x.zip は正しい zip ファイルではありません"
    assert error_text(exc, "en") == "x.zip is not a valid zip file"
    assert error_text(UserError("no key here"), "ja") == "no key here"
    with pytest.raises(UserError) as caught:
        read_zip_members(b"not a zip", "bad.zip")
    assert caught.value.key == "zip_invalid" and error_text(caught.value, "ja").startswith("bad.zip は")


def test_counts_in_error_messages_get_thousands_separators_in_both_languages_names_do_not():
    big = UserError("a.png is 20000×15000 pixels", "image_too_big", name="a.png", w=20000, h=15000)
    assert error_text(big, "ja") == "a.png は 20,000×15,000 ピクセルで、上限を超えています"
    assert error_text(big, "en") == "a.png is 20,000×15,000 pixels, more than the limit"
    assert str(big) == "a.png is 20000×15000 pixels"  # the CLI's English sentence is unchanged
    run = UserError("x", "four_eyes", user="bob", run=12345)  # a run number names a run: never "#12,345"
    assert error_text(run, "en").startswith("bob started repair #12345 or")
    assert error_text(UserError("x", "image_too_big", name="b.png", w=True, h=640), "en").startswith(
        "b.png is True×640"
    )
