"""Probe: decompose your own image (or one from the dataset) and see which heads and PCs drive it."""


import numpy as np
import pandas as pd
import streamlit as st

from dashboard import figures
from dashboard.builds import page_cache, sample_note
from dashboard.state import head_pole_words, image_key, plain, probe
from residual_core.read.ablation import AblationMask
from residual_core.data.datasets import load_dataset
from residual_core.data.sources import DatasetUnavailableError, ImageReadError
from residual_core.data.images import budget_text, open_uploads
from residual_core.engine.models import ModelLoadError
from residual_core.engine.tokens import rest_in_words, where_in_words
from residual_core.read.typicality import ALARM
from residual_core.read.probe import PERCENTILE_SAMPLE, counterfactual_probs
from residual_core.engine.units import head_label, pc_label

cache = page_cache("Probe")
ss = st.session_state
spec = cache.manifest["spec"]
upload_box, pick_box = st.columns([3, 1])  # side by side: the image and its map stay above the fold at 1280×720
uploads = upload_box.file_uploader("Upload images (PNG, JPEG, WebP, GIF, BMP, TIFF)", accept_multiple_files=True,
                                   type=["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"], key="uploads")
st.caption(budget_text())
batch = open_uploads([(upload.name, upload.getvalue()) for upload in uploads or []])
for message in batch.errors:
    st.error(plain(message))
for name, loaded in zip(batch.names, batch.images):
    for note in loaded.notes:
        st.caption(plain(f"{name}: {note}"))
images, names = [loaded.image for loaded in batch.images], list(batch.names)
if not images:
    row = pick_box.number_input(f"…or image 0–{cache.n_images - 1} of the cache", 0, cache.n_images - 1, 0,
                                key="probe_row")
    try:
        source = load_dataset(spec["dataset"], spec["split"])
        images, names = [source.image(int(cache.positions[row]))], [cache.image_ids[row]]
    except (DatasetUnavailableError, ImageReadError, ValueError) as err:
        st.warning(plain(f"The dataset's images cannot be opened here ({err}); showing the cached thumbnail only."))
        st.image(cache.thumbs[row])
        st.stop()
try:
    result = probe(cache, images)
except (ModelLoadError, ValueError) as err:
    st.error(plain(f"Could not probe: {err}"))
    st.stop()
choice = st.selectbox("Image", range(len(images)), format_func=lambda i: names[i]) if len(images) > 1 else 0
top = result.top_classes(choice)
predicted = top[0][0]
shown, seen, right = st.columns([1, 2, 2])  # the image, where the heads look in it, and the answer: one row
shown.image(images[choice], caption=plain(f"{names[choice]} (as given)"), width="stretch")
right.plotly_chart(figures.bars([cache.classnames[c] for c, _ in top], [p for _, p in top], "Top-5 prediction",
                                "probability"), config=figures.PNG_CONFIG, theme=None)
c1, c2, c3 = st.columns([2, 2, 1])  # the map's controls, under the row they steer
driving = result.driving_heads(choice, predicted, cache)  # the heads that push hardest toward the prediction
all_heads = [cache.units.head_at(u) for u in range(cache.units.n_heads_total)]
chosen = c1.multiselect("Heads mapped (summed)", all_heads, default=driving[:3], format_func=lambda lh: head_label(*lh),
                        key=f"where_heads_{image_key(images[choice])[:16]}",  # a new image starts from its own heads
                        help="by default the three that push hardest toward the prediction")
kind = c2.radio("Map of", ["the prediction", "another class", "one head's PC", "raw attention (baseline)"],
                key="where_kind", horizontal=True)
target = predicted
if kind == "another class":
    target = c3.selectbox("Class", range(len(cache.classnames)), format_func=lambda c: cache.classnames[c],
                          key="where_class")
elif kind == "one head's PC":
    target = c3.selectbox("PC", range(cache.n_pcs), format_func=lambda k: f"PC{k + 1}", key="where_pc")
    chosen = chosen[:1]
size = result.inputs.shape[1]
if not chosen:
    seen.image(result.inputs[choice], caption=f"what the model sees ({size}×{size})", width="stretch")
    c3.info("Pick at least one head to map.")
