"""Ablation lab: switch heads and PCs off (or rescale them) and watch dataset accuracy, live."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.builds import page_cache, sample_note
from dashboard.groups_view import choose_groups, group_metrics, shortcut_panel
from dashboard.numbers import accuracy_metric
from dashboard.state import PC_PILLS, plain, view_state, write_url
from residual_core.read.ablation import (AblationMask, confusion, evaluate_streamed, mask_in_words,
                                        per_class_accuracy)
from residual_core.read.cache import LIVE_IMAGES
from residual_core.read.live import LogitState
from residual_core.engine.units import head_label, heads_in_words, mlp_label

cache = page_cache("Ablation lab")
ss = st.session_state
HEADS = [cache.units.head_at(u) for u in range(cache.units.n_heads_total)]
N_PILLS = min(cache.n_pcs, PC_PILLS)
live = cache.sample(LIVE_IMAGES)
# every image up to the limit; beyond it a stated stride, exact on all by a click
DETAILS = ("flip gallery", "confusion matrix change") if len(cache.classnames) <= 60 else ("flip gallery",)


def head_name(lh: tuple[int, int]) -> str:
    return head_label(*lh)


if ss.get("_lab_cache") != str(cache.path):  # a new cache: fresh running logits for this session
    ss._lab_cache = str(cache.path)
    ss._logit_state = LogitState(live, AblationMask(mode=ss.mask.mode))
if "lab_heads" not in ss:  # first visit, or back from another page: the widgets follow the mask (and URL)
    ss.lab_heads = sorted(h for h in ss.mask.heads if h in HEADS)
if "lab_mode" not in ss:
    ss.lab_mode = ss.mask.mode
if "lab_mlps" not in ss:
    ss.lab_mlps = sorted(layer for layer in ss.mask.mlps if layer < cache.n_layers)
if "lab_embed" not in ss:
    ss.lab_embed = ss.mask.embed


def apply_preset() -> None:
    preset, k = ss.lab_preset, ss.lab_k
    score = cache.head_alone_acc
    if preset == "keep only the top-k heads by accuracy alone":
        keep = {HEADS[i] for i in np.argsort(-score, kind="stable")[:k]}
    elif preset == "keep only the late layers":
        keep = {lh for lh in HEADS if lh[0] >= cache.n_layers // 2}
    elif preset == "keep only the selected head":
        keep = {(ss.layer, ss.head)}
    else:
        keep = set(HEADS)
    ss.lab_heads = sorted(set(HEADS) - keep)
    if preset == "clear all ablations":
        ss.lab_mlps, ss.lab_embed = [], False
    ss.mask = replace(ss.mask, pcs=frozenset(), scales=())


def switch_off(switches: tuple) -> None:
    """A shortcut method's heads and PCs switched off, and nothing else."""
    ss.lab_heads = sorted(s for s in switches if s in HEADS)
    ss.lab_mlps, ss.lab_embed = [], False
    for key in [k for k in ss if str(k).startswith(("lab_pcs_", "lab_scale_"))]:
        del ss[key]  # the pills follow the new mask, not what they showed before
    pcs = frozenset(s for s in switches if len(s) == 3 and s[:2] in HEADS and s[2] < cache.n_pcs)
    ss.mask = replace(ss.mask, pcs=pcs, scales=())


with st.expander("Presets", expanded=ss.mask.is_empty):
    p1, p2, p3 = st.columns([3, 1, 1])
    p1.selectbox("Preset", ["keep only the top-k heads by accuracy alone", "keep only the late layers",
                            "keep only the selected head", "clear all ablations"], key="lab_preset")
    p2.number_input("k", 1, len(HEADS), min(5, len(HEADS)), key="lab_k")
    p3.button("Apply", on_click=apply_preset, type="primary")


source = ss.get("lambda_source")
if ss.mask.scales and source and source["scales"] == ss.mask.scales:
    st.caption(f"{len(ss.mask.scales):,} PCs are rescaled by λ: the learned λ of {source['method']} "
               f"({source['n_params']:,} trained numbers; a λ trained per head or per group applies to each of its PCs). "
               f"Alignment's test accuracy for it, {source['test_acc']:.1%}, keeps only the heads, as the paper does; "
               "the lab keeps each head's mean, the emb and the MLPs (the identity-start model), so its number differs. "
               "Presets → clear all ablations resets them.")
