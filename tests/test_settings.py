"""Environment settings, parsed in one place (core/settings.py): a default when unset, the value when good,
and a translated error naming the variable and the value when bad, never a crash or a silent default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import settings
from core.app import accounts, projects
from core.app.i18n import error_text
from core.errors import UserError
from tests.wb_helpers import ALICE, APP, PASSWORDS, make_accounts, open_demo_here, sign_in_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("setting", "raw", "value"),
    [
        (settings.MAX_IMAGES, " 12 ", 12),
        (settings.SESSION_HOURS, "0.5", 0.5),
        (settings.SIGNIN_LOCK_MINUTES, "90", 90.0),
        (settings.LABEL_REFRESH, "0", 0.0),
        (settings.LABEL_REFRESH, "1.5", 1.5),
        (settings.USER, "  ann ", "ann"),
        (settings.ADMIN_PASSWORD, " spaces kept ", " spaces kept "),
    ],
)
def test_a_good_value_is_read_when_asked(monkeypatch, setting, raw, value):
    monkeypatch.delenv(setting.name, raising=False)
    assert setting.get() == setting.default
    monkeypatch.setenv(setting.name, raw)
    assert setting.get() == value and type(setting.get()) is type(setting.default)
    monkeypatch.setenv(setting.name, "")
    assert setting.get() == setting.default


@pytest.mark.parametrize(
    ("setting", "raw", "key"),
    [
        (settings.MAX_IMAGES, "0", "setting_whole"),
        (settings.MAX_IMAGES, "-3", "setting_whole"),
        (settings.MAX_IMAGES, "1e9", "setting_whole"),
        (settings.MAX_IMAGES, "1" * 16, "setting_whole"),
        (settings.SIGNIN_ATTEMPTS, "2.5", "setting_whole"),
        (settings.SESSION_HOURS, "twelve", "setting_number"),
        (settings.SESSION_HOURS, "0", "setting_number"),
        (settings.SESSION_HOURS, "inf", "setting_number"),
        (settings.SIGNIN_LOCK_MINUTES, "nan", "setting_number"),
        (settings.LABEL_REFRESH, "-1", "setting_number_or_zero"),
        (settings.LABEL_REFRESH, "soon", "setting_number_or_zero"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_and_the_value_in_both_languages(monkeypatch, setting, raw, key):
    monkeypatch.setenv(setting.name, raw)
    with pytest.raises(UserError) as caught:
        setting.get()
    exc = caught.value
    assert exc.key == key and exc.params == {"name": setting.name, "value": raw}
    for text in (str(exc), error_text(exc, "en"), error_text(exc, "ja")):
        assert setting.name in text and f"'{raw}'" in text
    assert error_text(exc, "ja") != error_text(exc, "en")


def test_every_biasrepair_variable_is_read_through_core_settings():
    """No module reads a BIASREPAIR_* variable itself: core/settings.py is the one place that parses them."""
    files = [ROOT / "app.py", *(ROOT / "views").glob("*.py"), *(ROOT / "core").rglob("*.py")]
    reads = re.compile(r"""(environ(\.get)?\s*[\(\[]|getenv\s*\()\s*["']BIASREPAIR_""")
    offenders = [str(f.relative_to(ROOT)) for f in files if reads.search(f.read_text(encoding="utf-8"))]
    assert offenders == []
    declared = set(settings.ALL)
    used = set()
    for f in files:
        used |= set(re.findall(r"BIASREPAIR_[A-Z_]+[A-Z]", f.read_text(encoding="utf-8")))
    assert used - {"BIASREPAIR_ADDRESS"} <= declared  # BIASREPAIR_ADDRESS is read by scripts/start.sh only


def test_a_bad_session_length_refuses_a_sign_in_with_its_reason_and_starts_no_session(home, monkeypatch):
    store = projects.get_store(home)
    make_accounts(store)
    monkeypatch.setenv(settings.SESSION_HOURS.name, "a while")
    with pytest.raises(UserError, match="BIASREPAIR_SESSION_HOURS must be a positive number, got 'a while'"):
        accounts.sign_in(store, "mia", PASSWORDS["mia"])
    with pytest.raises(UserError, match="BIASREPAIR_SESSION_HOURS"):
        accounts.demo_session(store)
    assert not [e for e in store.audit_events() if e["action"] == "signed_in"]
    monkeypatch.setenv(settings.SIGNIN_ATTEMPTS.name, "five")  # checked before the password is
    with pytest.raises(UserError, match="BIASREPAIR_SIGNIN_ATTEMPTS"):
        accounts.sign_in(store, "mia", "wrong password")
    assert not [e for e in store.audit_events() if e["action"] == "sign_in_failed"]


def test_the_sign_in_page_says_what_is_wrong_with_a_bad_setting(home, monkeypatch):
    store = projects.get_store(home)
    make_accounts(store)
    monkeypatch.setenv(settings.SESSION_HOURS.name, "-1")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.text_input(key="signin_name").input("mia")
    at.text_input(key="signin_password").input(PASSWORDS["mia"])
    at.button[0].click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["BIASREPAIR_SESSION_HOURS must be a positive number, got '-1'"]
    at.button(key="open_demo").click().run()  # the demo's session is refused the same way, not with a crash
    assert not at.exception and len(at.error) == 1 and "BIASREPAIR_SESSION_HOURS" in at.error[0].value


def test_a_bad_label_refresh_is_said_on_the_counterexamples_page_which_still_works(home, monkeypatch):
    store = projects.get_store(home)
    open_demo_here(store, ALICE)
    monkeypatch.setenv(settings.LABEL_REFRESH.name, "often")
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["lang"] = "ja"
    sign_in_app(at, store, "alice")
    at.run()
    at.switch_page("views/counterexamples.py")
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == ["BIASREPAIR_LABEL_REFRESH は 0 か正の数にしてください（今の値は 'often'）"]
    assert at.button(key="quick_1")  # the label buttons are there: the page goes on with the default


def test_each_worker_takes_its_share_of_the_cores_unless_told(monkeypatch):
    """The two queues' workers run at once: each gets half this process's cores (at least one), so they do not
    wait on each other's threads; ``BIASREPAIR_WORKER_THREADS`` says otherwise."""
    from core.app import worker

    monkeypatch.delenv("BIASREPAIR_WORKER_THREADS", raising=False)
    for cores, threads in ((1, 1), (2, 1), (3, 1), (16, 8)):
        monkeypatch.setattr(worker.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert worker.torch_threads() == threads
    monkeypatch.setenv("BIASREPAIR_WORKER_THREADS", "3")
    assert worker.torch_threads() == 3
    monkeypatch.setenv("BIASREPAIR_WORKER_THREADS", "0")
    with pytest.raises(UserError, match="BIASREPAIR_WORKER_THREADS"):
        worker.torch_threads()
