"""Projector-friendly page styling: less blank header, type that reads from the back of a room, crisp thumbnails.

Our own constant CSS (no user text ever reaches it), injected once per run by app.py.
"""

import streamlit as st

CSS = """
<style>
/* the default layout spends ~100 px above the title; a talk needs that room for the figure */
.block-container, [data-testid="stMainBlockContainer"] {padding-top: 2.6rem !important; padding-bottom: 1.5rem !important;}
h1 {font-size: 2.05rem !important; padding: 0 0 0.3rem 0 !important;}
h2, h3 {padding-top: 0.4rem !important;}
/* thumbnails are 32-48 px: upscale them as blocks of pixels, not a blur */
[data-testid="stImage"] img, [data-testid="stImageContainer"] img {image-rendering: pixelated;}
/* captions and widget labels at projector size */
[data-testid="stCaptionContainer"], [data-testid="stWidgetLabel"] p {font-size: 0.95rem !important;}
/* a row of pills wraps instead of scrolling sideways */
[data-testid="stButtonGroup"] > div {flex-wrap: wrap !important; overflow-x: visible !important;}
</style>
"""


def apply() -> None:
    st.markdown(CSS, unsafe_allow_html=True)


PRESENTING = """
<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="stHeader"],
[data-testid="stToolbar"], [data-testid="stDecoration"] {display: none !important;}
.block-container, [data-testid="stMainBlockContainer"] {padding: 1rem 2.2rem 1rem 2.2rem !important;
  max-width: 100% !important;}
html, body, [data-testid="stAppViewContainer"] {font-size: 19px;}
.tour-title {font-size: 2.3rem; font-weight: 700; line-height: 1.15;}
.tour-count {font-size: 1.05rem; color: #555;}
[data-testid="stMetricValue"] {font-size: 3.4rem !important;}
[data-testid="stMetricLabel"] p {font-size: 1.3rem !important;}
[data-testid="stMetricDelta"] {font-size: 1.4rem !important;}
.stButton button p {font-size: 1.25rem;}
/* the clicker's extra keys (Page Up/Down, Space) live on buttons nobody needs to see */
.st-key-clicker_keys {position: absolute; left: -10000px; height: 0; overflow: hidden;}
</style>
"""


def presenting() -> None:
    """Full-screen slides: no sidebar or header, type sized for a room."""
    st.markdown(PRESENTING, unsafe_allow_html=True)