elif ss.mask.scales:
    st.caption(f"{len(ss.mask.scales)} PCs are rescaled by λ (set here or in the link); Presets → clear all ablations "
               "resets them.")


with st.expander("Groups and shortcuts", expanded=bool(ss.get("lab_find"))):
    groups_spec = choose_groups(cache)
    shortcut_panel(groups_spec, switch_off)


@st.fragment
def lab() -> None:
    controls, results = st.columns([2, 3])
    with controls:
        st.radio("Ablate by replacing with", ["mean", "zero"], key="lab_mode", horizontal=True,
                 help="mean: the unit's average over the dataset; zero: nothing")
        st.multiselect("Heads off", HEADS, key="lab_heads", format_func=head_name)
        off = set(ss.lab_heads)
        if off:  # the chips of a preset overflow their box: say it in one line, the shorter way round
            on = set(HEADS) - off
            words = (f"on: {heads_in_words(on, cache.n_layers, cache.n_heads)}" if len(on) < len(off)
                     else f"off: {heads_in_words(off, cache.n_layers, cache.n_heads)}")
            st.caption(f"{len(off)} of {len(HEADS)} heads off; {words}")
        elsewhere = sorted(p for p in ss.mask.pcs if p[:2] != (ss.layer, ss.head))
        if elsewhere:  # PCs of heads other than the one whose pills are shown: named, not hidden
            st.caption(plain(f"{len(elsewhere)} PCs off on other heads: "
                             + mask_in_words(AblationMask(pcs=frozenset(elsewhere)), most=8).removeprefix("PCs ")))
        u1, u2 = st.columns([3, 2])
        u1.multiselect("MLPs off", range(cache.n_layers), key="lab_mlps", format_func=mlp_label,
                       help="each MLP's direct contribution to the embedding, replaced like a head's")
        u2.checkbox("Embedding off", key="lab_embed", help="the class token and position embedding's direct part")
        c1, c2 = st.columns(2)
        c1.selectbox("Layer", range(cache.n_layers), key="layer", format_func=lambda l: f"L{l}")
        c2.selectbox("Head", range(cache.n_heads), key="head", format_func=lambda h: f"H{h}")
        here = (ss.layer, ss.head)
        current = sorted(p[2] for p in ss.mask.pcs if p[:2] == here and p[2] < N_PILLS)
        chosen = st.pills(f"PCs of {head_name(here)} switched off", list(range(N_PILLS)), selection_mode="multi",
                          default=current, format_func=lambda k: f"PC{k + 1}", key=f"lab_pcs_{here[0]}_{here[1]}")
        beyond = {p for p in ss.mask.pcs if p[:2] == here and p[2] >= N_PILLS}  # from a link: no pill, still off
        if beyond:
            st.caption(f"Also off (no pill beyond PC{N_PILLS}): "
                       + ", ".join(f"PC{k + 1}" for _, _, k in sorted(beyond)) + ". Presets → clear all resets them.")
        pc_for_scale = st.selectbox("Rescale a PC by λ", range(cache.n_pcs), key="pc",
                                    format_func=lambda k: f"{head_name(here)} PC{k + 1}")
        current_scale = float(ss.mask.scale_of(*here, pc_for_scale))  # learned λ can leave the default range
        scale = st.slider("λ", min(-2.0, current_scale), max(4.0, current_scale), current_scale, 0.1,
                          key=f"lab_scale_{here[0]}_{here[1]}_{pc_for_scale}")
    others = {p for p in ss.mask.pcs if p[:2] != here} | beyond
    mask = AblationMask(heads=frozenset(ss.lab_heads), pcs=frozenset(others | {(*here, k) for k in chosen or []}),
                        scales=ss.mask.scales, mlps=frozenset(ss.lab_mlps), embed=bool(ss.lab_embed),
                        mode=ss.lab_mode).with_scale(*here, pc_for_scale, scale)
    ss.mask = mask
    state: LogitState = ss._logit_state
    state.set_mask(mask)
    result = state.result()
    with results:
        if live is not cache:
            st.caption(f"Live numbers on a sample ({sample_note(cache, live)}); means are the whole dataset's.")
        m1, m2, m3 = st.columns(3)
        accuracy_metric(m1, "Accuracy", result.accuracy, result.delta)
        m2.metric("Unablated", f"{result.baseline_accuracy:.2%}")
        flipped = np.flatnonzero(result.predictions != live.baseline_predictions())
        m3.metric("Predictions changed", f"{len(flipped)}", f"of {live.n_images:,}", delta_color="off",
                  delta_arrow="off")
        if live is not cache:
            exact_on_all(mask)
        group_metrics(st, cache, LIVE_IMAGES, groups_spec, result.predictions)
        baseline = per_class_accuracy(live, live.baseline_predictions())
        st.altair_chart(figures.per_class_bars(cache.classnames, baseline, result.per_class_accuracy), theme=None,
                        width="stretch")
        state_json = json.dumps(view_state() | {"accuracy": result.accuracy, "images": live.n_images}, indent=1)
        d1, d2 = st.columns(2)
        d1.download_button("View state (JSON)", state_json, "residual_view.json", "application/json")
        per_class = pd.DataFrame({"class": cache.classnames, "unablated": baseline, "ablated": result.per_class_accuracy})
        d2.download_button("Per-class accuracy (CSV)", per_class.to_csv(index=False), "per_class.csv", "text/csv")
    # One detail view at a time, on request: drawing them on every toggle doubled a browser's work per click
    detail = st.segmented_control("Details", DETAILS, key="lab_detail",
                                  help="drawn again on every toggle while shown")
    if detail == DETAILS[0]:
        flip_gallery(flipped, result.predictions)
    elif detail == DETAILS[1]:
        change = confusion(live, result.predictions) - confusion(live, live.baseline_predictions())
        st.plotly_chart(figures.confusion_diff(change, cache.classnames), config=figures.PNG_CONFIG, theme=None)
    write_url()


