"""The workbench's guards against one-click accidents, through ``streamlit.testing.v1.AppTest`` (real store,
real demo): the roles form, Roll back, Approve, and a label overwritten by another curator (docs/WORKBENCH.md)."""

from __future__ import annotations

import pytest

from core.app import accounts, projects
from tests.test_pages import _app, _texts


@pytest.fixture()
def store(home):
    return projects.get_store(home)


def _roles(store, name: str) -> list[str]:
    return next(u["roles"] for u in accounts.users(store) if u["name"] == name)


def test_roles_form_shows_the_picked_persons_roles_and_saves_only_a_change(home, store):
    at = _app("views/admin.py", user="root")
    at.selectbox(key="roles_user").set_value("mia").run()
    assert sorted(at.multiselect(key="roles_new_mia").value) == ["approver", "curator"]
    # Picking another person shows *their* roles, not the previous person's: saving gives nothing away.
    at.selectbox(key="roles_user").set_value("alice").run()
    assert at.multiselect(key="roles_new_alice").value == ["curator"]
    assert "alice has: curator." in _texts(at)
    assert at.button(key="roles_save").disabled  # nothing to change yet
    at.multiselect(key="roles_new_alice").select("approver").run()
    assert "Saving changes alice from curator to curator, approver." in _texts(at)
    assert _roles(store, "alice") == ["curator"]  # not before the click
    at.button(key="roles_save").click().run()
    assert sorted(_roles(store, "alice")) == ["approver", "curator"]
    assert sorted(_roles(store, "mia")) == ["approver", "curator"]
    assert "Roles of alice changed." in _texts(at)
    at.selectbox(key="roles_user").set_value("bob").run()
    assert at.multiselect(key="roles_new_bob").value == ["curator"]
    assert not at.exception
