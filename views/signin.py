"""The sign-in form app.py shows instead of any page while nobody is signed in.

First run (no account yet): a form that makes the admin account. Otherwise name and password. Below,
"Open the demo" starts a demo session (core/app/accounts.py): the demo project, clearly marked,
without approving or exporting.
"""

import streamlit as st

from core.app import accounts, projects
from core.app.i18n import error_translator, translator
from core.app.safe_text import md
from core.app.store import Store
from core.errors import UserError


def _signed_in(token: str, project_id: int | None = None) -> None:
    st.session_state["auth_token"] = token
    if project_id is not None:
        st.session_state["pending_project"] = project_id
    st.rerun()


def sign_in_page(store: Store, lang: str) -> None:
    t, err = translator(lang), error_translator(lang)
    st.title(t("signin_title"))
    first_run = not accounts.has_users(store)
    if first_run:
        st.info(t("signin_first_run"))
        with st.form("first_admin"):
            name = st.text_input(t("signin_name"), key="first_name")
            password = st.text_input(t("signin_password"), type="password", key="first_password")
            again = st.text_input(t("signin_password_again"), type="password", key="first_password_again")
            if st.form_submit_button(t("signin_create_admin"), type="primary"):
                try:
                    if password != again:
                        raise UserError("the two passwords differ", "password_mismatch")
                    accounts.create_user(store, None, name, password, accounts.ROLES)
                    _signed_in(accounts.sign_in(store, name, password))
                except UserError as exc:
                    st.error(md(err(exc)))
    else:
        with st.form("sign_in"):
            name = st.text_input(t("signin_name"), key="signin_name")
            password = st.text_input(t("signin_password"), type="password", key="signin_password")
            if st.form_submit_button(t("signin_button"), type="primary"):
                try:
                    _signed_in(accounts.sign_in(store, name, password))
                except UserError as exc:
                    st.error(md(err(exc)))
    st.divider()
    st.subheader(t("model_demo_header"))
    st.caption(t("signin_demo_caption"))
    if st.button(t("model_open_demo"), key="open_demo", icon="▶️"):
        try:
            token = accounts.demo_session(store)
        except UserError as exc:  # a bad BIASREPAIR_SESSION_HOURS, say
            st.error(md(err(exc)))
            return
        with st.spinner(t("model_demo_building")):
            demo_id = projects.open_demo(store, accounts.user_for(store, token))
        st.session_state["flash"] = ("success", t("model_demo_ready"))
        _signed_in(token, demo_id)
