"""Step 2, Counterexamples: find images the model gets wrong and label them. Every click is saved.

Several curators may label at once: each save says which label version this page showed, and a
label someone changed since is not overwritten; the page shows who changed it and asks (keep theirs
or overwrite). A fragment polls the store's label change count and redraws the page when someone
else labels.
"""

import streamlit as st

from core import settings
from core.app import budget, display, evaluation, pool, projects, similar, uploads
from core.app.i18n import error_translator, translator
from core.app.safe_text import md
from core.app.store import LabelConflict
from core.errors import UserError
from serving import upload_guard
from views import uploader

PAGE_SIZE = 18
COLUMNS = 6
TILE_PX = 112
TARGET_PX = 80
# The label bar (the image the keys act on, the label buttons, the bulk bar) stays in view while the
# grid scrolls under it (sticky on the wrapper Streamlit puts around a keyed container, which is as
# tall as the container itself); the image the keys act on is outlined on the grid too.
STYLE = """<style>
[data-testid="stLayoutWrapper"]:has(> .st-key-ce_labelbar){position:sticky;top:3.75rem;z-index:20}
.st-key-ce_labelbar{background:#fff;box-shadow:0 2px 6px rgba(0,0,0,.08)}
.st-key-ce_tile_focus{outline:3px solid #6a3d9a;outline-offset:-1px;background:#f3eef9}
.st-key-ce_labelbar button{min-height:2rem;padding:0.1rem 0.55rem}
.st-key-bulk_apply{flex-shrink:0}
[class*="st-key-ce_tile_"]{padding:0.4rem;gap:0.2rem}
[class*="st-key-ce_tile_"] [data-testid="stCaptionContainer"]{font-size:0.8rem;line-height:1.25}
[class*="st-key-ce_tile_"] button{min-height:1.7rem;padding:0 0.35rem}
[class*="st-key-focus_"] button,[class*="st-key-like_"] button{padding:0 0.2rem;min-width:0}
[class*="st-key-ce_tile_"] [data-testid="stCheckbox"] label{gap:0;margin-right:0.1rem}
</style>"""

t = translator(st.session_state.get("lang", "en"))
err = error_translator(st.session_state.get("lang", "en"))
store = projects.get_store()
pid = st.session_state.get("project_id")
actor = st.session_state["user"]  # the signed-in person (app.py); core checks their role

st.title(t("ce_title"))
st.html(STYLE)
if pid is None or not projects.project_summary(store, pid)["active_model"]:
    st.info(t("need_model"))
    st.page_link("views/model.py", label=t("nav_model"), icon="🧠")
    st.stop()

summary = projects.project_summary(store, pid)
class_names = summary["class_names"]
st.caption(t("ce_intro"))  # small type: the label bar and the first row of the gallery stay on the first screen


# How often the page looks for other curators' labels, in seconds ($BIASREPAIR_LABEL_REFRESH; 0: never).
try:
    REFRESH_SECONDS = settings.LABEL_REFRESH.get()
except UserError as exc:  # a bad value is said on the page, which keeps the default meanwhile
    st.error(md(err(exc)))
    REFRESH_SECONDS = settings.LABEL_REFRESH.default


def _seen(key: str) -> int:
    """The label version of ``key`` this page last drew (0: unlabelled)."""
    return st.session_state.get("label_seen", {}).get(key, 0)


def _conflict(key: str, mine: str | None, exc: LabelConflict) -> None:
    st.session_state.get("my_labels", {}).pop(key, None)  # the conflict box tells this page already
    st.session_state.setdefault("label_conflicts", {})[key] = {
        "mine": mine,
        "theirs": exc.current,
        "who": exc.changed_by,
        "when": exc.changed_at,
        "version": exc.version,
    }


def _save(key: str, label: str | None, version: int) -> None:
    """Save ``label`` (None: remove it) over label version ``version``; a conflict is kept to ask about."""
    try:
        if label is None:
            pool.remove_label(store, pid, key, actor, expected_version=version)
        else:
            pool.set_label(store, pid, key, label, actor, expected_version=version)
    except LabelConflict as exc:
        _conflict(key, label, exc)
        return
    except UserError as exc:
        st.session_state["flash"] = ("error", md(err(exc)))
        return
    # The labels this page set, so that it can tell its curator when another one overwrites them.
    mine = st.session_state.setdefault("my_labels", {})
    if label is None:
        mine.pop(key, None)
    else:
        mine[key] = label


def _label(key: str, label: str) -> None:
    _save(key, label, _seen(key))


