"""Head explorer: the spectrum of one head, each PC's images, texts and class structure, and the head in words."""

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.builds import page_cache, sample_note
from dashboard.state import head_map, head_texts, head_weights, plain, pole_labels, probe
from residual_core.analysis.geometry import MAP_METHODS
from residual_core.engine.models import ModelLoadError
from residual_core.engine.units import head_label
from residual_core.explain.scorecard import PURITY_K  # the pole images shown: the ones a label is scored on

HISTOGRAM_SAMPLE = 50_000  # coefficients drawn per histogram at most

cache = page_cache("Head explorer")
ss = st.session_state
c1, c2, c3 = st.columns(3)
c1.selectbox("Layer", range(cache.n_layers), key="layer", format_func=lambda l: f"L{l}")
c2.selectbox("Head", range(cache.n_heads), key="head", format_func=lambda h: f"H{h}")
c3.selectbox("Principal component", range(cache.n_pcs), key="pc", format_func=lambda k: f"PC{k + 1}")
unit = cache.head_index(ss.layer, ss.head)
label = head_label(ss.layer, ss.head)
pc = f"PC{ss.pc + 1}"


def strip(rows: np.ndarray, texts: list[str], title: str, read) -> None:
    """A pole at a glance: the label read from its images, the images (upscaled as pixels), the label's evidence in
    one line, and the text-space reading (its nearest texts) beside it."""
    label, doubt = read
    st.markdown(f"**{title}** · {plain(label.text) if not label.abstains else 'no clear label'}")
    st.image(np.concatenate(list(cache.thumbs[rows]), axis=1), width="stretch",
             caption=plain(f"{label.evidence()} · nearest texts: {'; '.join(texts[:3])}"))
    if doubt:  # the demo world's ground truth says the label is wrong: say so beside it
        st.warning(plain(f"{title}: the label {doubt} (the world's ground truth; see the Scorecard)."))


def pole_maps(layer: int, head: int, k: int) -> None:
    """Each pole image with its map of PC k of this head over it (red: the patches that push the coefficient up)."""
    from residual_core.data.datasets import load_dataset
    from residual_core.data.sources import DatasetUnavailableError, ImageReadError
    from residual_core.engine.tokens import overlay

    spec = cache.manifest["spec"]
    rows = np.concatenate([cache.pole_top[unit, k][:PURITY_K], cache.pole_bottom[unit, k][:PURITY_K]])
    try:
        source = load_dataset(spec["dataset"], spec["split"])
        images = [source.image(int(cache.positions[r])) for r in rows]
    except (DatasetUnavailableError, ImageReadError, ValueError) as err:
        st.info(plain(f"The dataset's images cannot be opened here ({err})."))
        return
    result = probe(cache, images)
    drawn = [overlay(result.inputs[i], result.where(i, cache, [(layer, head)], "pc", k)[0]) for i in range(len(rows))]
    for name, part in (("+ pole", drawn[:PURITY_K]), ("− pole", drawn[PURITY_K:])):
        st.image(np.concatenate(part, axis=1), width="stretch",
                 caption=f"PC{k + 1} {name}: where it comes from (red raises the coefficient, blue lowers it)")


# above the fold at 1280×720 and 1920×1080: the spectrum beside both poles' images and nearest texts
left, right = st.columns([2, 3])
fig = figures.spectrum(np.asarray(cache.head_eigenvalues[unit]), f"Spectrum of {label}")
fig.update_layout(height=330)
left.plotly_chart(fig, config=figures.PNG_CONFIG, theme=None)
with right:
    reads = pole_labels(cache, unit, ss.pc)
    strip(cache.pole_top[unit, ss.pc][:PURITY_K], [cache.texts[i] for i in cache.text_pos_idx[unit, ss.pc]],
          f"{pc} + pole", reads[0])
    strip(cache.pole_bottom[unit, ss.pc][:PURITY_K], [cache.texts[i] for i in cache.text_neg_idx[unit, ss.pc]],
          f"{pc} − pole", reads[1])
    here = (str(cache.path), unit, ss.pc)
    if st.button(f"Where {pc} looks in these images", key="pole_maps_button",
                 help="runs the model once on the 16 images shown (nothing is stored for the whole dataset)"):
        ss.pole_maps = here
    if ss.get("pole_maps") == here:
        pole_maps(ss.layer, ss.head, ss.pc)

