"""Step 4, Review: old vs new, a plain verdict, and the decision (approve, reject, export, roll back)."""

import streamlit as st

from core.app import (
    baseline,
    built_from,
    charts,
    decisions,
    display,
    evaluation,
    interpolated_runs,
    projects,
    registry,
    report,
    review,
    runs,
    summary,
)
from core.app.i18n import error_translator, translator
from core.app.safe_text import md
from core.errors import UserError

t = translator(st.session_state.get("lang", "en"))
err = error_translator(st.session_state.get("lang", "en"))
lang = st.session_state.get("lang", "en")
store = projects.get_store()
pid = st.session_state.get("project_id")
actor = st.session_state["user"]  # the signed-in person (app.py); core checks their role
# Read now: the report is made in a download callback, where the browser's context is not at hand.
tz = st.context.timezone

st.title(t("review_title"))
if pid is None or not projects.project_summary(store, pid)["active_model"]:
    st.info(t("need_model"))
    st.page_link("views/model.py", label=t("nav_model"), icon="🧠")
    st.stop()

done = review.reviewable_runs(store, pid)
if not done:
    st.info(t("review_no_runs"))
    st.page_link("views/tune.py", label=t("nav_tune"), icon="🎚️")
    st.stop()

ids = [r["id"] for r in done]
by_id = {r["id"]: r for r in done}
project = store.project(pid)


# The picker's key includes every run's decision state, so that its labels are redrawn at once after
# Approve, Reject or Roll back (a browser keeps a widget's old labels while its key stays the same);
# the chosen run is kept across that change.
states = "-".join(runs.decision_state(by_id[i], project) for i in ids)
picked = st.session_state.get("review_picked")
pick_col, base_col = st.columns([3, 2])
run_id = pick_col.selectbox(
    t("review_pick"),
    ids,
    index=ids.index(picked) if picked in ids else 0,
    format_func=lambda i: review.run_item(by_id[i], project, t, store),
    key=f"review_run_{len(ids)}_{states}",
)
st.session_state["review_picked"] = run_id
run = store.run(run_id)
run_m = runs.run_metrics(store, run_id)
# The baseline switch: every number, chart and verdict below compares with the model picked here
# (core/app/baseline.py computes them); "in use now" is off, with its reason, when there is no such model.
in_use_opt = baseline.in_use_option(store, run_id)
choices = {"original": baseline.ORIGINAL, "in_use": in_use_opt.baseline()}
picked_base = base_col.segmented_control(
    t("baseline_label"),
    list(choices),
    default="original",
    format_func=lambda k: (
        choices[k].name(t) if k == "original" or in_use_opt.available else t("baseline_name_in_use_plain")
    ),
    key=f"baseline_{run_id}_{in_use_opt.run_id}_{in_use_opt.available}",
    disabled=not in_use_opt.available,
    help=t("baseline_help"),
)
base = choices.get(picked_base or "original", baseline.ORIGINAL)
st.caption(
    " ".join(
        [review.in_use_line(store, pid, t), base.words(t)]
        + ([t(in_use_opt.reason, run=in_use_opt.run_id)] if not in_use_opt.available else [])
    )
)
origin = interpolated_runs.interpolation_of(run)
if origin:
    st.caption(t("review_alpha_origin", run=origin["from_run"], alpha=f"{origin['alpha']:.2f}"))
# A message from the run before an st.rerun(), shown next to the button that caused it.
message = st.session_state.pop("review_msg", None)


def show_message(where: str) -> None:
    if message and message[0] == where:
        getattr(st, message[1])(message[2])