def _on_relabel(key: str, widget: str) -> None:
    _label(key, st.session_state[widget])


def _label_selected() -> None:
    keys = [k.removeprefix("sel_") for k, v in st.session_state.items() if k.startswith("sel_") and v]
    label = st.session_state.get("bulk_label")
    if not keys or not label:
        return
    before = len(st.session_state.get("label_conflicts", {}))
    for k in keys:
        _save(k, label, _seen(k))
    if len(st.session_state.get("label_conflicts", {})) > before or "flash" in st.session_state:
        return
    for k in keys:
        st.session_state[f"sel_{k}"] = False
    st.session_state["flash"] = ("success", t("ce_bulk_done", n=len(keys), label=md(label)))


def add_images() -> None:
    """A pool zip, or single images, added to the project's candidates."""
    pool_file = uploader.file_uploader(t("ce_pool_label"), "up_pool", "images_zip", ["zip"], t, help=t("ce_pool_help"))
    # A refused file is let go (upload_guard.forget): the button drawn with it may still be pressed once.
    if st.button(t("ce_load_pool"), key="load_pool", disabled=pool_file is None) and pool_file is not None:
        try:
            uploads.upload_pool_zip(store, pid, pool_file, pool_file.name, actor)
            st.session_state["flash"] = ("success", t("ce_pool_loaded", name=md(pool_file.name)))
            st.rerun()
        except UserError as exc:
            upload_guard.forget("up_pool", pool_file)  # a refused file is not kept in memory
            st.error(t("upload_failed", error=md(budget.explain(exc, t, err))))
    singles = uploader.file_uploader(
        t("ce_single_label"), "up_single", "image", ["png", "jpg", "jpeg"], t, accept_multiple_files=True
    )
    single_attr = st.text_input(t("ce_single_attribute"), key="single_attr", help=t("ce_single_attribute_help"))
    if st.button(t("ce_add_single"), key="add_single", disabled=not singles) and singles:
        try:
            n = uploads.upload_single_images(store, pid, [(f.name, f.getvalue()) for f in singles], single_attr, actor)
            st.session_state["flash"] = ("success", t("ce_single_added", n=n))
            st.rerun()
        except UserError as exc:
            upload_guard.forget("up_single", *singles)
            st.error(t("upload_failed", error=md(budget.explain(exc, t, err))))


with st.expander(t("ce_add_images")):
    if not uploader.refused(actor, t):
        add_images()

changes_now = store.label_change_count(pid)
with st.spinner(t("ce_ranking")):
    cands = pool.candidates(store, pid)
# What this page shows now: the versions its saves are checked against.
st.session_state["label_seen"] = {c["key"]: c["version"] for c in cands}


@st.fragment(run_every=REFRESH_SECONDS or None)
def _watch_labels() -> None:
    """Redraw the page when the project's labels changed since it was drawn (another curator)."""
    if store.label_change_count(pid) != changes_now:
        st.rerun(scope="app")


_watch_labels()
chosen = pool.chosen_set(store, pid)
chosen_by_key = {c["key"]: c for c in chosen}


def _overwritten_notices() -> list[dict]:
    """The labels this page set that another curator has since changed or removed, each noticed once."""
    notices = st.session_state.setdefault("label_notices", [])
    mine = st.session_state.get("my_labels", {})
    for key, label in list(mine.items()):
        now = chosen_by_key.get(key)
        if now is not None and (now["label"] == label or now["by"] == actor):
            continue
        del mine[key]
        who = now["by"] if now is not None else pool.last_label_change_by(store, pid, key)
        notices.append({"key": key, "mine": label, "theirs": now["label"] if now else None, "who": who})
    return notices


notices = _overwritten_notices()
if notices:
    with st.container(border=True, key="label_overwritten"):
        files = {c["key"]: c["file"] for c in cands}
        for n in notices:
            pic, words = st.columns([1, 8], vertical_alignment="center")
            if n["key"] in files:
                pic.image(evaluation.thumbnail(files[n["key"]], 64))
            words.warning(
                t(
                    "ce_overwritten" if n["theirs"] else "ce_overwritten_removed",
                    who=md(n["who"] or "?"),
                    mine=md(n["mine"]),
                    theirs=md(n["theirs"] or ""),
                ),
                icon="👥",
            )
        if st.button(t("ce_overwritten_ok"), key="overwritten_ok"):
            st.session_state["label_notices"] = []
            st.rerun()
