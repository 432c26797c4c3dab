"""Search: which heads carry a concept? Heads ranked by their share of variance along it (read from the cache's PCA,
no image pass), the PCs that carry it, the images those heads point most toward it, and one click to switch them off
in the ablation lab."""

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.builds import page_cache
from dashboard.state import concept_embedding, head_pole_words, plain
from residual_core.read.ablation import AblationMask
from residual_core.explain.describe import check_query, concept_noise, retrieve, search_heads
from residual_core.engine.models import ModelLoadError
from residual_core.engine.units import head_label

cache = page_cache("Search")
ss = st.session_state
spec = cache.manifest["spec"]
st.caption("A concept is a few words, or this dataset's classes together. Each head is scored by the share of its "
           "variance that lies along the concept (from the cache's PCA: no image is read again); the images are those "
           "where the top heads' combined contribution points most toward it.")
if "concept_text" not in ss:  # a link may carry a concept (?query=…): it fills the box; Search still runs it
    ss.concept_text = str(st.query_params.get("query", ""))[:300]
with st.form("concept_form"):
    c1, c2 = st.columns([5, 2], vertical_alignment="bottom")
    text = c1.text_input("A concept, in a few words", key="concept_text", placeholder="a red object", max_chars=300)
    classes = c2.checkbox("or its classes", key="concept_classes",
                          help="the zero-shot classifier's class embeddings as the concept: which heads carry the task")
    go = st.form_submit_button("Search", type="primary")
if go:  # the text tower runs here, on the press, never on a widget change
    try:
        if classes:
            found = ("this dataset's classes", np.asarray(cache.classifier, np.float64).T)
        else:
            query = check_query(text)
            found = (query, concept_embedding(spec["model"], bool(spec.get("random_weights")),
                                              int(spec.get("seed", 0)), (query,)))
        ss.concept = {"cache": str(cache.path), "label": found[0], "embeddings": found[1]}
    except (ValueError, ModelLoadError) as err:
        st.error(plain(err))
concept = ss.get("concept")
if not concept or concept["cache"] != str(cache.path):
    st.info("Type a concept (for example 'a red object', 'stripes', 'the number seven') and press Search.")
    st.stop()

ranked = search_heads(cache, concept["embeddings"])
noise = concept_noise(cache, concept["embeddings"])
if noise.at_noise:
    st.warning(plain(noise.words(concept["label"], head_label(ranked[0].layer, ranked[0].head))))
else:
    st.caption(f"The best head has {noise.best_share:.1%} of its variance along it; along a random direction of the "
               f"same rank the best head has {noise.random_median:.1%} ({noise.random_q99:.1%} at the 99th percentile).")
shares = np.zeros((cache.n_layers, cache.n_heads))
for row in ranked:
    shares[row.layer, row.head] = 100 * row.share
left, right = st.columns(2)
left.plotly_chart(figures.heads_heatmap(shares, "% of each head's variance along it",
                                        "% of variance", selected=(ranked[0].layer, ranked[0].head)),
                  config=figures.PNG_CONFIG, theme=None)
read_as = head_pole_words(str(cache.path))  # what the whole model reads in each head's PC1 poles' top images
right.dataframe(pd.DataFrame([{"head": head_label(r.layer, r.head), "share": f"{r.share:.0%}",
                               "variance along it": f"{r.strength:.3g}",
                               "PCs carrying it": ", ".join(f"PC{k + 1} {s:.0%}" for k, s in zip(r.pcs, r.pc_shares)),
                               "its PC1 reads as": read_as[r.layer][r.head]}
                              for r in ranked[:10]]), hide_index=True)
n_top = right.number_input("Top heads", 1, min(10, len(ranked)), min(3, len(ranked)), key="concept_top")
top = [(r.layer, r.head) for r in ranked[:n_top]]
rows = retrieve(cache, top, concept["embeddings"], top=12)
st.subheader(f"Images where {', '.join(head_label(*h) for h in top)} point most toward it")
st.image(np.concatenate(list(cache.thumbs[rows]), axis=1), width="stretch",
         caption=plain(", ".join(cache.classnames[cache.labels[r]] for r in rows)))


def switch_off() -> None:
    ss.mask = AblationMask(heads=frozenset(top), mode="mean")
    for key in [k for k in ss if str(k).startswith("lab_")]:
        del ss[key]
    ss._goto_lab = True


st.button(f"Switch these {len(top)} heads off in the ablation lab", on_click=switch_off, type="primary")
if ss.pop("_goto_lab", False):
    st.switch_page("dashboard/pages/4_ablation_lab.py")
