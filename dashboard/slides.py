"""The slides of presenter mode: one renderer per step kind, each drawing its view's key figure large.

Slides read cached arrays only (the probe slide runs the model once per drawn image, as the Probe page does).
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import streamlit as st

from dashboard import builds, figures
from dashboard.numbers import accuracy_metric, metric_view
from dashboard.offer import Offer
from dashboard.view import ViewState
from dashboard.state import (concept_embedding, find_cache, get_cache, head_texts, plain, pole_labels, probe,
                             unit_labels)
from dashboard.tours import Step, step_view
from residual_core.read.ablation import evaluate, mask_in_words, per_class_accuracy
from residual_core.read.cache import HEAD_METRICS, Cache, most_important_head
from residual_core.build.pipeline import PrecomputeSpec
from residual_core.explain.scorecard_run import label_doubts, textspan_units
from residual_core.engine.units import head_label

BIG = dict(font=dict(size=20), title=dict(font=dict(size=24)))  # figures on a projector, across a room


def _chart(fig, height: int | None = None, key: str | None = None) -> None:
    fig.update_layout(**BIG, **({"height": height} if height else {}))
    big_ticks = dict(tickfont=dict(size=BIG["font"]["size"]), title=dict(font=dict(size=BIG["font"]["size"] + 2)))
    fig.update_xaxes(**big_ticks)
    fig.update_yaxes(**big_ticks)
    fig.update_traces(textfont_size=BIG["font"]["size"], selector=dict(type="heatmap"))
    fig.update_traces(colorbar=dict(tickfont=dict(size=BIG["font"]["size"])), selector=dict(type="heatmap"))
    fig.update_traces(textfont_size=BIG["font"]["size"], selector=dict(type="bar"))
    st.plotly_chart(fig, config=figures.PNG_CONFIG, theme=None, key=key)


def _spec(view: ViewState, offer: Offer, dataset: str | None = None, split: str | None = None) -> PrecomputeSpec:
    return PrecomputeSpec(model=view.model, dataset=dataset or view.dataset, split=split or view.split,
                          limit=view.limit, cache_dir=offer.cache_dir, text_bank=offer.bank_path(view.bank))


def cache_or_build(spec: PrecomputeSpec, key: str) -> Cache | None:
    """The cache of ``spec``, or a button that builds it here (with its progress); None until it exists."""
    path = find_cache(spec)
    if path is not None:
        return get_cache(path)
    st.info(plain(f"This step needs the cache of {spec.model} on {spec.dataset} ({spec.split}, {images_in(spec):,} "
                  "images)."))
    if st.button("Build it now", type="primary", key=f"build_{key}"):
        builds.build(spec)
    return None


def needed(step: Step, offer: Offer) -> list[PrecomputeSpec]:
    """The caches a step draws from (to prepare a whole tour before a talk)."""
    view, _ = step_view(step, offer)
    specs = [_spec(view, offer)]
    if step.view.get("also"):
        specs.append(_spec(view, offer, dataset=step.view["also"]))
    if step.slide == "alignment":  # its train/val/test caches (val and test in train's basis) come with training
        specs = [_spec(view, offer, split="train")]
    if step.slide == "shortcut":  # switches are chosen on val, shown on the step's split
        specs.append(_spec(view, offer, split="val"))
    return specs


def _head(step: Step, view: ViewState, auto: bool, cache: Cache) -> tuple[int, int]:
    if auto:
        return most_important_head(cache)
    return min(view.layer, cache.n_layers - 1), min(view.head, cache.n_heads - 1)


def render(step: Step, index: int, offer: Offer) -> None:
    view, auto = step_view(step, offer)
    if step.slide == "alignment":  # its own three caches, made with its training (see ``prepare``)
        _alignment(step, index, view, auto, None, offer)
        return
    cache = cache_or_build(_spec(view, offer), f"step{index}")
    if cache is None:
        return
    {"heads_map": _heads_map, "head": _head_slide, "words": _words, "ablation": _ablation, "search": _search,
     "probe": _probe, "where": _where, "shortcut": _shortcut}[step.slide](step, index, view, auto, cache, offer)


def _shortcut(step, index, view, auto, cache, offer) -> None:
    """Worst group and mean before and after the best method's switches (chosen on val), the worst groups' bars;
    T switches them off and on."""
    from dashboard.groups_view import shortcut_report
    from residual_core.analysis.shortcuts import mask_of
    from residual_core.analysis.shortcuts_run import default_groups
    from residual_core.read.groups import group_accuracy, groups_for

    val = cache_or_build(_spec(view, offer, split="val"), f"val{index}")
    if val is None:
        return
    try:
        spec = default_groups(cache)
        report = shortcut_report(str(val.path), str(cache.path), spec)
        groups = groups_for(cache, spec)
    except ValueError as err:
        st.warning(plain(f"No groups to show here: {err}"))
        return
    methods = [m for m in report["methods"] if m["switches"] and not m["method"].startswith("random")]
    best = max(methods, key=lambda m: (m["val"]["worst"], m["val"]["mean"]), default=None)  # chosen on val
    key = f"tour_off_{index}"
    off = bool(best) and st.session_state.get(key, False)
    if best is not None:
        def flip() -> None:
            st.session_state[key] = not st.session_state.get(key, False)

        what = f"{len(best['switches'])} {'PCs' if best['method'].endswith('PCs') else 'heads'} ({best['method']})"
        st.button(f"Switch {what} {'back on' if off else 'off'}   (T)", type="primary", key=f"toggle_{index}",
                  shortcut="T", on_click=flip)
    mask = mask_of(tuple(tuple(u) for u in best["units"])) if off else mask_of(())
    before = group_accuracy(cache.baseline_predictions() == cache.labels, groups)
    now = group_accuracy(evaluate(cache, mask).predictions == cache.labels, groups)
    c1, c2 = st.columns(2)
    accuracy_metric(c1, "Worst group", now.worst, now.worst - before.worst, decimals=1, noise=5e-4,
                    still=plain(before.worst_group))
    accuracy_metric(c2, "Mean", now.mean, now.mean - before.mean, decimals=1, noise=5e-4, still="all switches on")
    order = np.argsort(np.nan_to_num(before.per_group, nan=2.0), kind="stable")[:8]
    bars = figures.per_class_bars(tuple(groups.names[g] for g in order), before.per_group[order],
                                  now.per_group[order], 300, BIG["font"]["size"],
                                  f"The {len(order)} worst groups ({groups.source})")
    st.altair_chart(bars, theme=None, width="stretch")
    st.caption(plain(report["verdict"]))


def _words(step, index, view, auto, cache, offer) -> None:
    """A head in words: its TextSpan texts with the share each explains, beside its PC1 poles' images."""
    layer, head = _head(step, view, auto, cache)
    unit = cache.head_index(layer, head)
    try:
        reading = head_texts(str(cache.path))[unit]
    except ValueError as err:
        st.info(plain(err))
        return
    left, right = st.columns([3, 2])
    directions = textspan_units(cache, [reading], n=5)
    text_doubts = label_doubts(cache, directions)  # TextSpan's own texts, held against the ground truth
    with left:
        for i, share, (label, doubt), text_doubt in zip(reading.texts[:5], reading.explained,
                                                        unit_labels(cache, directions), text_doubts):
            shown = plain(label.text) if not label.abstains else "no clear label"
            st.markdown(f"### {shown} · {share:.0%}" + (" · ⚠ marked wrong" if doubt else ""))
            st.caption(plain(f"{label.evidence()} · TextSpan's text: {cache.texts[i]}"
                             + (" (its images say otherwise)" if text_doubt else "")))
        together = reading.cumulative[min(4, len(reading.texts) - 1)]
        st.caption(f"{head_label(layer, head)}: TextSpan's first directions together explain {together:.0%} of its "
                   "variance (read from the cache's PCA); each is named by what the model reads in its top images")
    with right:
        for name, rows in (("PC1 + pole", cache.pole_top), ("PC1 − pole", cache.pole_bottom)):
            st.markdown(f"#### {name}")
            st.image(np.concatenate(list(cache.thumbs[rows[unit, 0][:6]]), axis=1), width="stretch")


