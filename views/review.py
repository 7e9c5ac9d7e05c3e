"""Step 4, Review: old vs new, a plain verdict, and the decision (approve, reject, export, roll back)."""

import streamlit as st

from core.app import accounts, charts, decisions, display, evaluation, interpolated_runs, projects, runs, summary
from core.app.i18n import error_translator, translator
from core.app.report import build_report
from core.app.safe_text import md
from core.app.store import now_iso
from core.errors import UserError

t = translator(st.session_state.get("lang", "en"))
err = error_translator(st.session_state.get("lang", "en"))
lang = st.session_state.get("lang", "en")
store = projects.get_store()
pid = st.session_state.get("project_id")
actor = st.session_state["user"]  # the signed-in person (app.py); core checks their role

st.title(t("review_title"))
if pid is None or not projects.project_summary(store, pid)["active_model"]:
    st.info(t("need_model"))
    st.page_link("views/model.py", label=t("nav_model"), icon="🧠")
    st.stop()

done = [r for r in store.runs(pid) if r["status"] == "done"]
if not done:
    st.info(t("review_no_runs"))
    st.page_link("views/tune.py", label=t("nav_tune"), icon="🎚️")
    st.stop()

ids = [r["id"] for r in done]
by_id = {r["id"]: r for r in done}
project = store.project(pid)


def _decision_words(r: dict) -> str:
    return t(f"decision_{runs.decision_state(r, project)}")


def _run_name(i: int) -> str:
    r = by_id[i]
    return t("review_run_item", run=i, strength=display.number(r["strength_label"]), decision=_decision_words(r))


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
run_m = runs.run_metrics(store, run_id)
st.caption(_in_use_line())
origin = interpolated_runs.interpolation_of(run)
if origin:
    st.caption(t("review_alpha_origin", run=origin["from_run"], alpha=f"{origin['alpha']:.2f}"))
# A message from the run before an st.rerun(), shown next to the button that caused it.
message = st.session_state.pop("review_msg", None)


def show_message(where: str) -> None:
    if message and message[0] == where:
        getattr(st, message[1])(message[2])


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


# Strength after the fact: the card, the verdict, the bars and the galleries below show the run at
# θ + α·δ; the task worker evaluates each α once (core/app/interpolated_runs.py).
alpha, alpha_view = 1.0, None
if interpolated_runs.can_interpolate(run):
    with st.container(border=True, key="alpha_box"):
        st.markdown(f"**{t('review_alpha_title')}**")
        alpha = st.slider(
            t("review_alpha"),
            0.0,
            1.0,
            1.0,
            step=interpolated_runs.ALPHA_STEP,
            format="%.2f",
            key=f"alpha_{run_id}",
            help=t("review_alpha_help"),
        )
        interpolated_runs.prefetch(store, run_id, actor)
        try:
            with st.spinner(t("review_alpha_computing", alpha=f"{alpha:.2f}")):
                alpha_view = interpolated_runs.preview(store, run_id, alpha, actor)
        except UserError as exc:
            st.error(md(err(exc)))
            alpha = 1.0
        if alpha_view is not None and alpha < 1.0:
            st.info(
                t(
                    "review_alpha_preview",
                    alpha=f"{alpha:.2f}",
                    share=f"{100 * alpha:.0f}",
                    fixed=alpha_view["counterexamples_fixed"]
                    if alpha_view["counterexamples_fixed"] is not None
                    else "–",
                    fixed_full=run_m.get("counterexamples_fixed")
                    if run_m.get("counterexamples_fixed") is not None
                    else "–",
                    n=run_m.get("counterexamples", run["n_counterexamples"]),
                    run=run_id,
                )
            )
        if st.button(
            t("review_alpha_save", alpha=f"{alpha:.2f}"),
            key="alpha_save",
            icon="💾",
            disabled=alpha_view is None or alpha in (0.0, 1.0),
            help=t("review_alpha_save_help"),
        ):
            try:
                with st.spinner(t("review_alpha_saving")):
                    new_id = interpolated_runs.save_as_run(store, run_id, alpha, actor)
                st.session_state["review_picked"] = new_id
                st.session_state["review_msg"] = (
                    "alpha",
                    "success",
                    t("review_alpha_saved", run=new_id, from_run=run_id, alpha=f"{alpha:.2f}"),
                )
                st.rerun()
            except UserError as exc:
                st.error(md(err(exc)))
        show_message("alpha")

m = alpha_view["metrics"] if alpha_view is not None and alpha < 1.0 else run_m
v = runs.verdict(m)
before, after = m["before"], m["after"]
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