texts, histogram = st.columns([2, 3])
with texts:
    st.subheader(f"Nearest texts of {label} {pc}")
    pos = pd.DataFrame({"+ pole": [cache.texts[i] for i in cache.text_pos_idx[unit, ss.pc]],
                        "cos": np.round(cache.text_pos_score[unit, ss.pc], 3)})
    neg = pd.DataFrame({"− pole": [cache.texts[i] for i in cache.text_neg_idx[unit, ss.pc]],
                        "cos": np.round(cache.text_neg_score[unit, ss.pc], 3)})
    st.dataframe(pos, hide_index=True)
    st.dataframe(neg, hide_index=True)
drawn = cache.sample(HISTOGRAM_SAMPLE)  # a browser draws 1 M values slowly; a stated stride beyond the limit
histogram.plotly_chart(figures.coefficient_histogram(drawn.scores(ss.layer, ss.head)[ss.pc], drawn.labels,
                                                     cache.classnames, f"{label} {pc} coefficients by class"),
                       config=figures.PNG_CONFIG, theme=None)
if drawn is not cache:
    histogram.caption(f"Drawn from a sample ({sample_note(cache, drawn)}).")

st.subheader(f"{label} in words")
words, weights = st.columns(2)
try:
    reading = head_texts(str(cache.path))[unit]
except ValueError as err:  # a cache without a text bank
    words.info(plain(err))
    reading = None
if reading is not None:
    words.markdown("**From the data** (TextSpan on this cache's PCA: the texts that explain the head's variance, "
                   "in the order picked)")
    words.dataframe(pd.DataFrame({"text": [cache.texts[i] for i in reading.texts],
                                  "explains": [f"{v:.0%}" for v in reading.explained],
                                  "together": [f"{v:.0%}" for v in reading.cumulative]}), hide_index=True)
    spec = cache.manifest["spec"]
    try:
        from residual_core.explain.weights_reading import agreement

        direct = head_weights(str(cache.path), spec["model"], bool(spec.get("random_weights")), int(spec.get("seed", 0)))
        read = direct[unit]
        power = read.singular ** 2 / max(float((read.singular ** 2).sum()), 1e-300)
        weights.markdown("**From the weights alone** (what the head can write, strongest direction first; no image)")
        # lines that wrap, not table cells that cut the texts off at 1280 px
        weights.markdown("\n".join(f"- **{k + 1}** ({power[k]:.0%}) **+** {plain(' · '.join(cache.texts[i] for i in plus))}"
                                   f" **−** {plain(' · '.join(cache.texts[i] for i in minus))}"
                                   for k, (plus, minus) in enumerate(read.texts)))
        agree = agreement(read.directions, read.singular, cache.head_components[unit], cache.head_eigenvalues[unit])
        weights.caption(f"Agreement of the data's PCs with the weights' directions (weighted spectral cosine, 90 % of "
                        f"each spectrum): {agree:.2f}. 1: the images use what the weights favour; 0: orthogonal.")
    except (ModelLoadError, ValueError) as err:  # weights not on this machine
        weights.info(plain(f"The weights' reading needs the model: {err}"))

method = st.radio("2-D map of the head's contributions", list(MAP_METHODS), horizontal=True, key="map_method",
                  captions=list(MAP_METHODS.values()))
rows, xy, axes = head_map(str(cache.path), unit, method)
sampled = f" (a seeded sample of {len(rows):,} of {cache.n_images:,} images)" if len(rows) < cache.n_images else ""
chart, preview = st.columns([3, 1])
event = chart.plotly_chart(figures.class_scatter(xy, cache.labels[rows], cache.classnames, f"{label}: {method}{sampled}",
                                                 axes, rows), key="map2d", on_select="rerun",
                           selection_mode=("points", "box", "lasso"), config=figures.PNG_CONFIG, theme=None)
points = event.selection.points if event and event.selection else []
picked = [int(p["customdata"]) for p in points if "customdata" in p][:12]
with preview:
    if not picked:
        st.caption("Click a point (or draw a lasso) to see its image here.")
    elif len(picked) == 1:
        row = picked[0]
        st.image(cache.thumbs[row], width=192,
                 caption=plain(f"{cache.image_ids[row]}: {cache.classnames[cache.labels[row]]}, "
                               f"{pc} = {float(cache.head_scores[unit][ss.pc, row]):.3f}"))
    else:
        st.markdown(f"**{len(points)} selected** (showing {len(picked)})")
        st.image(np.concatenate(list(cache.thumbs[picked[:6]]), axis=1), width="stretch")
        if len(picked) > 6:
            st.image(np.concatenate(list(cache.thumbs[picked[6:12]]), axis=1), width="stretch")