def _search(step, index, view, auto, cache, offer) -> None:
    """Which heads carry a concept: their shares along it, and the images the top ones point toward it."""
    from residual_core.explain.describe import check_query, concept_noise, retrieve, search_heads

    try:
        query = check_query(step.view.get("query", ""))
        spec = cache.manifest["spec"]
        embeddings = concept_embedding(spec["model"], bool(spec.get("random_weights")), int(spec.get("seed", 0)),
                                       (query,))
    except ValueError as err:
        st.info(plain(f"This search step cannot run: {err}"))
        return
    ranked = search_heads(cache, embeddings)[:5]
    noise = concept_noise(cache, embeddings)
    if noise.at_noise:
        st.warning(plain(noise.words(query, head_label(ranked[0].layer, ranked[0].head))))
    left, right = st.columns([2, 3])
    with left:
        _chart(figures.bars([head_label(r.layer, r.head) for r in ranked], [100 * r.share for r in ranked],
                            f"Heads along “{figures.label(query)}”", "% of the head's variance", digits=".1f"), 430)
    with right:
        rows = retrieve(cache, [(ranked[0].layer, ranked[0].head)], embeddings, top=8)
        st.markdown(f"#### Where {head_label(ranked[0].layer, ranked[0].head)} points most toward it")
        st.image(np.concatenate(list(cache.thumbs[rows]), axis=1), width="stretch")


