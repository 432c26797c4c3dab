"""Alignment: train ResiDual λ (or a baseline) on cached coefficients, compare methods, inspect λ (SPEC §9–§12)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.state import current_spec, find_cache, get_cache, lookup_cache
from residual_core.read.ablation import AblationMask
from residual_core.analysis.align import METHODS, align
from residual_core.analysis.align_results import (head_lambda_path, lambda_scales, result_tag, save_result, saved_head_lambdas,
                                         saved_results)
from residual_core.build.pipeline import precompute
from residual_core.engine.units import head_label

st.title("Alignment")
ss = st.session_state
st.caption("ResiDual learns one λ per head principal component with cross-entropy on the zero-shot classifier; "
           "trained on the train split, stopped early on val, reported on test. Runs on cached coefficients: "
           "seconds, not hours.")
base = replace(current_spec(), basis_from=None)
train_spec = replace(base, split="train")
train_path = find_cache(train_spec)
others = {s: replace(base, split=s, basis_from=train_path) for s in ("val", "test")} if train_path else {}
paths = {"train": train_path} | {s: find_cache(spec) for s, spec in others.items()}
missing = [s for s in ("train", "val", "test") if not paths.get(s)]
if missing:
    st.info(f"Needs the {', '.join(missing)} cache(s) of this model and dataset (val and test in the train "
            "split's PCA basis, so that one λ means the same PC everywhere).")
    if st.button("Build them", type="primary"):
        bar = st.progress(0.0)
        for split in ("train", "val", "test"):
            spec = train_spec if split == "train" else replace(base, split=split, basis_from=str(precompute(train_spec)))
            precompute(spec, progress=lambda stage, done, total, s=split: bar.progress(
                min(done / max(total, 1), 1.0), text=f"{s} · {stage}: {done}/{total}"))
        lookup_cache.clear()
        st.rerun()
    st.stop()

train, val, test = (get_cache(paths[s]) for s in ("train", "val", "test"))
train_dir = Path(paths["train"])
st.caption(f"train {train.n_images} · val {val.n_images} · test {test.n_images} images · "
           f"{train.n_layers}×{train.n_heads} heads, {train.n_pcs} PCs each")

with st.form("train_form"):
    c1, c2, c3, c4 = st.columns([1.6, 0.9, 1, 1.3])  # "Reference compat" whole at 1280 px
    method = c1.selectbox("Method", METHODS, index=METHODS.index("fine"),
                          help="coarse: one λ per head · fine: λ per PC up to 90 % variance (ResiDual*) · full: heads "
                               "and MLPs · linear / spectral: adapters on the output · zeroshot: no training")
    epochs = c2.number_input("Max epochs", 1, 30, 30)
    identity = c3.checkbox("Identity start", help="λ = 1 with means, emb and MLPs added back: training starts from "
                                                   "the model (the paper starts at λ ~ N(1, 1))")
    compat = c4.checkbox("Reference compat", help="reproduce the reference code's square-basis behaviour")
    go = st.form_submit_button("Train", type="primary")
if go:
    bar = st.progress(0.0, text="preparing …")
    result = align(train, val, test, method, epochs=int(epochs), identity_start=identity, reference_compat=compat,
                   progress=lambda e, n, acc: bar.progress(e / n, text=f"epoch {e}/{n} · val accuracy {acc:.2%}"))
    tag = result_tag(method, compat, identity)
    save_result(train_dir, result, tag, {"model": ss.model, "dataset": ss.dataset, "limit": ss.limit,
                                         "epochs": int(epochs), "seed": 42, "reference_compat": compat,
                                         "identity_start": identity, "n_images": {"train": train.n_images,
                                                                                  "val": val.n_images,
                                                                                  "test": test.n_images}})
    bar.progress(1.0, text=f"{method}: test accuracy {result.test_acc:.2%} (zero-shot {result.zeroshot_test_acc:.2%}; "
                           f"its terms at λ = 1, untrained: {result.identity_test_acc:.2%}) in {result.seconds:.1f} s")

results = saved_results(train_dir)
if not results:
    st.info("No method trained on these caches yet: pick one above and press Train.")
    st.stop()
table = pd.DataFrame([{"method": r["tag"].removeprefix("align_"), "parameters": r["n_params"],
                       "test at λ = 1": r.get("identity_test_acc", np.nan),  # reports before it was recorded lack it
                       "val accuracy": r["val_acc"], "test accuracy": r["test_acc"],
                       "Δ vs zero-shot (pp)": 100 * (r["test_acc"] - r["zeroshot_test_acc"]), "best epoch": r["best_epoch"],
                       "seconds": round(r["seconds"], 1)} for r in results])
st.subheader("Results")
st.dataframe(table.style.format({"test at λ = 1": "{:.2%}", "val accuracy": "{:.2%}", "test accuracy": "{:.2%}",
                                 "Δ vs zero-shot (pp)": "{:+.2f}", "seconds": "{:.1f}"}, na_rep="—"),
             hide_index=True)
# coarse and fine keep only the heads (the paper's setting): below zero-shot is where they start, which the page says
heads_only = [r for r in results if r["method"] in ("coarse", "fine") and not r["settings"].get("identity_start")
              and "identity_test_acc" in r and r["test_acc"] < r["zeroshot_test_acc"]]
if heads_only:
    names = " and ".join(dict.fromkeys(r["tag"].removeprefix("align_") for r in heads_only))
    starts = ", ".join(f"{r['identity_test_acc']:.1%} → {r['test_acc']:.1%}" for r in heads_only)
    keeps = "keep" if " and " in names else "keeps"
    st.caption(f"{names} {keeps} only the heads, as in the paper: the emb and MLP terms, which the zero-shot "
               f"{heads_only[0]['zeroshot_test_acc']:.1%} includes, are dropped. Test accuracy at λ = 1, untrained → "
               f"trained: {starts}. Identity start adds the dropped terms back (not in the paper).")
st.download_button("Results (CSV)", table.to_csv(index=False), "alignment.csv", "text/csv")

with_lambda = [r["tag"] for r in results if head_lambda_path(train_dir, r["tag"]).is_file()]  # no loads per rerun
if not with_lambda:
    st.stop()
st.subheader("Learned λ")
tag = st.selectbox("Trained method", with_lambda, format_func=lambda t: t.removeprefix("align_"))
lam = saved_head_lambdas(train_dir, tag)  # [U, k], NaN where pruned
shape = (train.n_layers, train.n_heads)
spread = np.nanmean(np.abs(lam - 1), axis=1).reshape(shape)
event = st.plotly_chart(figures.heads_heatmap(np.nan_to_num(spread), "mean |λ − 1| per head (click to pick)",
                                              "|λ − 1|", selected=(ss.layer, ss.head)),
                        key="align_heads", on_select="rerun", selection_mode="points", config=figures.PNG_CONFIG,
                        theme=None)
cell = figures.picked(event)
if cell:
    ss.layer, ss.head = cell[:2]
u = train.head_index(ss.layer, ss.head)
st.plotly_chart(figures.lambda_spectrum(lam[u], np.asarray(train.head_eigenvalues[u]),
                                        f"{head_label(ss.layer, ss.head)}: λ per principal component"),
                config=figures.PNG_CONFIG, theme=None)
b1, b2 = st.columns(2)
if b1.button(f"Open L{ss.layer}H{ss.head} in the head explorer"):
    st.switch_page("dashboard/pages/2_head_explorer.py")


def apply_to_lab(lam: np.ndarray, report: dict) -> None:
    # a callback: it runs before the sidebar's widgets, which may then show the new split
    ss.basis_from, ss.split = str(train_dir), "test"
    ss.mask = AblationMask(scales=lambda_scales(lam, train.n_heads), mode="mean")
    ss.lambda_source = {"method": report["tag"].removeprefix("align_"), "n_params": report["n_params"],
                        "test_acc": report["test_acc"], "scales": ss.mask.scales}
    for key in [k for k in ss if str(k).startswith("lab_")]:
        del ss[key]
    ss._goto_lab = True


b2.button("Apply to the ablation lab", type="primary", on_click=apply_to_lab,
          args=(lam, next(r for r in results if r["tag"] == tag)),
          help="the lab shows the test split in the train basis with every PC rescaled by its λ (pruned PCs "
               "off); it keeps each head's mean, emb and MLPs, i.e. the identity-start model")
if ss.pop("_goto_lab", False):
    st.switch_page("dashboard/pages/4_ablation_lab.py")
