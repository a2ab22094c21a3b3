"""The Streamlit script of `agentlab ui` (``streamlit run app.py -- --runs DIR``): the navigation over the pages.

``--runs DIR`` sets the runs root for this process (``AGENTLAB_RUNS``), which the pages read and the runs they start
inherit.
"""

from __future__ import annotations

import argparse
import os
import sys

import streamlit as st

from agentlab.ui import pages, render


def _options(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runs")
    known, _ = parser.parse_known_args(argv)
    if known.runs:
        os.environ["AGENTLAB_RUNS"] = known.runs


_options(sys.argv[1:])
st.set_page_config(page_title="agentlab", page_icon=":material/science:", layout="wide")
render.PAGES.update({
    "runs": st.Page(pages.runs_page, title="Runs", icon=":material/folder_open:", default=True),
    "base": st.Page(pages.base_page, title="Base", icon=":material/play_arrow:", url_path="pipeline-base"),
    "manual": st.Page(pages.manual_page, title="Manual", icon=":material/build:", url_path="pipeline-manual"),
    "history": st.Page(pages.history_page, title="History", icon=":material/account_tree:",
                       url_path="pipeline-history"),
    "models": st.Page(pages.models_page, title="Models", icon=":material/memory:", url_path="models"),
})
st.navigation({"": [render.PAGES["runs"], render.PAGES["models"]],
               "Pipeline": [render.PAGES[k] for k in ("base", "manual", "history")]}).run()
