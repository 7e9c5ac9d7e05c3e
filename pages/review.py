"""Step 4, Review: old vs new, a plain verdict, and the decision (approve, reject, export, roll back)."""

import streamlit as st

from core.app import charts, decisions, evaluation, projects, runs
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


def _run_name(i: int) -> str:
    r = by_id[i]
    decision = t(f"decision_{r['decision']}") if r["decision"] else t("decision_none")
    return t("review_run_item", run=i, strength=r["strength_label"], decision=decision)


run_id = st.selectbox(t("review_pick"), ids, format_func=_run_name, key=f"review_run_{len(ids)}")
run = store.run(run_id)
m = runs.run_metrics(store, run_id)
v = runs.verdict(m)
before, after = m["before"], m["after"]


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def verdict_text() -> str:
    """The plain-language verdict, built only from computed numbers."""
    parts = [
        t(
            f"verdict_{v['kind']}",
            wb_before=pct(v["worst_before"]),
            wb_after=pct(v["worst_after"]),
            acc_change=f"{100 * v['accuracy_change']:+.1f}",
            kept=pct(v["kept"]),
        )
    ]
    for reason in v["reasons"]:
        parts.append(t(f"verdict_reason_{reason}", max_drop=f"{100 * v['max_drop']:.0f}", min_kept=pct(v["min_kept"])))
    if m.get("strength") is not None and run["config"].get("strength") == "auto":
        parts.append(t("verdict_auto_chose", strength=m["strength"]))
    return " ".join(parts)


box = {"improved": st.success, "partial": st.info, "flagged": st.error, "no_gain": st.warning, "unchanged": st.info}
icon = {"improved": "✅", "partial": "➕", "flagged": "⛔", "no_gain": "⚠️", "unchanged": "ℹ️"}
box[v["kind"]](verdict_text(), icon=icon[v["kind"]])
st.caption(
    t("review_thresholds", max_drop=f"{100 * runs.MAX_ACCURACY_DROP:.0f}", min_kept=pct(runs.MIN_KEPT_DECISIONS))
)

c1, c2, c3, c4 = st.columns(4)
c1.metric(
    t("metric_accuracy"),
    pct(after["accuracy"]),
    f"{100 * (after['accuracy'] - before['accuracy']):+.1f}",
    help=t("review_was", value=pct(before["accuracy"])),
)
wb_b, wb_a = before["worst_group_accuracy"], after["worst_group_accuracy"]
c2.metric(
    t("metric_worst_group"),
    pct(wb_a),
    None if wb_a is None or wb_b is None else f"{100 * (wb_a - wb_b):+.1f}",
    help=t("review_was", value=pct(wb_b)),
)
gap_b, gap_a = before["bias_gap"], after["bias_gap"]
c3.metric(
    t("metric_bias_gap"),
    "–" if gap_a is None else f"{100 * gap_a:.1f}",
    None if gap_a is None or gap_b is None else f"{100 * (gap_a - gap_b):+.1f}",
    delta_color="inverse",
    help=t("review_was", value="–" if gap_b is None else f"{100 * gap_b:.1f}"),
)
c4.metric(t("metric_kept"), pct(m["kept_decisions"]), help=t("metric_kept_help"))
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
tab_fixed, tab_broken = st.tabs([t("review_tab_fixed", n=len(fixed)), t("review_tab_broken", n=len(broken))])
for tab, items, mark in ((tab_fixed, fixed, "✓"), (tab_broken, broken, "✗")):
    with tab:
        if not items:
            st.caption(t("review_no_changes"))
        cols = st.columns(8)
        for i, c in enumerate(items[:32]):
            with cols[i % 8]:
                st.image(evaluation.thumbnail(c["file"], 72))
                st.caption(f"{mark} {md(c['before'])} → {md(c['after'])}")
        if len(items) > 32:
            st.caption(t("review_more", n=len(items) - 32))

st.divider()
st.subheader(t("review_decide"))
status_line = t(f"decision_{run['decision']}") if run["decision"] else t("decision_none")
st.write(t("review_decision_now", decision=status_line))

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
            st.session_state["flash"] = ("success", t("review_approved", run=run_id))
            st.rerun()
        except UserError as exc:
            st.error(md(exc))
with r_col, st.form("reject_form"):
    st.markdown(f"**{t('review_reject_title')}**")
    reject_comment = st.text_area(t("review_comment"), key="reject_comment")
    if st.form_submit_button(t("review_reject"), icon="✋"):
        decisions.reject_run(store, run_id, reject_comment, actor)
        st.session_state["flash"] = ("info", t("review_rejected", run=run_id))
        st.rerun()


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
        if e["detail"].get("run_id") == run_id and e["action"] in ("approved", "rejected", "exported")
    ]
    html_text = build_report(
        title=t("report_title", run=run_id),
        run=run,
        metrics=m,
        verdict_text=verdict_text(),
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
project = store.project(pid)
if e3.button(
    t("review_rollback"),
    key="rollback",
    icon="↩️",
    disabled=project["active_model_id"] == project["base_model_id"],
    help=t("review_rollback_help"),
):
    try:
        decisions.rollback(store, pid, actor)
        st.session_state["flash"] = ("info", t("review_rolled_back"))
        st.rerun()
    except UserError as exc:
        st.error(md(exc))
