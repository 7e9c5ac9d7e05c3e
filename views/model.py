"""Step 1, Model: open the demo or upload a model and an evaluation set; see where it is biased."""

import streamlit as st

from core.app import budget, charts, evaluation, naming, projects, suspected_groups, uploads
from core.app.i18n import error_translator, translator
from core.app.safe_text import md
from core.errors import UserError
from serving import upload_guard
from views import uploader

t = translator(st.session_state.get("lang", "en"))
err = error_translator(st.session_state.get("lang", "en"))
store = projects.get_store()
pid = st.session_state.get("project_id")
actor = st.session_state["user"]  # the signed-in person (app.py); core checks their role


def _parse_numbers(text: str, kind=float) -> list:
    try:
        return [kind(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise UserError(t("model_err_numbers", text=text)) from None


SUSPECTS_SHOWN = 6  # suspected groups shown before "show all"
STRIP_PX = 56


def _name_group(group_id: int, widget: str) -> None:
    try:
        done = naming.name_group(store, pid, group_id, st.session_state.get(widget, ""), actor)
    except UserError as exc:
        st.session_state["flash"] = ("error", t("suspects_name_failed", error=md(err(exc))))
        return
    shown = {k: md(v) if isinstance(v, str) else v for k, v in done.items()}
    st.session_state["flash"] = ("success", t("suspects_named_done", **shown))


def _suspected_group(g: dict) -> None:
    """One suspected group: a strip of its images, its numbers, a plain sentence, a name field."""
    with st.container(border=True, key=f"suspect_{g['id']}"):
        st.markdown(t("suspects_group_title", label=md(g["label_name"]), rank=g["rank"], n=g["size"]))
        st.image([evaluation.thumbnail(f, STRIP_PX) for f in g["files"]], width=STRIP_PX)
        c1, c2, c3 = st.columns(3)
        c1.metric(
            t("suspects_group_accuracy"),
            f"{100 * g['accuracy']:.0f}%",
            help=t("suspects_interval", low=round(100 * g["accuracy_low"]), high=round(100 * g["accuracy_high"])),
        )
        c2.metric(t("suspects_class_accuracy", label=md(g["label_name"])), f"{100 * g['class_accuracy']:.0f}%")
        c3.metric(t("suspects_size"), g["size"])
        st.write(
            t(
                "suspects_sentence",
                acc=round(100 * g["accuracy"]),
                n=g["size"],
                label=md(g["label_name"]),
                high=round(100 * g["accuracy_high"]),
                best=round(100 * g["reference_accuracy"]),
                cls=round(100 * g["class_accuracy"]),
            )
        )
        if g["named"]:
            st.success(t("suspects_named_as", name=md(g["named"])), icon="🏷️")
            return
        a, b = st.columns([3, 1], vertical_alignment="bottom")
        widget = f"suspect_name_{g['id']}"
        a.text_input(t("suspects_name_label"), key=widget, placeholder=t("suspects_name_placeholder"))
        b.button(
            t("suspects_name_button"), key=f"suspect_apply_{g['id']}", on_click=_name_group, args=(g["id"], widget)
        )


def _switch_to(project_id: int, message: str) -> None:
    st.session_state["pending_project"] = project_id
    st.session_state["flash"] = ("success", message)
    st.rerun()


# long function: the demo button and both upload forms, one layout read top to bottom
def open_section(compact: bool) -> None:
    """Open the demo or upload a model: in full on a first visit, one compact row once a project is open (the
    finding and the heat map are the page's first screen then)."""
    left, right = st.columns([1, 3] if compact else [1, 2], vertical_alignment="top")
    with left:
        if not compact:
            st.subheader(t("model_demo_header"))
            st.caption(t("model_demo_caption"))
        if st.button(t("model_open_demo"), type="secondary" if compact else "primary", key="open_demo", icon="▶️"):
            with st.spinner(t("model_demo_building")):
                demo_id = projects.open_demo(store, actor)
            _switch_to(demo_id, t("model_demo_ready"))

    with right:
        if uploader.refused(actor, t):
            return
        with st.expander(t("model_upload_header"), expanded=pid is None):
            tab_zip, tab_weights = st.tabs([t("model_tab_bundle"), t("model_tab_weights")])
            with tab_zip:
                st.caption(t("model_bundle_help"))
                bundle_file = uploader.file_uploader(t("model_bundle_label"), "up_bundle", "model", ["zip"], t)
                # A refused file is let go (upload_guard.forget): the button drawn with it may be pressed once more.
                loaded = st.button(t("model_load_bundle"), key="load_bundle", disabled=bundle_file is None)
                if loaded and bundle_file is not None:
                    try:
                        new_id = uploads.upload_model_zip(store, bundle_file.getvalue(), bundle_file.name, actor)
                        _switch_to(new_id, t("model_loaded", name=md(bundle_file.name)))
                    except UserError as exc:
                        upload_guard.forget("up_bundle", bundle_file)  # a refused file is not kept in memory
                        st.error(t("model_upload_failed", error=md(budget.explain(exc, t, err))))
            with tab_weights:
                st.caption(t("model_weights_help"))
                weights_file = uploader.file_uploader(
                    t("model_weights_label"), "up_weights", "model", ["safetensors", "pt", "pth"], t
                )
                if weights_file is not None and st.session_state.get("w_arch_for") != weights_file.file_id:
                    # Start the form on the architecture the file's keys match (read without loading it).
                    st.session_state["w_arch_for"] = weights_file.file_id
                    guess = uploads.guess_weights_architecture(weights_file.getvalue(), weights_file.name)
                    if guess:
                        st.session_state["w_arch"] = guess
                        st.session_state["w_arch_guess"] = guess
                if weights_file is not None and st.session_state.get("w_arch_guess"):
                    st.caption(t("model_arch_guessed", architecture=md(st.session_state["w_arch_guess"])))
                with st.form("weights_form"):
                    arch = st.selectbox(t("model_architecture"), evaluation.architecture_names(), key="w_arch")
                    classes = st.text_area(t("model_class_names"), key="w_classes", help=t("model_class_names_help"))
                    size = st.text_input(t("model_input_size"), "3 224 224", key="w_size")
                    mean = st.text_input(t("model_mean"), "0.485 0.456 0.406", key="w_mean")
                    std = st.text_input(t("model_std"), "0.229 0.224 0.225", key="w_std")
                    submitted = st.form_submit_button(t("model_load_weights"))
                if submitted:
                    try:
                        if weights_file is None:
                            raise UserError(t("model_err_no_weights"))
                        names = [c.strip() for c in classes.replace(",", "\n").splitlines() if c.strip()]
                        new_id = uploads.upload_model_weights(
                            store,
                            weights_file.getvalue(),
                            weights_file.name,
                            arch,
                            names,
                            _parse_numbers(size, int),
                            _parse_numbers(mean),
                            _parse_numbers(std),
                            actor,
                        )
                        _switch_to(new_id, t("model_loaded", name=md(weights_file.name)))
                    except UserError as exc:
                        st.error(t("model_upload_failed", error=md(budget.explain(exc, t, err))))


st.title(t("model_title"))
if pid is None:
    st.write(t("model_intro"))
    open_section(compact=False)
    st.info(t("model_start_hint"))
    st.stop()
open_section(compact=True)

summary = projects.project_summary(store, pid)
model = summary["active_model"]


def upload_eval() -> None:
    """The evaluation zip's uploader and its button: the set replaces the project's, and the model is evaluated."""
    eval_file = uploader.file_uploader(t("model_eval_label"), "up_eval", "eval_zip", ["zip"], t)
    if st.button(t("model_load_eval"), key="load_eval", disabled=eval_file is None) and eval_file is not None:
        try:
            with st.spinner(t("model_evaluating")):
                uploads.upload_eval_zip(store, pid, eval_file, eval_file.name, actor)
            st.session_state["flash"] = ("success", t("model_eval_loaded", name=md(eval_file.name)))
            st.rerun()
        except UserError as exc:
            upload_guard.forget("up_eval", eval_file)
            st.error(t("model_upload_failed", error=md(budget.explain(exc, t, err))))


def upload_reference() -> None:
    """The reference zip's uploader and its button."""
    ref_file = uploader.file_uploader(t("model_ref_label"), "up_ref", "images_zip", ["zip"], t)
    if st.button(t("model_load_ref"), key="load_ref", disabled=ref_file is None) and ref_file is not None:
        try:
            uploads.upload_reference_zip(store, pid, ref_file, ref_file.name, actor)
            st.session_state["flash"] = ("success", t("model_ref_loaded", name=md(ref_file.name)))
            st.rerun()
        except UserError as exc:
            upload_guard.forget("up_ref", ref_file)
            st.error(t("model_upload_failed", error=md(budget.explain(exc, t, err))))


def project_details() -> None:
    """The project's model, its fingerprints, and its evaluation and reference images (to replace them)."""
    st.divider()
    st.subheader(t("model_current", name=md(summary["project"]["name"])))
    if model:
        kind = t("model_kind_repaired") if model["kind"] == "repaired" else t("model_kind_original")
        st.write(
            t(
                "model_info",
                kind=kind,
                arch=md(model["meta"]["architecture"]),
                n=len(model["meta"]["class_names"]),
                classes=md(", ".join(model["meta"]["class_names"])),
            )
        )
        with st.expander(t("model_fingerprints")):
            for name, digest in model["sha256"].items():
                st.code(f"{name}  SHA-256 {digest}", language=None)

    with st.expander(t("model_eval_upload_header"), expanded=summary["eval"] is None):
        st.caption(t("model_eval_help"))
        if not uploader.refused(actor, t):
            upload_eval()

    ref = summary["reference"]
    with st.expander(t("model_ref_header"), expanded=False):
        st.caption(t("model_ref_help"))
        if ref:
            st.write(t("model_ref_current", name=md(ref["name"]), n=ref["n_items"]))
        else:
            st.write(t("model_ref_none"))
        if not uploader.refused(actor, t):
            upload_reference()


if summary["eval"] is None:
    project_details()
    st.info(t("model_need_eval"))
    st.stop()

try:
    with st.spinner(t("model_evaluating")):
        metrics = evaluation.evaluate_active(store, pid)
except UserError as exc:
    st.error(t("model_upload_failed", error=md(budget.explain(exc, t, err))))
    st.stop()

st.subheader(t("model_bias_header"))
f = evaluation.finding(metrics)
if f:
    st.container(key="model_finding").warning(
        t(
            "model_finding",
            attribute=md(f["attribute"]),
            label=md(f["label"]),
            acc=f["accuracy_pct"],
            other=f["other_pct"],
            n=f["count"],
        ),
        icon="🔎",
    )
st.container(key="model_heatmap").plotly_chart(charts.accuracy_heatmap(metrics, t), key="heatmap")
# Under the heat map, so that the finding and the heat map are on the first screen at 1280×720.
st.caption(t("model_eval_on", name=md(summary["eval"]["name"]), n=sum(g["count"] for g in metrics["groups"])))
c1, c2, c3, c4 = st.columns(4)
c1.metric(t("metric_accuracy"), f"{100 * metrics['accuracy']:.1f}%", help=t("metric_accuracy_help"))
wg = metrics["worst_group_accuracy"]
c2.metric(t("metric_worst_group"), "–" if wg is None else f"{100 * wg:.1f}%", help=t("metric_worst_group_help"))
gap = metrics["bias_gap"]
c3.metric(t("metric_bias_gap"), "–" if gap is None else f"{100 * gap:.1f}", help=t("metric_bias_gap_help"))
smallest = min((g["count"] for g in metrics["groups"]), default=0)
c4.metric(t("metric_smallest_group"), smallest, help=t("metric_smallest_group_help"))
st.caption(t("model_min_group_rule", min_group=metrics["min_group_count"]))

st.plotly_chart(charts.group_bars(metrics, t), key="bars")
with st.expander(t("model_group_table")):
    table = evaluation.groups_table(metrics).rename(
        columns={
            "label": t("chart_label"),
            "attribute": t("chart_attribute"),
            "accuracy": t("metric_accuracy"),
            "count": t("table_count"),
            "correct": t("table_correct"),
            "ci_low": t("table_ci_low"),
            "ci_high": t("table_ci_high"),
        }
    )
    st.dataframe(table, hide_index=True)
project_details()

# Suspected groups (docs/DISCOVERY.md): found from the model's own features, so they need no attribute column.
has_attributes = suspected_groups.has_attributes(store, pid)
named = suspected_groups.named_groups(store, pid)
st.subheader(t("suspects_header"))
if not has_attributes:
    st.info(t("suspects_no_attributes"), icon="🧭")
with st.expander(t("suspects_expander"), expanded=not has_attributes or bool(named)):
    st.caption(t("suspects_explain"))
    groups = suspected_groups.project_groups(store, pid, actor, compute=False)
    if groups is None and (not has_attributes or named or st.session_state.get("suspects_look")):
        try:
            with st.spinner(t("suspects_finding")):
                groups = suspected_groups.project_groups(store, pid, actor)
        except UserError as exc:
            st.error(t("suspects_failed", error=err(exc)))
    if groups is None:
        st.button(t("suspects_look"), key="suspects_look", icon="🔍")
    elif not groups:
        st.success(t("suspects_none"))
    else:
        st.caption(t("suspects_count", n=len(groups)))
        show_all = len(groups) > SUSPECTS_SHOWN and st.toggle(t("suspects_show_all", n=len(groups)), key="suspects_all")
        for g in groups if show_all else groups[:SUSPECTS_SHOWN]:
            _suspected_group(g)

st.page_link("views/counterexamples.py", label=t("model_next"), icon="➡️")
