"""The bias-repair workbench: ``streamlit run app.py``.

This entry script sets up the sidebar (language, the user's name, the current project) and
registers the five pages with ``st.navigation``. The pages are in ``views/`` (widgets only; they
call ``core.*``), not ``pages/``: Streamlit runs a ``pages/`` folder beside the entry script as an
old-style multipage app until ``st.navigation`` first runs, so after a server start a typed or
reloaded page URL would have run the page file without this script.
Anything that must survive a refresh lives in the store; the session keeps only view choices.
"""

import streamlit as st

from core.app import projects, runs
from core.app.i18n import LANGUAGES, translator

st.set_page_config(page_title="Bias repair workbench", page_icon="🛠️", layout="wide")

store = projects.get_store()
runs.resume_queued(store)  # queued repairs continue after a server restart

# Language and project survive a refresh through the URL; the user's name through the session.
if "lang" not in st.session_state:
    q = st.query_params.get("lang", "en")
    st.session_state["lang"] = q if q in LANGUAGES else "en"
if "pending_project" in st.session_state:  # a page opened or created a project last run
    st.session_state["project_id"] = st.session_state.pop("pending_project")
if "project_id" not in st.session_state:
    q = st.query_params.get("project")
    known = {p["id"] for p in store.projects()}
    st.session_state["project_id"] = (
        int(q) if q and q.isdigit() and int(q) in known else projects.latest_project_id(store)
    )

t = translator(st.session_state["lang"])

with st.sidebar:
    st.radio(
        t("sidebar_language"),
        list(LANGUAGES),
        format_func=LANGUAGES.get,
        key="lang",
        horizontal=True,
    )
    t = translator(st.session_state["lang"])
    st.query_params["lang"] = st.session_state["lang"]
    st.text_input(t("sidebar_your_name"), value="curator", key="actor", help=t("sidebar_your_name_help"))
    all_projects = store.projects()
    if all_projects:
        ids = [p["id"] for p in all_projects]
        names = {p["id"]: p["name"] for p in all_projects}
        if st.session_state["project_id"] not in ids:
            st.session_state["project_id"] = ids[0]
        st.selectbox(
            t("sidebar_project"),
            ids,
            format_func=lambda i: t("sidebar_project_item", name=names[i], id=i),
            key="project_id",
        )
        st.query_params["project"] = str(st.session_state["project_id"])
    else:
        st.caption(t("sidebar_no_project"))

flash = st.session_state.pop("flash", None)  # a message from the run before an st.rerun()
if flash:
    getattr(st, flash[0])(flash[1])

model_page = st.Page("views/model.py", title=t("nav_model"), icon="🧠", url_path="model")


def _start() -> None:
    """The bare address opens the Model page under its own URL. Streamlit serves the default page at
    "/" whatever its url_path, so a default Model page made "/model" a page that "does not exist"
    when typed or reloaded; this hidden start page is the default instead. The query string
    (language, project) goes along."""
    st.switch_page(model_page, query_params=st.query_params.to_dict())


pages = [
    st.Page(_start, title=t("nav_model"), url_path="start", default=True, visibility="hidden"),
    model_page,
    st.Page("views/counterexamples.py", title=t("nav_counterexamples"), icon="🏷️", url_path="counterexamples"),
    st.Page("views/tune.py", title=t("nav_tune"), icon="🎚️", url_path="tune"),
    st.Page("views/review.py", title=t("nav_review"), icon="⚖️", url_path="review"),
    st.Page("views/history.py", title=t("nav_history"), icon="📜", url_path="history"),
]
st.navigation(pages).run()
