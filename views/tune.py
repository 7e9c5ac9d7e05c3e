"""Step 3, Tune: choose how strongly to protect current behaviour, start repairs, watch them live.

The repair runs in a worker process; this page only reads its progress from the store, in a
fragment that reruns every second while a run is queued or running.
"""

import streamlit as st

from core.app import budget, charts, display, guard_plan, interpolated_runs, pool, projects, review, runs
from core.app.i18n import error_translator, translator
from core.app.safe_text import md
from core.app.store import ACTIVE_RUN_STATES, ENDED_WITHOUT_RESULT
from core.app.strength_scale import strength_scale
from core.errors import UserError

t = translator(st.session_state.get("lang", "en"))
err = error_translator(st.session_state.get("lang", "en"))
store = projects.get_store()
pid = st.session_state.get("project_id")
actor = st.session_state["user"]  # the signed-in person (app.py); core checks their role

st.title(t("tune_title"))
if pid is None or not projects.project_summary(store, pid)["active_model"]:
    st.info(t("need_model"))
    st.page_link("views/model.py", label=t("nav_model"), icon="🧠")
    st.stop()

n_chosen = len(pool.chosen_set(store, pid))
st.write(t("tune_intro", n=n_chosen) if n_chosen else t("tune_intro_none"))
if n_chosen == 0:
    st.warning(t("tune_need_labels"))
    st.page_link("views/counterexamples.py", label=t("nav_counterexamples"), icon="🏷️")

methods = dict(runs.method_choices())  # name → the translation key of its title
m_col, a_col = st.columns([1, 1], vertical_alignment="bottom")
method = m_col.selectbox(t("tune_method"), list(methods), format_func=lambda m: t(methods[m]), key="tune_method")
schema = {s["name"]: s for s in runs.method_schema(method)}

config: dict = {}
if "strength" in schema:
    scale = strength_scale(schema["strength"])
    auto = a_col.toggle(t("tune_auto"), key="tune_auto", help=t("tune_auto_help"))
    strength = st.select_slider(
        t("tune_strength"),
        options=scale.options,
        value=scale.default,
        format_func=display.number,  # 1,000 and 1e6, as every other strength on the pages
        key="tune_strength",
        disabled=auto,
        help=t("tune_strength_help"),
    )
    e1, e2 = st.columns(2)
    e1.caption("◀ " + t("tune_change_freely"))
    e2.markdown(
        f"<div style='text-align:right;font-size:0.875rem;opacity:0.7'>{t('tune_protect')} ▶</div>",
        unsafe_allow_html=True,
    )
    config["strength"] = "auto" if auto else strength

# At 1280x720 Start and the live progress come right under the strength (the meeting's first screen); the
# advanced settings and the guard are drawn below them but read before the Start button acts on a click.
start_slot, live_slot = st.container(), st.container(key="tune_live")

with st.expander(t("tune_advanced")):
    st.caption(t("tune_advanced_help"))
    for name, spec in schema.items():
        if name == "strength":
            continue
        label, helptext = t(spec["label_key"]), t(spec["help_key"])
        key = f"cfg_{method}_{name}"
        if spec["choices"]:
            choices = list(spec["choices"])
            config[name] = st.selectbox(label, choices, index=choices.index(spec["default"]), key=key, help=helptext)
        elif spec["type"] == "bool":
            config[name] = st.checkbox(label, value=bool(spec["default"]), key=key, help=helptext)
        elif spec["type"] == "int":
            config[name] = int(
                st.number_input(
                    label,
                    min_value=spec["min"],
                    max_value=spec["max"],
                    value=int(spec["default"]),
                    step=1,
                    key=key,
                    help=helptext,
                )
            )
        elif spec["type"] == "float":
            config[name] = float(
                st.number_input(
                    label,
                    min_value=float(spec["min"]) if spec["min"] is not None else None,
                    max_value=float(spec["max"]) if spec["max"] is not None else None,
                    value=float(spec["default"]),
                    format="%g",
                    step=float(spec["default"]) / 10 if spec["log"] and spec["default"] > 0 else None,
                    key=key,
                    help=helptext,
                )
            )
        else:
            config[name] = st.text_input(label, value=str(spec["default"]), key=key, help=helptext)

# Which guard the next repair uses (the check split, the reference images, or none), before it runs.
try:
    st.caption(guard_plan.guard_plan(store, pid, method, config).words(t))
except UserError as exc:  # an evaluation set that cannot be read: the run will say so too
    st.caption("⚠️ " + md(err(exc)))
reference = projects.project_summary(store, pid)["reference"]
if reference:
    st.caption("🛡️ " + t("tune_ref_on", n=reference["n_items"], name=md(reference["name"])))
else:
    st.caption("ℹ️ " + t("tune_ref_off"))
if guard_plan.offer_hint(store, pid, method, config):
    st.caption("💡 " + t("tune_hint_tip"))

if start_slot.button(t("tune_start"), type="primary", key="tune_start", disabled=n_chosen == 0, icon="🚀"):
    try:
        run_id = runs.submit_run(store, pid, method, config, actor)
        st.session_state["watch_run"] = run_id
        start_slot.success(t("tune_submitted", run=run_id))
    except UserError as exc:
        start_slot.error(md(budget.explain(exc, t, err)))