def exact_on_all(mask: AblationMask) -> None:
    """The same mask on every image, streamed a chunk at a time (seconds at a million images), on a click."""
    done = ss.get("_lab_exact")
    if not (done and done[0] == (str(cache.path), mask)):
        slot = st.empty()  # the button gives way to its answer in the same run
        if not slot.button(f"Exact on all {cache.n_images:,} images", key="lab_exact"):
            return
        bar = slot.progress(0.0, text=f"{cache.n_images:,} images, a chunk at a time …")
        done = ss._lab_exact = ((str(cache.path), mask), evaluate_streamed(cache, mask, progress=bar.progress))
        slot.empty()
    summary = done[1]
    accuracy_metric(st, f"Accuracy on all {cache.n_images:,} images", summary.accuracy, summary.delta)


def flip_gallery(flipped: np.ndarray, predictions: np.ndarray) -> None:
    if len(flipped) == 0:
        st.caption("No prediction changed.")
        return
    old = live.baseline_predictions()[flipped]
    new = predictions[flipped]
    pairs = pd.Series(list(zip(old, new))).value_counts().head(6)
    for (a, b), count in pairs.items():
        rows = flipped[(old == a) & (new == b)][:10]
        fixed = int((live.labels[rows] == b).sum())
        images = "image" if count == 1 else "images"
        st.markdown(f"**{plain(cache.classnames[a])} → {plain(cache.classnames[b])}**: {count} {images} "
                    f"({fixed} of the {len(rows)} shown are now correct)")
        true = pd.Series([cache.classnames[live.labels[r]] for r in rows]).value_counts()
        # One strip per group: a single image element keeps a toggle's rerun light; 64 px a thumbnail fits a column.
        st.image(np.concatenate(list(live.thumbs[rows]), axis=1), width=64 * len(rows),
                 caption=plain("true class: " + ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in true.items())))


lab()