conflicts = st.session_state.get("label_conflicts", {})
if conflicts:
    with st.container(border=True, key="label_conflict"):
        files = {c["key"]: c["file"] for c in cands}
        for key, c in conflicts.items():
            pic, words = st.columns([1, 8], vertical_alignment="center")
            if key in files:
                pic.image(evaluation.thumbnail(files[key], 64))
            words.warning(
                t(
                    "ce_conflict" if c["theirs"] else "ce_conflict_removed",
                    who=md(c["who"]),
                    theirs=md(c["theirs"] or ""),
                    when=display.local_time(c["when"], st.context.timezone),
                    mine=md(c["mine"] or t("ce_conflict_no_label")),
                ),
                icon="👥",
            )
        k1, k2 = st.columns(2)
        if k1.button(t("ce_conflict_keep"), key="conflict_keep", icon="🤝"):
            st.session_state["label_conflicts"] = {}
            st.rerun()
        if k2.button(t("ce_conflict_overwrite"), key="conflict_overwrite", icon="✍️"):
            st.session_state["label_conflicts"] = {}
            for key, c in conflicts.items():
                _save(key, c["mine"], c["version"])
            st.rerun()
if not cands:
    st.info(t("ce_no_pool"))
    st.stop()

gallery, chosen_col = st.columns([3, 1], gap="large")

with chosen_col:
    st.markdown(f"##### {t('ce_chosen_title', n=len(chosen))}", help=t("ce_chosen_shared"))
    if chosen:  # the next step at the top of the column, not under a long list
        st.page_link("views/tune.py", label=t("ce_next"), icon="➡️")
    per_class, per_attr = pool.chosen_counts(store, pid)
    if chosen:
        st.caption(t("ce_per_class"))
        st.dataframe(
            [{t("chart_label"): k, t("table_count"): v} for k, v in sorted(per_class.items())],
            hide_index=True,
            key="per_class",
        )
        st.caption(t("ce_per_attribute"))
        st.dataframe(
            [{t("chart_attribute"): k, t("table_count"): v} for k, v in sorted(per_attr.items())],
            hide_index=True,
            key="per_attr",
        )
        for c in chosen:
            with st.container(border=True):
                a, b = st.columns([1, 2])
                a.image(evaluation.thumbnail(c["file"], 64))
                b.caption(f"{md(c['attribute'] or '—')} · {md(c['by'])}")
                widget = f"relabel_{c['key']}_{c['label']}"
                st.selectbox(
                    t("ce_relabel"),
                    class_names,
                    index=class_names.index(c["label"]),
                    key=widget,
                    on_change=_on_relabel,
                    args=(c["key"], widget),
                    label_visibility="collapsed",
                )
                st.button(  # under the thumbnail, full width: never clipped in the narrow column
                    t("ce_remove"),
                    key=f"rm_{c['key']}",
                    on_click=lambda k=c["key"]: _save(k, None, _seen(k)),
                    icon="🗑️",
                )
    else:
        st.info(t("ce_chosen_empty"))

