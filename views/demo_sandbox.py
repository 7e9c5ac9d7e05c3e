"""The sidebar's "Reset the demo" for a demo session (core/app/sandboxes.py): a confirmation at the top of the
page that says what will be lost, then a fresh copy of the demo."""

import streamlit as st

from core.app import sandboxes
from core.app.accounts import User
from core.app.i18n import error_translator
from core.app.safe_text import md
from core.app.store import Store
from core.errors import UserError


def reset_button(project_id: int | None, t) -> None:
    """The sidebar's button: it opens the confirmation (:func:`reset_confirmation`)."""
    if project_id is not None and st.button(t("demo_reset"), key="demo_reset", icon="🔄", help=t("demo_reset_help")):
        st.session_state["demo_reset_open"] = project_id


def reset_confirmation(store: Store, user: User, project_id: int | None, lang: str, t) -> None:
    """Once the button was pressed: at the top of the page, on the first screen, what a reset deletes (counted),
    and the choice."""
    if project_id is None or st.session_state.get("demo_reset_open") != project_id:
        return
    with st.container(border=True, key="demo_reset_confirm"):
        st.warning(t("demo_reset_confirm", **sandboxes.what_reset_loses(store, project_id)), icon="🔄")
        go, back = st.columns(2)
        if go.button(t("demo_reset_go"), key="demo_reset_go", type="primary"):
            try:
                new = sandboxes.reset_sandbox(store, user)
            except UserError as exc:
                st.error(md(error_translator(lang)(exc)))
                return
            st.session_state.pop("demo_reset_open", None)
            st.session_state["pending_project"] = new
            st.session_state["flash"] = ("success", t("demo_reset_done"))
            st.rerun()
        if back.button(t("demo_reset_keep"), key="demo_reset_keep"):
            st.session_state.pop("demo_reset_open", None)
            st.rerun()
