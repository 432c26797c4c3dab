"""Heads map: one metric over every (layer, head), plus the emb and MLP units; click a cell to open it."""

import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.builds import page_cache
from dashboard.state import head_pole_words, plain
from dashboard.numbers import metric_view
from residual_core.read.cache import HEAD_METRICS, head_metrics, other_metrics
from residual_core.engine.units import head_label

cache = page_cache("Heads map")
ss = st.session_state
st.caption(plain(f"{cache.manifest['spec']['model']} on {cache.manifest['spec']['dataset']} "
                 f"({cache.n_images:,} images, zero-shot accuracy {cache.baseline_accuracy():.1%}, "
                 f"decomposition rel. error {cache.manifest['max_rel_err']:.1e})"))
metrics = head_metrics(cache)
st.selectbox("Metric", list(HEAD_METRICS), key="metric", format_func=lambda m: HEAD_METRICS[m])
shown = metric_view(cache, ss.metric)
values, unit, blank_below = shown.values, shown.unit, shown.blank_below
if shown.note:
    st.caption(shown.note)
# each head's first PC, labelled by what the whole model reads in its poles' top images: on hover, in cells on request
words = [list(row) for row in head_pole_words(str(cache.path))]
in_cells = st.toggle("Show each head's label in its cell", key="words_in_cells",
                     help="what the whole model reads in the top 8 images of the head's first PC (its + pole; hover "
                          "for both poles); the Head explorer has every PC and the text-space readings")
fig = figures.heads_heatmap(values, HEAD_METRICS[ss.metric], unit, selected=(ss.layer, ss.head),
                            blank_below=blank_below, words=words, words_in_cells=in_cells)
event = st.plotly_chart(fig, key="heads_map_chart", on_select="rerun", selection_mode="points",
                        config=figures.PNG_CONFIG, theme=None)
cell = figures.picked(event)
if cell:
    ss.layer, ss.head = cell[:2]
    ss.pc = 0
    st.switch_page("dashboard/pages/2_head_explorer.py")
if ss.metric in ("contribution_norm", "cosine_to_output"):
    labels = cache.units.labels[:cache.units.first_head_row]  # emb, then the MLPs
    st.plotly_chart(figures.units_strip(other_metrics(cache)[ss.metric], labels, "emb and MLP units", unit),
                    config=figures.PNG_CONFIG, theme=None)
table = pd.DataFrame({name: v.ravel() for name, v in metrics.items()})
table.insert(0, "head", cache.units.head_labels())
cols = st.columns([2, 2, 3])
if cols[0].button(f"Open {head_label(ss.layer, ss.head)} in the explorer", help="or click a cell of the map"):
    st.switch_page("dashboard/pages/2_head_explorer.py")
cols[1].download_button("Table (CSV)", table.to_csv(index=False), "heads.csv", "text/csv")
with st.expander("All metrics as a table"):
    st.dataframe(table, hide_index=True)