with gallery:
    unlabelled = [c for c in cands if c["label"] is None]
    skipped = st.session_state.setdefault("skipped", [])
    queue = [c for c in unlabelled if c["key"] not in skipped] or unlabelled
    by_key = {c["key"]: c for c in cands}
    # The image the label buttons and digit keys act on: the one picked on the grid ("Label this"),
    # else the next unlabelled one. It is drawn in the label bar, which stays in view, and outlined
    # on the grid, so a key press never labels an image the user cannot see.
    target = by_key.get(st.session_state.get("ce_focus")) or (queue[0] if queue else None)

    def _label_target(key: str, label: str) -> None:
        _label(key, label)
        st.session_state.pop("ce_focus", None)

    def _focus(key: str) -> None:
        st.session_state["ce_focus"] = key

    def _more_like(key: str) -> None:
        st.session_state["ce_like"] = key

    def _skip(key: str) -> None:
        skipped.append(key)
        st.session_state.pop("ce_focus", None)

    with st.container(border=True, key="ce_labelbar"):
        if target is not None:
            q1, q2 = st.columns([1, 6], vertical_alignment="top")
            q1.image(evaluation.thumbnail(target["file"], TARGET_PX))
            facts = [t("ce_model_says", label=md(target["predicted"]), pct=round(100 * target["confidence"]))]
            if target["attribute"]:
                facts.append(t("ce_attribute_is", attribute=md(target["attribute"])))
            elif target["group_label"]:
                facts.append(t("ce_near_group", label=md(target["group_label"])))
            if target["label"]:
                facts.append(t("ce_labelled_as", label=md(target["label"])))
            q2.markdown(f"**{t('ce_quick_title')}** · " + " · ".join(facts), help=t("ce_quick_help"))
            with q2.container(horizontal=True, gap="small", key="ce_quick_buttons"):
                for i, name in enumerate(class_names):
                    st.button(
                        md(name),
                        key=f"quick_{i}",
                        on_click=_label_target,
                        args=(target["key"], name),
                        shortcut=str(i) if i < 10 else None,
                        type="primary" if name == target["label"] else "secondary",
                    )
                st.button(t("ce_skip"), key="quick_skip", on_click=_skip, args=(target["key"],), shortcut="s")
        n_selected = sum(1 for k, v in st.session_state.items() if k.startswith("sel_") and v)
        with st.container(horizontal=True, gap="small", vertical_alignment="center", key="ce_bulk_bar"):
            st.button(
                t("ce_bulk_apply", n=n_selected),
                key="bulk_apply",
                on_click=_label_selected,
                disabled=n_selected == 0,
                type="primary",
            )
            st.selectbox(t("ce_bulk_label"), class_names, key="bulk_label", label_visibility="collapsed", width=160)

    # The filter and the count on one row, so the first row of tiles is on the first screen at 1280×720.
    filter_col, note_col = st.columns(2, vertical_alignment="center")
    show = filter_col.segmented_control(
        t("ce_show"),
        ["all", "todo", "done"],
        format_func=lambda v: t(f"ce_show_{v}"),
        default="all",
        key="ce_filter",
        label_visibility="collapsed",
    )
    items = {"all": cands, "todo": unlabelled, "done": [c for c in cands if c["label"]]}[show or "all"]
    like = by_key.get(st.session_state.get("ce_like"))
    if like is not None:  # "More like this": the nearest pool images in the model's own feature space
        try:
            with st.spinner(t("ce_like_finding")):
                near = similar.more_like_this(store, pid, like["key"], actor)
        except UserError as exc:
            st.error(md(err(exc)))
            near = []
        items = [by_key[k] for k in near if k in by_key]
        note_col.caption(t("ce_like_note", n=len(items), label=md(like["predicted"])))
        note_col.button(
            t("ce_like_back"), key="ce_like_back", icon="↩️", on_click=lambda: st.session_state.pop("ce_like")
        )
    else:
        note_col.caption(t("ce_ranked_note", n=len(items)))
        if cands[0]["ranking"] == "discovery":
            note_col.caption(t("ce_ranked_by_discovery"))
    n_pages = max(1, (len(items) + PAGE_SIZE - 1) // PAGE_SIZE)

    page = st.session_state.get("ce_page", 1)
    page = min(page, n_pages)
    start = (page - 1) * PAGE_SIZE
    shown = items[start : start + PAGE_SIZE]
    for i, c in enumerate(shown):
        if i % COLUMNS == 0:  # one row of columns per row of tiles, so the rows line up
            cols = st.columns(COLUMNS, gap="small")
        focused = target is not None and c["key"] == target["key"]
        with cols[i % COLUMNS].container(border=True, key="ce_tile_focus" if focused else f"ce_tile_{i}"):
            st.image(evaluation.thumbnail(c["file"], TILE_PX), width="stretch")
            line = t("ce_tile_says", label=md(c["predicted"]), pct=round(100 * c["confidence"]))
            if c["attribute"] or c["group_label"]:
                line += f" · {md(c['attribute'] or c['group_label'])}"
            if c["label"]:
                line += "  \n" + t("ce_tile_is", label=md(c["label"]))
            st.caption(line)
            with st.container(horizontal=True, gap=None, vertical_alignment="center"):
                st.checkbox(t("ce_select"), key=f"sel_{c['key']}", label_visibility="collapsed", width="content")
                # Two icon buttons (with their words in the tooltip) beside the tick box, so a tile stays one
                # row of controls: label this one, and "More like this".
                st.button(
                    "",
                    key=f"focus_{c['key']}",
                    icon="🏷️",
                    on_click=_focus,
                    args=(c["key"],),
                    help=t("ce_focus") + ": " + t("ce_focus_help"),
                    disabled=focused,
                )
                st.button(
                    "",
                    key=f"like_{c['key']}",
                    icon="🔍",
                    on_click=_more_like,
                    args=(c["key"],),
                    help=t("ce_like_help"),
                )
    st.pagination(n_pages, default=page, key="ce_page")
