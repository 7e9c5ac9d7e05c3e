"""The bias-repair workbench: ``streamlit run app.py``.

This entry script signs the person in (core/app/accounts.py; views/signin.py draws the form), sets
up the sidebar (language, who is signed in, the current project) and registers the pages with
``st.navigation``; the Admin page only for admins. The pages are in ``views/`` (widgets only; they
call ``core.*``), not ``pages/``: Streamlit runs a ``pages/`` folder beside the entry script as an
old-style multipage app until ``st.navigation`` first runs, so after a server start a typed or
reloaded page URL would have run the page file without this script.
Anything that must survive a refresh lives in the store; the session keeps only view choices and
the session token, which never leaves the server (so a refresh asks for the password again).
Signed out, every page URL shows the sign-in form and, once signed in, the page that was asked for.
"""

import streamlit as st

from core.app import accounts, projects, sandboxes, server_start
from core.app.i18n import LANGUAGES, error_text, translator
from core.app.safe_text import md
from core.errors import UserError
from serving import upload_guard
from views.demo_sandbox import reset_button, reset_confirmation
from views.signin import sign_in_page

st.set_page_config(page_title="Bias repair workbench", page_icon="🛠️", layout="wide")

try:
    store = projects.get_store()
except UserError as exc:  # a store made by a newer version of the workbench: said, and left as it is
    st.error(md(error_text(exc, st.query_params.get("lang", "en"))))
    st.stop()
server_start.started(store)  # once per server: audit chain verified, queued repairs resumed, workers supervised
upload_guard.install(store)  # Streamlit's upload endpoint only for sessions that may upload
try:
    sandboxes.at_server_start(store)  # once: old demo sandboxes deleted, the demo built in the background
except UserError as exc:  # a bad demo setting (sandbox hours, prebuild): said on every page until fixed
    st.error(md(error_text(exc, st.query_params.get("lang", "en"))))
accounts.ensure_admin_from_env(store)  # first run: $BIASREPAIR_ADMIN_USER / $BIASREPAIR_ADMIN_PASSWORD

# Who is signed in: the token's session in the store decides (it may have expired or been ended).
user = accounts.user_for(store, st.session_state.get("auth_token"))
if user is None and st.session_state.pop("auth_token", None):
    st.session_state["flash"] = ("warning", "expired")
st.session_state["user"] = user

# Language and project survive a refresh through the URL.
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

# A meeting's 1280x720 screen: less empty space above each page's title and smaller titles, so that each
# page's essential part (docs/WORKBENCH.md) starts on the first screen.
st.html(
    "<style>[data-testid=stMainBlockContainer]{padding-top:2.5rem}"
    "[data-testid=stMainBlockContainer] h1{font-size:2rem;padding-top:0.25rem;padding-bottom:0.5rem}</style>"
)

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
    if user is not None:
        roles = ", ".join(t(f"role_{r}") for r in accounts.ROLES if r in user.roles)
        st.markdown(t("sidebar_demo_user") if user.demo else t("sidebar_signed_in", name=md(user), roles=roles))
        if st.button(t("sidebar_sign_out"), key="sign_out", icon="🚪"):
            accounts.sign_out(store, st.session_state.pop("auth_token", None))
            st.session_state["user"] = None
            st.rerun()
    if user is not None and user.demo:  # its own copy of the demo (a fresh one if it was cleaned up)
        try:
            st.session_state["project_id"] = projects.open_demo(store, user)
        except UserError as exc:
            st.error(md(error_text(exc, st.session_state["lang"])))
    # The project picked last in this session, kept apart from the picker's own state, which a page change
    # right after a language change can lose.
    kept = st.session_state.get("kept_project")
    all_projects = projects.visible_projects(store, user, st.session_state["project_id"], kept)
    if user is not None and all_projects:
        ids = [p["id"] for p in all_projects]
        names = {p["id"]: p["name"] for p in all_projects}
        if st.session_state["project_id"] not in ids:
            st.session_state["project_id"] = kept if kept in ids else ids[0]
        st.selectbox(
            t("sidebar_project"),
            ids,
            format_func=lambda i: t("sidebar_project_item", name=names[i], id=i),
            key="project_id",
        )
        st.query_params["project"] = str(st.session_state["project_id"])
        st.session_state["kept_project"] = st.session_state["project_id"]
    elif user is not None:
        st.caption(t("sidebar_no_project"))
    if user is not None and user.demo:
        reset_button(st.session_state["project_id"], t)

flash = st.session_state.pop("flash", None)  # a message from the run before an st.rerun()
if flash:
    getattr(st, flash[0])(t("signin_expired") if flash[1] == "expired" else flash[1])
if user is not None and user.demo:
    st.warning(t("demo_banner"), icon="🧪")
    reset_confirmation(store, user, st.session_state["project_id"], st.session_state["lang"], t)
if user is not None and user.can("admin") and (alarm := server_start.start_alarm(store, t)):
    st.error(alarm, icon="🚨")

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
if user is not None and user.can("admin"):
    pages.append(st.Page("views/admin.py", title=t("nav_admin"), icon="🔑", url_path="admin"))
if user is None:
    # Every page stays registered (hidden), so the address asked for is kept and shown after sign-in.
    st.navigation(pages, position="hidden")
    sign_in_page(store, st.session_state["lang"])
    st.stop()
st.navigation(pages).run()
