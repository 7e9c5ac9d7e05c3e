"""The bias-repair engine: everything that computes. Importable and testable without Streamlit."""
