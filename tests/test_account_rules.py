"""Account names and passwords (core/app/accounts.py, docs/WORKBENCH.md "Accounts and roles"): names
are NFKC-normalised, unique whatever their case, never a name the workbench writes itself, never a
mix of scripts; a password is long enough and not among the first guesses."""

from __future__ import annotations

import pytest

from core.app import accounts
from core.app.i18n import error_text
from core.app.store import Store
from core.errors import UserError


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "home")
    accounts.create_user(s, None, "root", "root-Secret-7d41", ["admin"])
    return s


ROOT = accounts.User("root", ["admin"])


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("ROOT", "user_exists"),  # beside root
        ("Root", "user_exists"),
        ("ｒｏｏｔ", "user_exists"),  # full-width: root after NFKC
        ("ａｎｏｎｙｍｏｕｓ", "user_name_kept"),
        ("anonymous", "user_name_kept"),
        ("Unknown", "user_name_kept"),
        ("DEMO", "user_name_reserved"),
        ("d\u0435mo", "user_name_mixed"),  # Cyrillic е among Latin letters
        ("p\u0430ypal", "user_name_mixed"),
        ("ro\u043ewt", "user_name_mixed"),
    ],
)
def test_confusable_and_reserved_names_are_refused(store, name, key):
    with pytest.raises(UserError) as refused:
        accounts.create_user(store, ROOT, name, "long-enough-1", ["curator"])
    assert refused.value.key == key, refused.value
    assert error_text(refused.value, "ja") != str(refused.value)  # it has words in Japanese too
    assert [u["name"] for u in accounts.users(store)] == ["root"]


def test_ordinary_names_in_one_script_are_kept_normalised(store):
    for name in ("alice", "mia.k", "山田たろう", "Иван", "ann_2"):
        accounts.create_user(store, ROOT, name, "long-enough-1", ["curator"])
    accounts.create_user(store, ROOT, "ｚｏｅ", "long-enough-1", ["curator"])
    assert "zoe" in [u["name"] for u in accounts.users(store)]
    assert accounts.user_for(store, accounts.sign_in(store, "ｚｏｅ", "long-enough-1")) == "zoe"


@pytest.mark.parametrize(
    "password", ["password", "12345678", "PASSWORD1", "Qwerty123", "aaaaaaaa", "abababab", "carol-x"]
)
def test_weak_passwords_are_refused(store, password):
    with pytest.raises(UserError) as refused:
        accounts.create_user(store, ROOT, "carol", password, ["curator"])
    assert refused.value.key in ("password_common", "password_short")
    with pytest.raises(UserError):
        accounts.reset_password(store, ROOT, "root", password)
    assert accounts.sign_in(store, "root", "root-Secret-7d41")  # the old password still holds


def test_the_name_itself_is_no_password(store):
    with pytest.raises(UserError, match="first ones anyone would guess"):
        accounts.create_user(store, ROOT, "carolina", "CAROLINA", ["curator"])
