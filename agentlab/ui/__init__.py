"""agentlab ui: a Streamlit web view of every run folder, the pipeline builder (Base / Manual / History) and the
models check.

``app.py`` is the Streamlit script; ``pages`` draws the pages; the logic they call is plain functions the tests use
directly: ``runs`` (the run folders), ``views`` (each command's tables and series), ``builder`` (a pipeline from
form values) and ``jobs`` (runs started through the CLI). Importing this package imports no Streamlit.
"""

from pathlib import Path

APP = Path(__file__).with_name("app.py")

__all__ = ["APP"]
