"""Specialisation: which heads carry the task? Scores on val, top-k accuracy curves on test (SPEC §8)."""

from dataclasses import replace

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.state import current_spec, find_cache, get_cache, get_offer, lookup_cache, plain
from residual_core.build.pipeline import precompute
from residual_core.analysis.specialize import jaccard_matrix, specialize, top_k
from residual_core.engine.units import head_label

st.title("Specialisation")
ss = st.session_state
st.caption("Heads are scored on the val split of the sidebar's dataset and evaluated on its test split, with the "
           "reference code's formulas (ResiDual experiment 3): S = supervised, U|T = corr_task, U = corr_full_out, "
           "random = torch.randn seeds 0–9.")
base = replace(current_spec(), basis_from=None)
specs = {split: replace(base, split=split) for split in ("val", "test")}
paths = {split: find_cache(spec) for split, spec in specs.items()}
missing = [split for split, path in paths.items() if path is None]
if missing:
    st.info(f"Needs the {' and '.join(missing)} cache(s) of this model and dataset.")
    if st.button("Build them", type="primary"):
        bar = st.progress(0.0)
        for split in missing:
            precompute(specs[split], progress=lambda stage, done, total, s=split: bar.progress(
                min(done / max(total, 1), 1.0), text=f"{s} · {stage}: {done}/{total}"))
        lookup_cache.clear()
        st.rerun()
    st.stop()


@st.cache_data(show_spinner="scoring heads …", max_entries=16)
def report_for(val_path: str, test_path: str) -> dict:
    return specialize(get_cache(val_path), get_cache(test_path))


report = report_for(paths["val"], paths["test"])
val = get_cache(paths["val"])
shape = (val.n_layers, val.n_heads)
method = st.radio("Score", ["S", "U|T", "U"], horizontal=True, key="spec_method",
                  help="S: zero-shot accuracy of the head alone. U|T: mean Pearson correlation between the head "
                       "and the sum of all heads, along an orthonormal basis of the class embeddings. U: the same "
                       "along a QR basis of the model's full outputs (the whole joint space).")
st.plotly_chart(figures.heads_heatmap(np.array(report["scores"][method]).reshape(shape), f"{method} score per head",
                                      method), config=figures.PNG_CONFIG, theme=None)
mode = st.radio("Every unit not kept", ["zero", "mean"], horizontal=True, key="spec_mode",
                help="zero: removed. mean: replaced by its mean over the test images. This applies to the other "
                     "heads, the MLPs and the embedding alike, as the reference's Residual.ablate does.")
ks = report["k"]
mean = np.array(report["curves"]["random"][mode]["mean"])
st.plotly_chart(figures.topk_curves(report, mode), config=figures.PNG_CONFIG, theme=None)
table = pd.DataFrame({"k": ks} | {m: report["curves"][m][mode] for m in ("S", "U|T", "U")} | {"random": mean})
st.download_button("Curves (CSV)", table.to_csv(index=False), "specialisation.csv", "text/csv")

st.subheader("Overlap of the selected heads across datasets")
n_total = shape[0] * shape[1]
st.caption(f"Top {top_k(n_total)} heads (5 %, at least 2) by S on each dataset's val split; Jaccard = shared / all.")
offered = get_offer().datasets
same_family = [d for d in offered if d.split("/")[0] == ss.dataset.split("/")[0]]
datasets = st.multiselect("Datasets", list(offered), key="spec_datasets",
                          default=same_family if len(same_family) > 1 else [ss.dataset])
val_specs = {d: replace(base, dataset=d, split="val") for d in datasets}
val_paths = {d: find_cache(spec) for d, spec in val_specs.items()}
absent = [d for d, path in val_paths.items() if path is None]
if absent:
    st.info(plain(f"{len(absent)} val cache(s) missing: {', '.join(absent)}."))
    if st.button("Build the missing val caches"):
        bar = st.progress(0.0)
        for i, d in enumerate(absent):
            precompute(val_specs[d], progress=lambda stage, done, total, d=d, i=i: bar.progress(
                min((i + done / max(total, 1)) / len(absent), 1.0), text=f"{d} · {stage}: {done}/{total}"))
        lookup_cache.clear()
        st.rerun()
present = [d for d in datasets if val_paths[d]]
if len(present) >= 2:
    overlap, sets = jaccard_matrix([get_cache(val_paths[d]) for d in present])
    st.plotly_chart(figures.jaccard_heatmap(overlap, present), config=figures.PNG_CONFIG, theme=None)
    st.dataframe(pd.DataFrame({"dataset": present, "top heads by S": [
        ", ".join(head_label(*divmod(int(u), shape[1])) for u in heads) for heads in sets]}), hide_index=True)
