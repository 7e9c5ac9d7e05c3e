"""File uploaders only for people who may upload (core.app.uploads.may_upload: a curator, not the demo), each
stating the workbench's own limit for its kind of file; anyone else sees one line saying who may upload."""

import streamlit as st

from core.app import uploads
from core.app.accounts import User


def refused(user: User, t) -> bool:
    """For someone who may not upload, the line that says who may (drawn here; True: draw no uploader)."""
    key = uploads.no_upload_key(user)
    if key:
        st.caption("🔒 " + t(key))
    return key is not None


def file_uploader(label: str, key: str, kind: str, types: list[str], **options):
    """``st.file_uploader`` stating (and the browser enforcing) ``uploads.upload_limit_mb(kind)``."""
    return st.file_uploader(label, type=types, key=key, max_upload_size=uploads.upload_limit_mb(kind), **options)
