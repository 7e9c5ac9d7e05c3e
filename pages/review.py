"""Step 4, Review: old vs new, a plain verdict, and the decision (approve, reject, export, roll back)."""

import streamlit as st

from core.app import charts, decisions, evaluation, projects, runs, summary
from core.app.i18n import translator
from core.app.report import build_report
from core.app.safe_text import md
from core.errors import UserError

t = translator(st.session_state.get("lang", "en"))
lang = st.session_state.get("lang", "en")
store = projects.get_store()
pid = st.session_state.get("project_id")
actor = st.session_state.get("actor") or "curator"

st.title(t("review_title"))
if pid is None or not projects.project_summary(store, pid)["active_model"]:
    st.info(t("need_model"))
    st.page_link("pages/model.py", label=t("nav_model"), icon="🧠")
    st.stop()

done = [r for r in store.runs(pid) if r["status"] == "done"]
if not done:
    st.info(t("review_no_runs"))
    st.page_link("pages/tune.py", label=t("nav_tune"), icon="🎚️")
    st.stop()

ids = [r["id"] for r in done]
by_id = {r["id"]: r for r in done}
project = store.project(pid)


def _decision_words(r: dict) -> str:
    return t(f"decision_{runs.decision_state(r, project)}")


def _run_name(i: int) -> str:
    r = by_id[i]
    return t("review_run_item", run=i, strength=r["strength_label"], decision=_decision_words(r))


def _in_use_line() -> str:
    in_use = runs.model_in_use(store, pid)
    return t("review_in_use_original") if in_use is None else t("review_in_use_repair", run=in_use)


# The picker's key includes every run's decision state, so that its labels are redrawn at once after
# Approve, Reject or Roll back (a browser keeps a widget's old labels while its key stays the same);
# the chosen run is kept across that change.
states = "-".join(runs.decision_state(by_id[i], project) for i in ids)
picked = st.session_state.get("review_picked")
run_id = st.selectbox(
    t("review_pick"),
    ids,
    index=ids.index(picked) if picked in ids else 0,
    format_func=_run_name,
    key=f"review_run_{len(ids)}_{states}",
)
st.session_state["review_picked"] = run_id
run = store.run(run_id)
m = runs.run_metrics(store, run_id)
v = runs.verdict(m)
before, after = m["before"], m["after"]
st.caption(_in_use_line())
# A message from the run before an st.rerun(), shown next to the button that caused it.
message = st.session_state.pop("review_msg", None)


def show_message(where: str) -> None:
    if message and message[0] == where:
        getattr(st, message[1])(message[2])


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


auto_strength = m.get("strength") if run["config"].get("strength") == "auto" else None
verdict_words = summary.verdict_text(v, t, auto_strength=auto_strength)

box = {
    "improved": st.success,
    "mixed": st.warning,
    "partial": st.info,
    "flagged": st.error,
    "no_gain": st.warning,
    "unchanged": st.info,
}
icon = {"improved": "✅", "mixed": "⚖️", "partial": "➕", "flagged": "⛔", "no_gain": "⚠️", "unchanged": "ℹ️"}
with st.container(border=True, key="summary_card"):
    # The verdict in large type, to read from the back of a meeting room.
    st.html('<style>.st-key-summary_card [data-testid="stAlert"] p{font-size:19px;line-height:1.4}</style>')
    box[v["kind"]](verdict_words, icon=icon[v["kind"]])
    st.html(summary.summary_card_html(m, v, t))
st.caption(
    t("review_thresholds", max_drop=f"{100 * runs.MAX_ACCURACY_DROP:.0f}", min_kept=pct(runs.MIN_KEPT_DECISIONS))
)
st.caption(
    t(
        "review_counts",
        changed=m["changed_predictions"],
        fixed=m.get("n_fixed", 0),
        broken=m.get("n_broken", 0),
        corrected=pct(m["errors_corrected"]),
        introduced=pct(m["errors_introduced"]),
        min_group=before["min_group_count"],
    )
)

fig_groups = charts.old_new_bars(before, after, t)
points = runs.tradeoff_points(store, pid)
fig_trade = charts.tradeoff(points, t, highlight=run_id)
st.plotly_chart(fig_groups, key="old_new")
st.plotly_chart(fig_trade, key="tradeoff")
st.caption(t("review_tradeoff_help"))

