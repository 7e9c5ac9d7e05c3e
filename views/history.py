"""Step 5, History: the append-only audit log, with filters and a CSV download."""

import streamlit as st

from core.app import display, history, projects
from core.app.i18n import translator

t = translator(st.session_state.get("lang", "en"))
store = projects.get_store()
pid = st.session_state.get("project_id")

st.title(t("history_title"))
st.write(t("history_intro"))

scope = st.radio(
    t("history_scope"),
    ["project", "all"],
    format_func=lambda v: t(f"history_scope_{v}"),
    horizontal=True,
    key="history_scope",
    disabled=pid is None or st.session_state["user"].demo,  # a demo session sees the demo's rows only
)
if st.session_state["user"].demo:
    scope = "project"
frame = history.history_frame(store, pid if scope == "project" and pid is not None else None)
if frame.empty:
    st.info(t("history_empty"))
    st.stop()

frame["what"] = [t(f"action_{a}") for a in frame["action"]]
tz = st.context.timezone
frame["shown_when"] = [display.local_time(w, tz, with_zone=False, seconds=True) for w in frame["when"]]
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
shown = frame
if actions:
    shown = shown[shown["action"].isin(actions)]
if who:
    shown = shown[shown["who"].isin(who)]
if text:
    shown = shown[shown["details"].str.contains(text, case=False, regex=False)]

st.caption(t("history_count", n=len(shown), total=len(frame)))
st.dataframe(
    shown[["id", "shown_when", "who", "what", "details"]].rename(
        columns={
            "shown_when": t("history_col_when", zone=display.zone_name(tz)),
            "who": t("history_col_who"),
            "what": t("history_col_what"),
            "details": t("history_col_details"),
        }
    ),
    hide_index=True,
    height=min(900, 38 + 35 * len(shown)),
    key="history_table",
)
st.download_button(
    t("history_download"),
    data=history.history_csv(shown.drop(columns=["what", "shown_when"])),
    file_name="audit_log.csv",
    mime="text/csv",
    key="history_csv",
    icon="⬇️",
)
