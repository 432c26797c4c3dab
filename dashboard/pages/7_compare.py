"""Compare: the same heads on other datasets (or another model of the same shape): spectral cosine, matched PCs."""

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.builds import page_cache
from dashboard.state import get_cache, get_offer
from residual_core.analysis.geometry import head_matched_pcs, head_spectral_cosine
from residual_core.engine.units import head_label

cache = page_cache("Compare")
ss = st.session_state
st.caption("Weighted spectral cosine between a head's principal subspace here and in another cache: 1 when the "
           "head spans the same directions with the same weights, 0 when the subspaces are orthogonal. "
           "PCA never sees labels: datasets that share their images (the demo world's factors) share their bases.")


shape = (cache.n_layers, cache.n_heads)
weights = str(cache.manifest.get("inputs", {}).get("weights", ""))[:12]


def label(row) -> str:
    # a cache built from another checkpoint under the same model name (e.g. an older demo model) says so
    other = f" · weights {row.weights[:8]}" if row.weights != weights else ""
    return f"{row.model} · {row.dataset} · {row.split} · {row.n_images}{other}"


candidates = [r for r in get_offer().built if r.shape == shape and r.path != str(cache.path)]
if not candidates:
    st.info("No other cache of a model with this shape yet. Build one from the sidebar (another dataset, "
            "e.g. mnist-offline or folder:/your/images), then come back.")
    st.stop()
# default: one cache per other dataset of the same model, then anything else
seen, default = set(), []
family = cache.manifest["spec"]["dataset"].split("/")[0]
for row in sorted(candidates, key=lambda r: (r.weights != weights, r.dataset.split("/")[0] == family,
                                            r.dataset)):
    if row.weights == weights and row.dataset not in seen and row.dataset != cache.manifest["spec"]["dataset"]:
        seen.add(row.dataset)
        default.append(row.path)
by_path = {r.path: r for r in candidates}
chosen = st.multiselect("Compare the active cache with", list(by_path), default=default[:6] or list(by_path)[:1],
                        format_func=lambda p: label(by_path[p]))
tau = st.select_slider("Each head's basis keeps the PCs up to this explained variance", [0.5, 0.8, 0.9, 0.95, 0.99],
                       value=0.9)
if not chosen:
    st.stop()


@st.cache_data(show_spinner="comparing head subspaces …", max_entries=64)
def cosines(a: str, b: str, tau: float) -> np.ndarray:
    return head_spectral_cosine(get_cache(a), get_cache(b), tau)


matrix = np.stack([cosines(str(cache.path), p, tau).ravel() for p in chosen])  # [n_others, n_heads]
names = [label(by_path[p]) for p in chosen]
event = st.plotly_chart(figures.compare_heatmap(matrix, names, cache.units, "Spectral cosine with the active cache"),
                        key="compare_map", on_select="rerun", selection_mode="points", config=figures.PNG_CONFIG,
                        theme=None)
cell = figures.picked(event)
if cell:
    ss.layer, ss.head, row = cell
    ss.compare_other = chosen[row]
table = pd.DataFrame(matrix.T, columns=names)
table.insert(0, "head", cache.units.head_labels())
st.download_button("Spectral cosines (CSV)", table.to_csv(index=False), "spectral_cosine.csv", "text/csv")

st.subheader("Matched principal components")
c1, c2, c3 = st.columns([3, 1, 1])
other_path = c1.selectbox("Other cache", chosen, format_func=lambda p: label(by_path[p]),
                          index=chosen.index(ss.compare_other) if ss.get("compare_other") in chosen else 0)
c2.selectbox("Layer", range(shape[0]), key="layer", format_func=lambda l: f"L{l}")
c3.selectbox("Head", range(shape[1]), key="head", format_func=lambda h: f"H{h}")
other = get_cache(other_path)
unit = cache.head_index(ss.layer, ss.head)
pairs = head_matched_pcs(cache, other, unit, tau)
st.caption(f"{head_label(ss.layer, ss.head)}: spectral cosine {matrix[chosen.index(other_path), unit]:.3f}; PCs matched "
           "greedily by |cos| weighted by both eigenvalues. A negative cosine flips the other side's poles.")


def texts(c, pc: int, flip: bool) -> str:
    idx = c.text_neg_idx[unit, pc] if flip else c.text_pos_idx[unit, pc]
    return " · ".join(c.texts[i] for i in idx[:3])


def strip(c, pc: int, flip: bool) -> np.ndarray:
    rows = (c.pole_bottom if flip else c.pole_top)[unit, pc][:6]
    return np.concatenate(list(c.thumbs[rows]), axis=1)


# a table, not a grid: the texts wrap instead of being cut at the column's edge (1280 px cut "there" off)
st.table(pd.DataFrame([{"PC here": f"PC{i + 1}", "nearest texts here": texts(cache, i, False), "cos": f"{cos:+.3f}",
                        "PC there": f"PC{j + 1}", "nearest texts there": texts(other, j, cos < 0)}
                       for i, j, cos, _ in pairs]).set_index("PC here"))
for i, j, cos, _ in pairs[:3]:
    left, right = st.columns(2)
    left.image(strip(cache, i, False), caption=f"here: PC{i + 1}, + pole", width="stretch")
    right.image(strip(other, j, cos < 0), caption=f"there: PC{j + 1}, {'−' if cos < 0 else '+'} pole "
                                                 f"(cos {cos:+.2f})", width="stretch")