def _heads_map(step, index, view, auto, cache, offer) -> None:
    shown = metric_view(cache, view.metric)
    _chart(figures.heads_heatmap(shown.values, HEAD_METRICS[view.metric], shown.unit, blank_below=shown.blank_below),
           560)
    if shown.note:
        st.markdown(f"#### {shown.note}")


def _head_slide(step, index, view, auto, cache, offer) -> None:
    layer, head = _head(step, view, auto, cache)
    unit, pc = cache.head_index(layer, head), min(view.pc, cache.n_pcs - 1)
    reads = pole_labels(cache, unit, pc)
    left, right = st.columns([2, 3])
    with left:
        _chart(figures.spectrum(np.asarray(cache.head_eigenvalues[unit]), f"{head_label(layer, head)}: its spectrum"),
               430)
    with right:
        for name, rows, (label, doubt) in (("+ pole", cache.pole_top, reads[0]),
                                           ("− pole", cache.pole_bottom, reads[1])):
            st.markdown(f"### PC{pc + 1} {name}: " + (plain(label.text) if not label.abstains else "no clear label"))
            if doubt:  # the tool's own check says this label is wrong: the slide says it too
                st.warning(plain(f"⚠ Label marked wrong: {doubt}"))
            st.image(np.concatenate(list(cache.thumbs[rows[unit, pc][:6]]), axis=1), width="stretch")
            st.caption(plain(label.evidence()))


def _ablation(step, index, view, auto, cache, offer) -> None:
    layer, head = _head(step, view, auto, cache)
    key = f"tour_off_{index}"

    def flip() -> None:  # a callback, so the label drawn below already says what the next press does
        st.session_state[key] = not st.session_state.get(key, False)

    off = st.session_state.get(key, False)
    label = f"Switch {head_label(layer, head)} {'back on' if off else 'off'}   (T)"
    st.button(label, type="primary", key=f"toggle_{index}", shortcut="T", on_click=flip)
    base = view.mask  # the step's own mask (a recorded ablation); the toggle adds the step's head to it
    mask = replace(base, heads=base.heads | {(layer, head)}) if off else base
    if not base.is_empty:
        st.caption(plain(f"This step also ablates ({base.mode}): {mask_in_words(base)}"))
    panels = [(cache, view.dataset)]
    if step.view.get("also"):
        other = cache_or_build(_spec(view, offer, dataset=step.view["also"]), f"also{index}")
        if other is not None:
            panels.append((other, step.view["also"]))
    columns = st.columns(len(panels))
    for column, (data, name) in zip(columns, panels):
        result = evaluate(data, mask)
        accuracy_metric(column, f"{name.split('/')[-1]} accuracy", result.accuracy, result.delta, decimals=1,
                        noise=5e-4, still="all heads on" if mask.is_empty else "no change")
    baseline = per_class_accuracy(cache, cache.baseline_predictions())
    bars = figures.per_class_bars(cache.classnames, baseline, evaluate(cache, mask).per_class_accuracy, 300,
                                  BIG["font"]["size"])
    st.altair_chart(bars, theme=None, width="stretch")


def _probe(step, index, view, auto, cache, offer) -> None:
    from residual_core.data.world import draw

    try:
        image = draw(step.draw)
    except ValueError as err:
        st.error(plain(f"This step's drawing is not possible: {err}"))
        return
    result = probe(cache, [image])
    top = result.top_classes(0)
    drawn, seen, bars = st.columns([1, 1, 2])
    drawn.image(np.asarray(image), caption="as drawn", width="stretch")
    seen.image(result.inputs[0], caption="what the model sees", width="stretch")
    with bars:
        _chart(figures.bars([cache.classnames[c] for c, _ in top[:3]], [p for _, p in top[:3]], "Prediction",
                            "probability"), 300)
    typical = float(result.typicality[0])
    note = "unlike the images it knows: treat the answer with care" if result.is_unusual(0) else \
        f"more like the model's images than {typical:.0%} of them"
    st.markdown(f"### Typicality: {note}")