changed = runs.changed_predictions(store, run_id, after=alpha_view["after"] if alpha < 1.0 else None)
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
if alpha < 1.0:
    st.info(t("review_alpha_decide_note", run=run_id, alpha=f"{alpha:.2f}"))

a_col, r_col = st.columns(2)
with a_col, st.form("approve_form"):
    st.markdown(f"**{t('review_approve_title')}**")
    st.caption(t("review_approve_as", name=md(actor)))
    behind = decisions.responsible(store, run)
    if actor in behind["started"] + behind["labelled"]:
        relaxed_now = accounts.four_eyes_relaxed(store)
        st.caption(t("review_four_eyes_relaxed_you" if relaxed_now else "review_four_eyes_you"))
    comment = st.text_area(t("review_comment"), key="approve_comment")
    override, reason = False, ""
    if v["kind"] == "flagged":
        st.warning(t("review_flagged_needs_override"))
        override = st.checkbox(t("review_override"), key="override")
        reason = st.text_area(t("review_override_reason"), key="override_reason")
    if st.form_submit_button(t("review_approve"), type="primary", icon="✅"):
        try:
            decisions.approve_run(store, run_id, comment, actor, override=override, reason=reason)
            st.session_state["review_msg"] = ("approve", "success", t("review_approved", run=run_id))
            st.rerun()
        except UserError as exc:
            st.error(md(err(exc)))
    show_message("approve")
with r_col, st.form("reject_form"):
    st.markdown(f"**{t('review_reject_title')}**")
    reject_comment = st.text_area(t("review_comment"), key="reject_comment")
    if st.form_submit_button(t("review_reject"), icon="✋"):
        try:
            decisions.reject_run(store, run_id, reject_comment, actor)
            st.session_state["review_msg"] = ("reject", "info", t("review_rejected", run=run_id))
            st.rerun()
        except UserError as exc:
            st.error(md(err(exc)))
    show_message("reject")


def _export() -> bytes:
    data = decisions.export_bytes(store, run_id, actor)
    decisions.record_export(store, run_id, data, actor)
    return data


def _report() -> bytes:
    decision_lines = [
        t(
            "report_decision_line",
            when=display.local_time(e["ts"], st.context.timezone),
            who=e["actor"],
            action=t(f"action_{e['action']}"),
            detail=" ".join(
                [e["detail"].get("comment", "")]
                + ([t("report_four_eyes_relaxed")] if e["detail"].get("four_eyes") == "relaxed" else [])
            ).strip(),
        )
        for e in store.audit_events(pid)
        if (e["detail"].get("run_id") == run_id and e["action"] in ("approved", "rejected", "exported"))
        or (
            e["action"] == "rolled_back"
            and run["repaired_model_id"]
            and e["detail"].get("from_model_id") == run["repaired_model_id"]
        )
    ]
    decision_lines.append(t("report_made_by", who=actor, when=display.local_time(now_iso(), st.context.timezone)))
    # The report is of the run itself (α = 1), whatever strength the slider previews.
    rv = runs.verdict(run_m)
    words = summary.verdict_text(rv, t, auto_strength=auto_strength)
    html_text = build_report(
        title=t("report_title", run=run_id),
        run=run,
        metrics=run_m,
        verdict_text=words,
        summary_html=summary.summary_card_html(run_m, rv, t, verdict=words),
        figures=[
            (t("chart_heatmap_title") + " — " + t("chart_old"), charts.accuracy_heatmap(run_m["before"], t)),
            (t("chart_heatmap_title") + " — " + t("chart_new"), charts.accuracy_heatmap(run_m["after"], t)),
            (t("chart_old_new_title"), charts.old_new_bars(run_m["before"], run_m["after"], t)),
            (t("chart_tradeoff_title"), fig_trade),
            (t("chart_loss_title"), charts.live_curves(store.progress(run_id), t)),
        ],
        changed=runs.changed_predictions(store, run_id),
        decision_lines=decision_lines,
        t=t,
        lang=lang,
        tz=st.context.timezone,
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
    disabled=run["decision"] != "approved" or actor.demo or not actor.can("approver"),
    help=t("review_export_help"),
)
if actor.demo or not actor.can("approver"):
    e1.caption(t("review_export_needs_approver_demo" if actor.demo else "review_export_needs_approver"))
elif run["decision"] == "approved" and (a := decisions.approval(store, run_id)):
    relaxed = a["detail"].get("four_eyes") == "relaxed"
    e1.caption(
        t(
            "review_approved_by_relaxed" if relaxed else "review_approved_by",
            name=md(a["actor"]),
            when=display.local_time(a["ts"], st.context.timezone),
        )
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
        e3.error(md(err(exc)))
with e3:
    show_message("rollback")
