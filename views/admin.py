"""Admin: accounts (add, roles, password reset, disable) and the four-eyes setting. Only admins see this page;
core/app/accounts.py checks the role again for every change and audits it."""

import pandas as pd
import streamlit as st

from core.app import accounts, display, history, projects, registry
from core.app.i18n import error_translator, translator
from core.app.safe_text import md
from core.errors import UserError

t = translator(st.session_state.get("lang", "en"))
err = error_translator(st.session_state.get("lang", "en"))
store = projects.get_store()
user = st.session_state["user"]

st.title(t("admin_title"))
if not user.can("admin"):  # app.py lists this page for admins only; core checks again on every change
    st.error(t("admin_only"))
    st.stop()
alarm = history.chain_alarm(store, t)
if alarm:
    st.error(alarm, icon="🚨")
message = st.session_state.pop("admin_msg", None)
if message:
    st.success(message)


def _done(text: str) -> None:
    st.session_state["admin_msg"] = text
    st.rerun()


def _role_words(roles: list[str]) -> str:
    return ", ".join(t(f"role_{r}") for r in roles)


people = accounts.users(store)
st.subheader(t("admin_users"))
st.dataframe(
    pd.DataFrame(
        [
            {
                t("admin_col_name"): u["name"],
                t("admin_col_roles"): _role_words(u["roles"]),
                t("admin_col_since"): display.local_time(u["created_at"], st.context.timezone),
                t("admin_col_status"): t("admin_status_disabled" if u["disabled"] else "admin_status_active"),
            }
            for u in people
        ]
    ),
    hide_index=True,
)
st.caption(t("admin_roles_help"))

add, change, reset = st.columns(3)
with add, st.form("add_user"):
    st.markdown(f"**{t('admin_add')}**")
    name = st.text_input(t("signin_name"), key="new_name")
    password = st.text_input(t("signin_password"), type="password", key="new_password")
    roles = st.multiselect(
        t("admin_col_roles"), accounts.ROLES, default=["curator"], format_func=lambda r: t(f"role_{r}"), key="new_roles"
    )
    if st.form_submit_button(t("admin_add_button"), type="primary"):
        try:
            accounts.create_user(store, user, name, password, roles)
            _done(t("admin_added", name=name.strip()))
        except UserError as exc:
            st.error(md(err(exc)))
names = [u["name"] for u in people]
# Not a form: picking a person must redraw the roles field with *their* roles (inside a form the pick
# waited for the submit, and the field kept the previous person's roles, which saving then gave away).
# The field's key names the person, so each person's field starts from their own stored roles.
with change, st.container(border=True, key="set_roles"):
    st.markdown(f"**{t('admin_change_roles')}**")
    who = st.selectbox(t("admin_col_name"), names, key="roles_user")
    current = next((u["roles"] for u in people if u["name"] == who), [])
    new_roles = st.multiselect(
        t("admin_col_roles"),
        accounts.ROLES,
        default=current,
        format_func=lambda r: t(f"role_{r}"),
        key=f"roles_new_{who}",
    )
    unchanged = sorted(new_roles) == sorted(current)
    st.caption(
        t("admin_roles_unchanged", name=md(who or ""), roles=_role_words(current) or t("admin_roles_none"))
        if unchanged
        else t(
            "admin_roles_will_change",
            name=md(who or ""),
            old=_role_words(current) or t("admin_roles_none"),
            new=_role_words(new_roles) or t("admin_roles_none"),
        )
    )
    if st.button(t("admin_change_roles_button"), key="roles_save", disabled=who is None or unchanged):
        try:
            accounts.set_roles(store, user, who, new_roles)
            _done(t("admin_roles_changed", name=who))
        except UserError as exc:
            st.error(md(err(exc)))
with reset, st.form("reset_password"):
    st.markdown(f"**{t('admin_reset')}**")
    who_pw = st.selectbox(t("admin_col_name"), names, key="reset_user")
    new_password = st.text_input(t("admin_new_password"), type="password", key="reset_password_value")
    if st.form_submit_button(t("admin_reset_button")):
        try:
            accounts.reset_password(store, user, who_pw, new_password)
            _done(t("admin_password_reset", name=who_pw))
        except UserError as exc:
            st.error(md(err(exc)))

st.markdown(f"**{t('admin_disable')}**")
st.caption(t("admin_disable_help"))
pick, toggle = st.columns([2, 1], vertical_alignment="bottom")
who_off = pick.selectbox(t("admin_col_name"), names, key="disable_user")
is_off = next((u["disabled"] for u in people if u["name"] == who_off), False)
if toggle.button(t("admin_enable_button" if is_off else "admin_disable_button"), key="disable_toggle"):
    try:
        accounts.set_disabled(store, user, who_off, not is_off)
        _done(t("admin_enabled" if is_off else "admin_disabled", name=who_off))
    except UserError as exc:
        st.error(md(err(exc)))

st.subheader(t("admin_four_eyes"))
st.write(t("admin_four_eyes_help"))
relaxed = accounts.four_eyes_relaxed(store)
(st.warning if relaxed else st.info)(t("admin_four_eyes_relaxed" if relaxed else "admin_four_eyes_kept"))
if st.button(t("admin_four_eyes_restore" if relaxed else "admin_four_eyes_relax"), key="four_eyes_toggle"):
    accounts.set_four_eyes_relaxed(store, user, not relaxed)
    _done(t("admin_four_eyes_restored" if relaxed else "admin_four_eyes_now_relaxed"))

st.subheader(t("admin_registry"))
st.write(md(t("admin_registry_help", uri=registry.tracking_uri(store))))
registering = registry.registry_enabled(store)
st.info(t("admin_registry_on" if registering else "admin_registry_off"))
if st.button(t("admin_registry_turn_off" if registering else "admin_registry_turn_on"), key="registry_toggle"):
    registry.set_registry_enabled(store, user, not registering)
    _done(t("admin_registry_on" if not registering else "admin_registry_off"))
