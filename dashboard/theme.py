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