# The strength-after-the-fact slider sits right above the verdict and the card, compact and without a
# border, so that at 1280×720 the slider, the verdict and the card it changes are on the first screen together.
# Strength after the fact: the card, the verdict, the bars and the galleries below show the run at
# θ + α·δ; the task worker evaluates each α once (core/app/interpolated_runs.py).
alpha, alpha_view = 1.0, None
if interpolated_runs.can_interpolate(run):
    with st.container(key="alpha_box"):
        # One row (slider, save) so that the card above and this box fit on the first screen together.
        slide_col, save_col = st.columns([3, 1], vertical_alignment="bottom")
        alpha = slide_col.slider(
            f"**{t('review_alpha_title')}** · {t('review_alpha')}",
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
        if save_col.button(
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

card_slot = st.empty()
content = review.review_content(
    store, run_id, t, preview=alpha_view if alpha_view is not None and alpha < 1.0 else None, baseline=base
)
m, v = content.metrics, content.verdict
with card_slot.container(border=True, key="summary_card"):
    # The verdict in large type, to read from the back of a meeting room.
    st.html('<style>.st-key-summary_card [data-testid="stAlert"] p{font-size:18px;line-height:1.35}</style>')
    getattr(st, v.kind.look.tone)(content.words, icon=v.kind.look.icon)
    st.html(content.card_html(t))
st.caption(summary.rules_text(v, t))
st.caption(summary.counts_text(m, t))
if (check_words := summary.check_text(m, t)) is not None:
    st.caption("🛡️ " + check_words)

BUILT_SHOWN = 16  # counterexample thumbnails shown in "built from"; the rest are counted
with st.container(border=True, key="built_from"):
    try:
        with st.spinner(t("review_built_computing")):
            built = built_from.built_from(store, run_id, actor)
    except UserError as exc:
        st.error(md(err(exc)))
        built = built_from.built_from(store, run_id)
    facts = [
        t("review_built_fixed", fixed=built.fixed if built.fixed is not None else "–", n=built.total),
        t("review_built_started_by", name=md(built.started_by)),
        t(f"method_{built.method}"),
        t("review_built_strength", strength=review.strength_words(run, run_m, t)),
    ]
    st.markdown(f"**{t('review_built_title')}** · " + " · ".join(facts))
    if not built.images:
        st.caption(t("review_built_no_images"))
    cols = st.columns(8) if built.images else []
    for i, c in enumerate(built.images[:BUILT_SHOWN]):
        with cols[i % 8]:
            st.image(evaluation.thumbnail(c.file, 64))
            answer = (
                f"{'✓' if c.fixed else '✗'} {md(c.before)} → {md(c.after)}"
                if c.after is not None
                else t("review_built_no_answer")
            )
            by = md(c.labelled_by) if c.labelled_by else "–"
            st.caption(f"**{md(c.label)}** · {by}  \n{answer}")
    if len(built.images) > BUILT_SHOWN:
        st.caption(t("review_built_more", n=len(built.images) - BUILT_SHOWN))

st.plotly_chart(charts.old_new_bars(m["before"], m["after"], t, old_name=base.name(t)), key="old_new")
st.plotly_chart(charts.tradeoff(baseline.tradeoff_points(store, pid, base), t, highlight=run_id), key="tradeoff")
st.caption(t("review_tradeoff_help"))

st.subheader(t("review_changed_title"))
side_fixed, side_broken = st.columns(2, gap="large")
for side, items, mark, title, key in (
    (side_fixed, content.fixed, "✓", "review_tab_fixed", "gallery_fixed"),
    (side_broken, content.broken, "✗", "review_tab_broken", "gallery_broken"),
):
    with side, st.container(key=key):
        st.markdown(f"#### {t(title, n=len(items))}")
        sample = summary.varied_sample(items, review.PAGE_SAMPLE)
        if not sample:
            st.caption(t("review_no_changes"))
            continue
        st.caption(t("review_sample_note", shown=len(sample), n=len(items)))
        cols = st.columns(4)
        for i, c in enumerate(sample):
            with cols[i % 4]:
                st.image(evaluation.thumbnail(c["file"], 72))
                st.caption(f"{mark} {md(c['before'])} → {md(c['after'])}  \n{md(display.group_name(c))}")

st.divider()
st.subheader(t("review_decide"))
decision_now = t(f"decision_{runs.decision_state(run, project)}")
st.markdown(f"**{t('review_decision_now', decision=decision_now)}** {review.in_use_line(store, pid, t)}")
if alpha < 1.0:
    st.info(t("review_alpha_decide_note", run=run_id, alpha=f"{alpha:.2f}"))

in_use_run = runs.model_in_use(store, pid)
a_col, r_col = st.columns(2)
with a_col, st.form("approve_form"):
    st.markdown(f"**{t('review_approve_title')}**")
    st.caption(t("review_approve_as", name=md(actor)))
    # Approve is offered only where a click could succeed; otherwise it is off and says why.
    blocker = decisions.approve_blocker(store, run, actor)
    behind = decisions.responsible(store, run)
    if blocker is not None:
        st.caption(t(blocker, run=run_id))
    elif actor in behind["started"] + behind["labelled"]:
        st.caption(t("review_four_eyes_relaxed_you"))
    comment = st.text_area(t("review_comment"), key="approve_comment", disabled=blocker is not None)
    override, reason = False, ""
    if v.flagged and blocker is None:
        st.warning(t("review_flagged_needs_override"))
        override = st.checkbox(t("review_override"), key="override")
        reason = st.text_area(t("review_override_reason"), key="override_reason")
    if st.form_submit_button(t("review_approve"), type="primary", icon="✅", disabled=blocker is not None):
        try:
            decisions.approve_run(store, run_id, comment, actor, override=override, reason=reason)
            st.session_state["review_msg"] = ("approve", "success", t("review_approved", run=run_id))
            st.rerun()
        except UserError as exc:
            st.error(md(err(exc)))
    show_message("approve")
with r_col, st.form("reject_form"):
    st.markdown(f"**{t('review_reject_title')}**")
    may_reject = actor.can("approver") and not actor.demo and run["decision"] != "rejected"
    if run["decision"] == "rejected":
        st.caption(t("review_reject_already", run=run_id))
    elif not may_reject:
        st.caption(t("review_approve_blocked_demo" if actor.demo else "review_approve_blocked_role"))
    elif in_use_run == run_id:  # what the click will change, before it is made
        st.caption(t("review_reject_in_use", run=run_id))
    reject_comment = st.text_area(t("review_comment"), key="reject_comment", disabled=not may_reject)
    if st.form_submit_button(t("review_reject"), icon="✋", disabled=not may_reject):
        try:
            decisions.reject_run(store, run_id, reject_comment, actor)
            st.session_state["review_msg"] = ("reject", "info", t("review_rejected", run=run_id))
            st.rerun()
        except UserError as exc:
            st.error(md(err(exc)))
    show_message("reject")


def _export() -> bytes:
    data = decisions.export_bytes(store, run_id, actor, lang)
    decisions.record_export(store, run_id, data, actor)
    return data


def _report() -> bytes:
    data = report.report_html(store, run_id, actor, t, lang, tz, baseline=base).encode("utf-8")
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
# The ONNX export: made and checked against PyTorch by the task worker (core.app.decisions.onnx_export_zip).
e1.download_button(
    t("review_export_onnx"),
    data=lambda: decisions.onnx_export_zip(store, run_id, actor, lang)[0],
    file_name=f"repaired_model_run{run_id}_onnx.zip",
    mime="application/zip",
    key="export_onnx",
    on_click="ignore",
    icon="🧩",
    disabled=run["decision"] != "approved" or actor.demo or not actor.can("approver"),
    help=t("review_export_onnx_help"),
)
if actor.demo or not actor.can("approver"):
    e1.caption(t("review_export_needs_approver_demo" if actor.demo else "review_export_needs_approver"))
elif run["decision"] == "approved" and (a := decisions.approval(store, run_id)):
    relaxed = a["detail"].get("four_eyes") == "relaxed"
    e1.caption(
        t(
            "review_approved_by_relaxed" if relaxed else "review_approved_by",
            name=md(a["actor"]),
            when=display.local_time(a["ts"], tz),
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
# Roll back: offered only on the review of the repair in use (a roll-back from another repair's page would
# silently undo that one); the button opens a confirmation that says what changes and asks for a reason,
# which goes into the audit row.
may_roll_back = actor.can("approver") and not actor.demo
other_in_use = in_use_run not in (None, run_id)
if e3.button(
    t("review_rollback"),
    key="rollback",
    icon="↩️",
    disabled=in_use_run != run_id or not may_roll_back,
    help=t("review_rollback_help"),
):
    st.session_state["rollback_open"] = run_id
if not may_roll_back:
    e3.caption(t("review_rollback_needs_approver"))
elif other_in_use:
    e3.caption(t("review_rollback_elsewhere", run=in_use_run))
with e3:
    show_message("rollback")
if st.session_state.get("rollback_open") == run_id and in_use_run == run_id:
    with st.container(border=True, key="rollback_confirm"):
        st.warning(t("review_rollback_confirm_repair", run=run_id), icon="↩️")
        why = st.text_area(t("review_rollback_reason"), key="rollback_reason")
        go, back = st.columns(2)
        if go.button(t("review_rollback_go"), key="rollback_go", type="primary"):
            try:
                decisions.rollback(store, pid, actor, why)
                st.session_state.pop("rollback_open", None)
                st.session_state["review_msg"] = ("rollback", "info", t("review_rolled_back"))
                st.rerun()
            except UserError as exc:
                st.error(md(err(exc)))
        if back.button(t("review_rollback_keep"), key="rollback_cancel"):
            st.session_state.pop("rollback_open", None)
            st.rerun()

# The MLflow registry (an admin's setting, core.app.registry): its last update; a failed one is queued again.
if registry.registry_enabled(store) and (reg := registry.last_update(store, pid)):
    if registry.retry_if_failed(store, pid, actor):
        st.warning(md(t("review_registry_failed", detail=reg["detail"].get("error", ""))))
    else:
        d = reg["detail"]
        st.caption(md(t("review_registry_done", model=d["registered_model"], version=d["version"], alias=d["alias"])))
