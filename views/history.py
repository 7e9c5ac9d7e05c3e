"""Step 5, History: the append-only audit log, newest first and in words, with filters, the full record of a
picked row (in words, then as stored), and a CSV download."""

import json

import streamlit as st

from core.app import history, projects
from core.app.i18n import translator
from core.app.safe_text import md

t = translator(st.session_state.get("lang", "en"))
store = projects.get_store()
pid = st.session_state.get("project_id")
user = st.session_state["user"]

st.title(t("history_title"))
alarm = history.chain_alarm(store, t)  # the hash chain, checked each time the page is shown
if alarm:
    st.error(alarm, icon="🚨")
st.write(t("history_intro"))

scope = st.radio(
    t("history_scope"),
    ["project", "all"],
    format_func=lambda v: t(f"history_scope_{v}"),
    horizontal=True,
    key="history_scope",
    disabled=pid is None or user.demo,  # a demo session sees the demo's rows only
)
frame = history.history_frame(store, history.scope_project(user, pid, scope))
if frame.empty:
    st.info(t("history_empty"))
    st.stop()

f1, f2, f3 = st.columns(3)
actions = f1.multiselect(
    t("history_filter_action"),
    sorted(frame["action"].unique()),
    format_func=lambda a: t(f"action_{a}"),
    key="history_actions",
    placeholder=t("history_filter_any"),
)
who = f2.multiselect(
    t("history_filter_who"), sorted(frame["who"].unique()), key="history_who", placeholder=t("history_filter_any")
)
text = f3.text_input(t("history_filter_text"), key="history_text")
shown = history.filter_frame(frame, actions, who, text)

st.caption(t("history_count", n=len(shown), total=len(frame)) + " · " + t("history_pick_row"))
picked = st.dataframe(
    history.table(shown, t, st.context.timezone),
    hide_index=True,
    height=min(900, 38 + 35 * len(shown)),
    key="history_table",
    on_select="rerun",
    selection_mode="single-row",
)
rows = picked.selection.rows if picked is not None else []
if rows:
    row = shown.iloc[::-1].iloc[rows[0]]  # the table is newest first
    detail = json.loads(row["details"])
    with st.expander(t("history_row_details", id=int(row["id"])), expanded=True):
        lines = []
        for name, value in history.record_items(detail, t):  # in words, settings named as the Repair page does
            if isinstance(value, list):
                lines += [f"- **{md(name)}**"] + [f"    - {md(n)}: {md(v)}" for n, v in value]
            else:
                lines.append(f"- **{md(name)}**: {md(value)}")
        st.markdown("\n".join(lines))
        st.caption(t("history_row_as_stored"))
        st.json(detail, expanded=False)
st.download_button(
    t("history_download"),
    data=history.history_csv(shown),
    file_name="audit_log.csv",
    mime="text/csv",
    key="history_csv",
    icon="⬇️",
)
