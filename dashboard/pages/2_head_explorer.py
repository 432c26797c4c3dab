"""Head explorer: the spectrum of one head, and each PC's texts, images and class structure."""

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.sidebar import page_cache
from dashboard.state import embedding_2d
from residual_core.units import head_label

cache = page_cache("Head explorer")
ss = st.session_state
c1, c2, c3 = st.columns(3)
c1.selectbox("Layer", range(cache.n_layers), key="layer", format_func=lambda l: f"L{l}")
c2.selectbox("Head", range(cache.n_heads), key="head", format_func=lambda h: f"H{h}")
c3.selectbox("Principal component", range(cache.n_pcs), key="pc", format_func=lambda k: f"PC{k + 1}")
unit = cache.head_index(ss.layer, ss.head)
label = head_label(ss.layer, ss.head)
left, right = st.columns([3, 2])
left.plotly_chart(figures.spectrum(np.asarray(cache.head_eigenvalues[unit]), f"Spectrum of {label}"),
                  config=figures.PNG_CONFIG)
with right:
    st.subheader(f"Nearest texts of {label} PC{ss.pc + 1}")
    pos = pd.DataFrame({"+ pole": [cache.texts[i] for i in cache.text_pos_idx[unit, ss.pc]],
                        "cos": np.round(cache.text_pos_score[unit, ss.pc], 3)})
    neg = pd.DataFrame({"− pole": [cache.texts[i] for i in cache.text_neg_idx[unit, ss.pc]],
                        "cos": np.round(cache.text_neg_score[unit, ss.pc], 3)})
    st.dataframe(pos, hide_index=True)
    st.dataframe(neg, hide_index=True)


def strip(rows: np.ndarray, title: str) -> None:
    st.markdown(f"**{title}**")
    cols = st.columns(len(rows))
    for col, row in zip(cols, rows):
        col.image(cache.thumbs[row], caption=cache.classnames[cache.labels[row]], width="stretch")


strip(cache.pole_top[unit, ss.pc][:12], f"Images with the highest PC{ss.pc + 1} coefficient (+ pole)")
strip(cache.pole_bottom[unit, ss.pc][:12], f"Images with the lowest PC{ss.pc + 1} coefficient (− pole)")
scores = cache.scores(ss.layer, ss.head)  # [n_pcs, n_images]
st.plotly_chart(figures.coefficient_histogram(scores[ss.pc], cache.labels, cache.classnames,
                                              f"{label} PC{ss.pc + 1} coefficients by class"), config=figures.PNG_CONFIG)
method = st.radio("2-D map of the head's contributions", ["PCA (PC1 vs PC2)", "UMAP"], horizontal=True)
xy, axes = embedding_2d(str(cache.path), unit, method)
event = st.plotly_chart(figures.class_scatter(xy, cache.labels, cache.classnames, f"{label}: {method}", axes),
                        key="map2d", on_select="rerun", selection_mode=("points", "box", "lasso"),
                        config=figures.PNG_CONFIG)
points = event.selection.points if event and event.selection else []
if points:
    rows = [int(p["customdata"]) for p in points if "customdata" in p][:24]
    st.markdown(f"**{len(points)} selected** (showing {len(rows)})")
    cols = st.columns(min(len(rows), 12) or 1)
    for i, row in enumerate(rows):
        cols[i % len(cols)].image(cache.thumbs[row], caption=cache.classnames[cache.labels[row]])
