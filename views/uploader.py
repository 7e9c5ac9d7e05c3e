"""File uploaders only for people who may upload (core.app.uploads.may_upload: a curator, not the demo), each
stating the workbench's own limit for its kind of file; anyone else sees one line saying who may upload.

Streamlit's own line under an uploader ("1GB per file • ZIP") rounds the limit to one unit (600 MB shows
as 1GB) and is English only: it is hidden, and a caption in the page's language states the limit instead
(the browser still refuses a bigger file before sending it, from the uploader's ``max_upload_size``). Its
button's word ("Upload") is English only too: it is drawn in the page's language instead."""

import streamlit as st

from core.app import uploads
from core.app.accounts import User

# Streamlit's limit line hidden, its button's word replaced by ``word`` (a CSS string), for the uploader ``key``.
UPLOADER_STYLE = (
    "<style>.st-key-{key} [data-testid=stFileUploaderDropzoneInstructions]{{display:none}}"
    ".st-key-{key} [data-testid=stFileUploaderDropzone] button p{{font-size:0}}"
    ".st-key-{key} [data-testid=stFileUploaderDropzone] button p::after{{content:{word};font-size:0.875rem}}</style>"
)


def _css_string(text: str) -> str:
    """``text`` as a quoted CSS string (quotes and backslashes escaped, no line breaks)."""
    return '"' + " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"') + '"'


def refused(user: User, t) -> bool:
    """For someone who may not upload, the line that says who may (drawn here; True: draw no uploader)."""
    key = uploads.no_upload_key(user)
    if key:
        st.caption("🔒 " + t(key))
    return key is not None


def file_uploader(label: str, key: str, kind: str, types: list[str], t, **options):
    """``st.file_uploader`` enforcing ``uploads.upload_limit_mb(kind)``, with a caption stating it."""
    limit = uploads.upload_limit_mb(kind)
    st.html(UPLOADER_STYLE.format(key=key, word=_css_string(t("upload_button"))))
    picked = st.file_uploader(label, type=types, key=key, max_upload_size=limit, **options)
    st.caption(t("upload_limit", types=", ".join(x.upper() for x in types), mb=f"{limit:,}"))
    return picked