changed = runs.changed_predictions(store, run_id)
st.subheader(t("review_changed_title"))
fixed = [c for c in changed if c["fixed"]]
broken = [c for c in changed if c["broken"]]
GALLERY = 16
side_fixed, side_broken = st.columns(2, gap="large")
for side, items, mark, title, key in (
    (side_fixed, fixed, "✓", "review_tab_fixed", "gallery_fixed"),
    (side_broken, broken, "✗", "review_tab_broken", "gallery_broken"),
):
    with side, st.container(key=key):
        st.markdown(f"#### {t(title, n=len(items))}")
        sample = summary.varied_sample(items, GALLERY)
        if not sample:
            st.caption(t("review_no_changes"))
            continue
        st.caption(t("review_sample_note", shown=len(sample), n=len(items)))
        cols = st.columns(4)
        for i, c in enumerate(sample):
            with cols[i % 4]:
                st.image(evaluation.thumbnail(c["file"], 72))
                st.caption(f"{mark} {md(c['before'])} → {md(c['after'])}  \n{md(summary.group_name(c))}")

st.divider()
st.subheader(t("review_decide"))
st.markdown(f"**{t('review_decision_now', decision=_decision_words(run))}** {_in_use_line()}")

a_col, r_col = st.columns(2)
with a_col, st.form("approve_form"):
    st.markdown(f"**{t('review_approve_title')}**")
    approver = st.text_input(t("review_approver"), value=actor, key="approver")
    comment = st.text_area(t("review_comment"), key="approve_comment")
    override, reason = False, ""
    if v["kind"] == "flagged":
        st.warning(t("review_flagged_needs_override"))
        override = st.checkbox(t("review_override"), key="override")
        reason = st.text_area(t("review_override_reason"), key="override_reason")
    if st.form_submit_button(t("review_approve"), type="primary", icon="✅"):
        try:
            decisions.approve_run(store, run_id, approver, comment, actor, override=override, reason=reason)
            st.session_state["review_msg"] = ("approve", "success", t("review_approved", run=run_id))
            st.rerun()
        except UserError as exc:
            st.error(md(exc))
    show_message("approve")
with r_col, st.form("reject_form"):
    st.markdown(f"**{t('review_reject_title')}**")
    reject_comment = st.text_area(t("review_comment"), key="reject_comment")
    if st.form_submit_button(t("review_reject"), icon="✋"):
        decisions.reject_run(store, run_id, reject_comment, actor)
        st.session_state["review_msg"] = ("reject", "info", t("review_rejected", run=run_id))
        st.rerun()
    show_message("reject")


def _export() -> bytes:
    data = decisions.export_bytes(store, run_id)
    decisions.record_export(store, run_id, data, actor)
    return data


def _report() -> bytes:
    decision_lines = [
        t(
            "report_decision_line",
            when=e["ts"],
            who=e["actor"],
            action=t(f"action_{e['action']}"),
            detail=e["detail"].get("comment", ""),
        )
        for e in store.audit_events(pid)
        if (e["detail"].get("run_id") == run_id and e["action"] in ("approved", "rejected", "exported"))
        or (
            e["action"] == "rolled_back"
            and run["repaired_model_id"]
            and e["detail"].get("from_model_id") == run["repaired_model_id"]
        )
    ]
    html_text = build_report(
        title=t("report_title", run=run_id),
        run=run,
        metrics=m,
        verdict_text=verdict_words,
        summary_html=summary.summary_card_html(m, v, t, verdict=verdict_words),
        figures=[
            (t("chart_heatmap_title") + " — " + t("chart_old"), charts.accuracy_heatmap(before, t)),
            (t("chart_heatmap_title") + " — " + t("chart_new"), charts.accuracy_heatmap(after, t)),
            (t("chart_old_new_title"), fig_groups),
            (t("chart_tradeoff_title"), fig_trade),
            (t("chart_loss_title"), charts.live_curves(store.progress(run_id), t)),
        ],
        changed=changed,
        decision_lines=decision_lines,
        t=t,
        lang=lang,
    )
    data = html_text.encode("utf-8")
    decisions.record_report(store, run_id, data, actor)
    return data


e1, e2, e3 = st.columns(3)
e1.download_button(
    t("review_export"),
    data=_export,
    file_name=f"repaired_model_run{run_id}.zip",
    mime="application/zip",
    key="export",
    on_click="ignore",  # the audit row is written when the file is produced; no rerun needed
    icon="📦",
    disabled=run["decision"] != "approved",
    help=t("review_export_help"),
)
e2.download_button(
    t("review_report"),
    data=_report,
    file_name=f"repair_report_run{run_id}.html",
    mime="text/html",
    key="report",
    on_click="ignore",
    icon="📄",
)
if e3.button(
    t("review_rollback"),
    key="rollback",
    icon="↩️",
    disabled=project["active_model_id"] == project["base_model_id"],
    help=t("review_rollback_help"),
):
    try:
        decisions.rollback(store, pid, actor)
        st.session_state["review_msg"] = ("rollback", "info", t("review_rolled_back"))
        st.rerun()
    except UserError as exc:
        e3.error(md(exc))
with e3:
    show_message("rollback")