def _where(step, index, view, auto, cache, offer) -> None:
    """An image drawn for the talk, and where a head looks in it: the push of each patch toward the prediction."""
    from residual_core.engine.tokens import where_in_words
    from residual_core.data.world import draw

    try:
        image = draw(step.draw)
    except ValueError as err:
        st.error(plain(f"This step's drawing is not possible: {err}"))
        return
    result = probe(cache, [image])
    layer, head = _head(step, view, auto, cache)
    predicted = result.top_classes(0)[0][0]
    patches, _ = result.where(0, cache, [(layer, head)], "class", predicted)
    left, right = st.columns([3, 2])
    with left:
        _chart(figures.patch_overlay(result.inputs[0], patches, f"{head_label(layer, head)}: its push toward "
                                     f"'{figures.label(cache.classnames[predicted])}'", "push (logits)"), 480)
    where = where_in_words(patches)
    grid = patches.shape[0]
    way = "toward it" if where.sign >= 0 else "away from it"
    right.markdown(f"### The model says: {plain(cache.classnames[predicted])}")
    right.markdown(f"### {head_label(layer, head)} pushes {way}, mostly from the {where.region} patches "
                   f"({where.share:.0%})")
    right.caption(f"{grid}×{grid} patches; red pushes toward the answer, blue away. Each patch's share is exact.")


def _alignment(step, index, view, auto, cache, offer) -> None:
    from residual_core.analysis.align_results import saved_results

    train_path = find_cache(_spec(view, offer, split="train"))
    reports = saved_results(train_path) if train_path else []
    if not reports:
        st.warning(plain(f"Not prepared: {'; '.join(missing(step, offer))}. Open “Before the talk” below and press "
                         "“Prepare everything this tour shows” (it builds the caches and trains, with progress), or run "
                         f"python -m residual_core align --model {view.model} --dataset {view.dataset} --method "
                         f"{ALIGN_METHOD}."))
        return
    sizes = reports[0]["settings"].get("n_images") or {}
    if sizes:
        st.caption(" · ".join(f"{split} {n:,}" for split, n in sizes.items()) + " images")
    rows = [(r["tag"].removeprefix("align_"), r["test_acc"]) for r in reports]
    if not any(r["method"] == "zeroshot" for r in reports):  # the starting point, from the same test split
        rows.insert(0, ("zero-shot", reports[0]["zeroshot_test_acc"]))
    _chart(figures.bars([name for name, _ in rows], [100 * acc for _, acc in rows], f"{view.dataset}: test accuracy",
                        "test accuracy (%)", digits=".1f"), 420)


ALIGN_METHOD = "fine"  # what "Before the talk" trains for an alignment step (the paper's ResiDual*)


def images_in(spec: PrecomputeSpec) -> int:
    """How many images the cache of ``spec`` holds (a split can be smaller than the link's size)."""
    from residual_core.build.pipeline import prepare

    return len(prepare(replace(spec, basis_from=None)).positions)


def missing(step: Step, offer: Offer) -> list[str]:
    """What a step still needs before it can be shown, in words (empty: ready)."""
    view, _ = step_view(step, offer)
    if step.slide != "alignment":
        return [f"the cache of {s.dataset} ({s.split}, {images_in(s):,} images)" for s in needed(step, offer)
                if find_cache(s) is None]
    from residual_core.analysis.align_results import trained

    train = _spec(view, offer, split="train")
    train_path = find_cache(train)
    if train_path and trained(Path(train_path), ALIGN_METHOD):
        return []
    sizes = "/".join(f"{images_in(_spec(view, offer, split=s)):,}" for s in ("train", "val", "test"))
    what = [] if train_path else [f"the train/val/test caches of {view.dataset} ({sizes} images)"]
    return what + [f"training {ALIGN_METHOD} on them"]


def prepare(step: Step, offer: Offer) -> None:
    """Build what ``missing`` names, with a progress bar (training included for an alignment step)."""
    view, _ = step_view(step, offer)
    if step.slide != "alignment":
        for spec in needed(step, offer):
            if find_cache(spec) is None:
                st.write(plain(f"{spec.dataset} · {spec.split} · {images_in(spec):,} images"))
                builds.build(spec, rerun=False)
        return
    from residual_core.analysis.align_results import train_and_save

    bar = st.progress(0.0, text=plain(f"{view.dataset}: building the caches …"))
    report = train_and_save(
        ALIGN_METHOD, model=view.model, dataset=view.dataset, limit=view.limit, cache_dir=offer.cache_dir,
        build_progress=lambda stage, done, total: bar.progress(min(done / max(total, 1), 1.0) * 0.5,
                                                               text=f"{stage}: {done:,}/{total:,}"),
        progress=lambda e, n, acc: bar.progress(0.5 + 0.5 * e / n, text=f"training {ALIGN_METHOD}: epoch {e}/{n}, "
                                                                          f"val {acc:.1%}"))
    bar.progress(1.0, text=f"{ALIGN_METHOD}: test accuracy {report['test_acc']:.1%} "
                           f"(zero-shot {report['zeroshot_test_acc']:.1%})")