project_runs = store.runs(pid)
if not project_runs:
    st.stop()


def draw_runs_table() -> None:
    """The table of all runs of this project, read fresh from the store (inside the live fragment,
    so statuses stay current while it polls), with each run's decision and the model in use now."""
    st.markdown(f"**{review.in_use_line(store, pid, t)}**")
    project = store.project(pid)
    st.dataframe(
        [
            {
                "#": r["id"],
                t("tune_col_status"): t(f"status_{runs.shown_status(r)}"),
                t("tune_col_decision"): t(f"decision_{runs.decision_state(r, project)}"),
                t("tune_col_strength"): review.strength_words(r, runs.run_metrics(store, r["id"]), t),
                t("tune_col_examples"): r["n_counterexamples"],
                t("tune_col_device"): r["device"] or "",
                t("tune_col_started"): display.local_time(r["started_at"], st.context.timezone),
                t("tune_col_by"): r["created_by"],
                t("tune_col_note"): r["error"] or "",
            }
            for r in store.runs(pid)
        ],
        hide_index=True,
    )


ids = [r["id"] for r in project_runs]
active = [r["id"] for r in project_runs if r["status"] in ACTIVE_RUN_STATES]
default_watch = st.session_state.get("watch_run")
if default_watch not in ids:
    default_watch = active[-1] if active else ids[0]
watch = live_slot.selectbox(
    t("tune_watch"),
    ids,
    index=ids.index(default_watch),
    format_func=lambda i: t("tune_watch_item", run=i),
    key=f"tune_watch_{len(ids)}",
)
st.session_state["watch_run"] = watch


LIVE_PHASES = ("queued", "preparing", "choosing", "tuning", "cancelling")  # core.app.runs.run_progress


def progress_words(p: dict) -> str:
    """The progress bar's line: what the repair is doing now, with a time left only where it is measured."""
    phase, last, a = p["phase"], p["last"], p["auto"]
    if phase in ("queued", "preparing", "cancelling"):
        return t(f"tune_phase_{phase}")
    if phase == "choosing":
        text = t("tune_auto_progress", strength=display.number(a["strength"]), candidate=a.get("candidate", "?"),
                 candidates=a.get("candidates", "?"), fold=a.get("fold", "?"), folds=a.get("folds", "?"),
                 done=a["done"], total=a["total"])  # fmt: skip
        return text + (" · " + t("tune_auto_eta", eta=display.duration(a["eta_s"])) if a.get("eta_s") else "")
    if last is None:
        return t("tune_progress_none")
    counts = {"step": last["step"], "max": last.get("max_steps") or "?", "fixed": last.get("fixed") or 0,
              "total": last.get("total", 0)}  # fmt: skip
    if phase != "tuning":
        return t("tune_progress_ended", **counts)
    if p["eta_s"] is None:
        return t("tune_progress_measuring", **counts)
    return t("tune_progress", eta=display.duration(p["eta_s"]), **counts)


def live_panel(run_id: int, was_active: bool) -> None:
    """The runs table and the live view of one run; reruns on its own every second while any run
    of the project is queued or running."""
    p = runs.run_progress(store, run_id)
    run, phase = p["run"], p["phase"]
    status = run["status"]
    state = t(f"phase_{phase}") if phase in LIVE_PHASES else t(f"status_{status}")
    st.markdown(f"**{t('tune_watch_item', run=run_id)}** — {state}")
    device = run["device"] or (p["last"] or {}).get("device")
    if device:
        st.caption(t("tune_device", device=device))
    st.progress(p["fraction"], text=progress_words(p))
    if p["undone"]:
        st.caption(t("tune_undone", n=p["undone"]))
    if p["history"]:
        st.plotly_chart(charts.live_curves(p["history"], t), key=f"live_{run_id}")
    if status in ACTIVE_RUN_STATES and phase != "cancelling":
        st.button(
            t("tune_cancel"),
            key=f"cancel_{run_id}",
            on_click=runs.cancel_run,
            args=(store, run_id, actor),
            disabled=not actor.can("curator"),
        )
    if was_active and not runs.active_runs(store, pid):
        st.rerun()  # every run has ended: refresh the whole page once and stop polling
    if status == "done":
        st.success(t("tune_done", reason=runs.stop_words(run, t)))
        st.page_link("views/review.py", label=t("tune_to_review"), icon="➡️")
        # Review's strength slider: its values are computed now, while the result is read here, so the first
        # move of the slider does not wait for a task worker to start (nothing is done if they are on disk).
        interpolated_runs.prefetch(store, run_id, actor)
    elif status in ENDED_WITHOUT_RESULT:
        st.warning(t(f"tune_ended_{status}", error=md(run["error"] or "")))
    st.subheader(t("tune_runs"))
    draw_runs_table()


is_active = bool(active)
with live_slot:
    st.fragment(live_panel, run_every=1.0 if is_active else None)(watch, is_active)