else:
    what = {"the prediction": "class", "another class": "class", "one head's PC": "pc",
            "raw attention (baseline)": "attention"}[kind]
    patches, rest = result.where(choice, cache, chosen, what, target)
    heads_named = ", ".join(head_label(*h) for h in chosen)
    unit_name = {"class": "push (logits)", "attention": "attention", "pc": f"PC{target + 1}"}[what]  # said in full below
    figure = figures.patch_overlay(result.inputs[choice], patches, "the map on what the model sees", unit_name)
    figure.update_layout(height=300)
    seen.plotly_chart(figure, config=figures.PNG_CONFIG, theme=None)
    where = where_in_words(patches)
    grid = patches.shape[0]
    toward = {"class": f"'{plain(cache.classnames[target])}'", "attention": "", "pc": f"PC{target + 1}"}[what]
    plural = len(chosen) > 1  # L3H6 draws; L3H6, L2H0 draw
    if what == "attention":
        line = f"**{heads_named} look{'' if plural else 's'} mostly at the {where.region} patches**"
    elif where.sign >= 0:
        line = f"**{heads_named} push{'' if plural else 'es'} toward {toward}, mostly from the {where.region} patches**"
    else:
        line = f"**{heads_named} push{'' if plural else 'es'} away from {toward}, mostly from the {where.region} patches**"
    st.markdown(f"{line} ({where.share:.0%} of that push; toward {where.positive:+.3g}, away {where.negative:+.3g}).")
    st.caption(f"{grid}×{grid} patches of {size // grid} px on the {size} px image the model sees; red pushes toward, "
               f"blue away (centred at 0); {rest_in_words(patches, rest)}. The patches and that rest add up exactly to "
               "the heads' contribution.")
typical = float(result.typicality[choice])
if result.is_unusual(choice):
    st.warning(f"This image is unlike the {cache.n_images:,} images of this cache (typicality {typical:.1e}, below the "
               f"alarm at {ALARM}): in its embedding, its heads' PC coordinates or its own pixels it lies further from "
               "them than almost every held-out cached image. The heads and PCs below were fitted on those images, so "
               "they describe where this one falls outside what they know: the explanation, like the prediction, may "
               "not transfer to it.")
else:
    st.caption(f"Typicality {typical:.0%}: how usual this image is among held-out images of this cache, read in its "
               "embedding, its heads' PC coordinates and its pixels (the least usual of the three, times three); below "
               f"{ALARM:.1%} gets a warning, as about {ALARM:.1%} of the cache's own images would: the explanation may "
               "not transfer.")
attribution = result.head_logit_attribution(choice, predicted, cache)
st.plotly_chart(figures.heads_heatmap(attribution, f"Each head's direct push toward '{cache.classnames[predicted]}'",
                                      "logits"), config=figures.PNG_CONFIG, theme=None)
st.caption(f"In logits (the class's logit is {result.logit_scale:.1f} × the cosine of the image and the class): the "
           "heads' pushes, the embedding's and the MLPs' add up to it.")
pct = result.percentiles[choice].reshape(cache.n_layers, cache.n_heads, -1)
c1, c2 = st.columns(2)
c1.plotly_chart(figures.heads_heatmap(100 * pct[:, :, 0], "PC1 coefficient as a dataset percentile",
                                      "percentile (0–100)"),
                config=figures.PNG_CONFIG, theme=None)
lh = c2.selectbox("Head (strongest push first)", driving, format_func=lambda h: head_label(*h), key="probe_head")
unit = cache.head_index(*lh)
c2.plotly_chart(figures.bars([f"PC{k + 1}" for k in range(min(12, cache.n_pcs))],
                             list(100 * result.percentiles[choice, unit, :12]),
                             f"{head_label(*lh)}: percentile of each PC coefficient", "percentile (0–100)",
                             digits=".0f"),
                config=figures.PNG_CONFIG, theme=None)
c2.caption(plain(f"{head_label(*lh)} PC1, read from its images by the whole model: "
                 f"{head_pole_words(str(cache.path))[lh[0]][lh[1]]} (the Head explorer has every PC)"))
reference = sample_note(cache, cache.sample(PERCENTILE_SAMPLE))
if reference:
    st.caption(f"Percentiles are read against a sample of the dataset ({reference}).")
push = pd.DataFrame(result.pc_push(choice, predicted, cache), columns=["layer", "head", "pc", "logits vs the mean image"])
push["pc"] += 1
st.subheader(f"PCs that push most toward '{cache.classnames[predicted]}'")
st.dataframe(push, hide_index=True)
st.download_button("PCs (CSV)", push.to_csv(index=False), "probe_pcs.csv", "text/csv")
st.subheader("Counterfactual: switch components off")
heads = [cache.units.head_at(u) for u in range(cache.units.n_heads_total)]
off_heads = st.multiselect("Heads off", heads, format_func=lambda lh: head_label(*lh), key="probe_heads")
off_pcs = st.multiselect("PCs off", [(int(r.layer), int(r.head), int(r.pc) - 1) for r in push.itertuples()],
                         format_func=lambda p: pc_label(*p), key="probe_pcs")
mode = st.radio("Replace by", ["mean", "zero"], horizontal=True, key="probe_mode")
mask = AblationMask(heads=frozenset(off_heads), pcs=frozenset(off_pcs), mode=mode)
probs = counterfactual_probs(result, cache, mask)[choice]
order = np.argsort(-probs)[:5]
st.plotly_chart(figures.bars([cache.classnames[c] for c in order], list(probs[order]),
                             "Top-5 with those components off", "probability"), config=figures.PNG_CONFIG, theme=None)
