"""ResiDual explorer: ``streamlit run app.py``. Shared sidebar + page router; no math here."""

import logging
import sys
from pathlib import Path

import streamlit as st

from dashboard import navigation, theme

# a local file, not an icon font: the favicon must load on a machine without internet
st.set_page_config(page_title="ResiDual explorer", page_icon=str(Path(__file__).parent / "assets" / "favicon.png"),
                   layout="wide")
theme.apply()
# The first visit after a server start imports torch and the model libraries and checks the cache (seconds): say so
# at once instead of a blank page. Later visits find the modules loaded and skip this line.
starting = st.empty()
if "dashboard.sidebar" not in sys.modules:
    starting.info("Opening the explorer: the first visit after the server starts loads the model libraries and "
                  "checks the cache, which takes several seconds …")

from dashboard.sidebar import sidebar  # noqa: E402  (after the line above: this import is the slow part)
from dashboard.state import configure_threads, init_state, note_session, plain, show_notices, write_url  # noqa: E402

configure_threads()  # once per server process
note_session()  # a closed tab's uploads are released seconds after it leaves (dashboard/janitor.py)


def guarded(step, *args) -> bool:
    """Run one part of the page; a failure is one plain line (details in the server log), never a traceback."""
    try:
        step(*args)
        return True
    except Exception as err:  # Streamlit's reruns and stops are BaseExceptions: they pass through
        logging.getLogger("residual").exception("page failed")
        st.error(plain(f"This view failed: {type(err).__name__}: {err}. Change the selection or rebuild the cache; "
                       "the details are in the server log."))
        return False


ready = guarded(init_state) and guarded(show_notices)
PAGES = [st.Page(spec.path, title=spec.title, icon=spec.icon, url_path=spec.url_path or None,
                 default=not spec.url_path) for spec in navigation.PAGES]
page = st.navigation(PAGES)
starting.empty()
presenting = page.url_path == "present"  # full-screen: no sidebar, and the link is the tour's, not a view's
if ready and (presenting or guarded(sidebar, page)) and guarded(page.run) and not presenting:
    guarded(write_url)
