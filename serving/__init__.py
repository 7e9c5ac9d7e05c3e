"""What the workbench adds to the Streamlit server itself, outside any page: the guard on Streamlit's upload
endpoint (:mod:`serving.upload_guard`). May import streamlit and core.app; never torch (tests/test_layering.py)."""
