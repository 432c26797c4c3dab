"""The sidebar shared by all pages: what to look at (only what the server offers), and building its cache.

Nothing here starts a build by itself: a build runs on a click of "Build the cache", in the sidebar or in
the main area of a page that has no cache yet.
"""

from pathlib import Path

import streamlit as st

from dashboard import tours
from dashboard.offer import FALLBACK_MODEL
from dashboard.state import active_cache, current_spec, get_offer, lookup_cache, plain
from residual_core.cache import Cache, sample_stride
from residual_core.datasets import SPLITS, DatasetUnavailableError
from residual_core.decompose import UnsupportedModelError
from residual_core.models import ModelLoadError
from residual_core.pipeline import precompute
from residual_core.store import CacheError, read_manifest
from residual_core.units import head_label

USER_ERRORS = (ModelLoadError, DatasetUnavailableError, UnsupportedModelError, CacheError, ValueError, OSError)


def _open_existing() -> None:
    row = st.session_state.get("_existing")
    if row:
        ss = st.session_state
        ss.model, ss.dataset, ss.split, ss.limit = row.model, row.dataset, row.split, row.limit or row.n_images


def _distinct(built: tuple) -> list:
    """One entry per view it opens (model, dataset, split, size): caches that differ only in basis or storage
    open the same view, so listing each would show identical lines."""
    seen = {}
    for row in built:
        seen.setdefault((row.model, row.dataset, row.split, row.limit or row.n_images), row)
    return list(seen.values())


def _limit_label(n: int) -> str:
    return f"{n:,} images"


def sidebar(page=None) -> None:
    ss = st.session_state
    offer = get_offer()
    if page is not None:
        with st.sidebar:
            tour_recorder(page)
    with st.sidebar:
        st.header("Model and data")
        built = _distinct(offer.built)
        if built:
            st.selectbox("Open a cache already built", built, index=None, key="_existing",
                         on_change=_open_existing, placeholder=f"{len(built)} built",
                         format_func=lambda r: f"{r.model} · {r.dataset} · {r.split} · {r.n_images} img")
        for key, options in (("model", offer.models), ("dataset", offer.datasets)):
            if ss[key] not in options:
                ss[key] = options[0]
        st.selectbox("Model", offer.models, key="model",
                     help="Models this server offers (its operator adds more: see the README, hosting)")
        st.selectbox("Dataset", offer.datasets, key="dataset", help="Datasets this server offers")
        st.selectbox("Split", SPLITS, key="split")
        sizes = offer.sizes_for(ss.model, ss.dataset)
        if ss.limit not in sizes:
            ss.limit = min(sizes, key=lambda n: abs(n - ss.limit))
        st.selectbox("Images", sizes, key="limit", format_func=_limit_label,
                     help="a deterministic, class-stratified subset of the split")
        if ss.model == FALLBACK_MODEL:
            st.warning("Random-weight model: the decomposition is exact but heads mean nothing. "
                       "Train the demo model (README) or pick a pretrained one.")
        if ss.get("basis_from") and not _basis_matches(ss.basis_from, ss.model, ss.dataset):
            ss.basis_from = None  # another model or dataset: its own basis again
        if ss.get("basis_from"):
            st.caption(plain(f"PCs in the basis of {ss.basis_from.rsplit('/', 1)[-1]} (applied from Alignment)"))
            if st.button("Use this split's own PCA basis"):
                ss.basis_from = None
                st.rerun()
        spec = current_spec()
        try:
            found = lookup_cache(spec)
        except USER_ERRORS as err:
            ss.cache_path = None
            st.error(plain(err))
            return
        if found.ready:
            ss.cache_path = str(found.folder)
            ss.cache_key = ss.cache_path.rsplit("__", 1)[-1]
            st.caption(f"cache {ss.cache_key} · {spec.limit or 'all'} images")
            return
        ss.cache_path = None
        ss.cache_problem = found.problem
        if found.problem:
            st.warning(plain(f"The cache on disk was not usable and will be rebuilt: {found.problem}"))
        st.info("No cache for this choice yet: encoding runs the model once, then every view is arithmetic.")
        if st.button("Build the cache", type="primary", key="build_sidebar"):
            ss._build_requested = True  # built in the main area, where its progress can be seen


def build_prompt() -> None:
    """The main area of a page without a cache: what would be built, the button, and the build's progress."""
    ss = st.session_state
    what = f"{ss.model} on {ss.dataset} ({ss.split} split, {ss.limit:,} images)"
    if ss.pop("_build_requested", False) or st.button("Build the cache", type="primary", key="build_main"):
        st.subheader(plain(f"Building the cache: {what}"))
        st.caption("The model runs once over the images (seconds for the demo model's 1,000 images on 2 CPU "
                   "cores); afterwards every view is arithmetic on the cache. The other pages are in the sidebar.")
        build(current_spec())
        return
    st.info(plain(f"No cache yet for {what}. Building it runs the model once over the images; afterwards every view "
                  "is arithmetic on the cache."))


def page_cache(title: str) -> Cache:
    """Every page's prologue: its title, then the active cache (or what to build, and a stop)."""
    st.title(title)
    cache = active_cache()
    if cache is None:
        build_prompt()
        st.stop()
    return cache


def sample_note(cache: Cache, drawn: Cache) -> str:
    """"" when ``drawn`` is all of ``cache``, else the words that say which of its images it holds."""
    if drawn.n_images == cache.n_images:
        return ""
    step = sample_stride(cache.n_images, drawn.n_images)
    return f"one image in every {step}: {drawn.n_images:,} of {cache.n_images:,}"


def _basis_matches(folder: str, model: str, dataset: str) -> bool:
    try:
        spec = read_manifest(Path(folder), verify=False)["spec"]
    except (CacheError, KeyError, OSError):
        return False
    return (spec.get("model"), spec.get("dataset")) == (model, dataset)


STAGES = {"encode": "encoding images with the model", "finalize": "fitting each head's PCA and its nearest texts"}


def build(spec, rerun: bool = True) -> None:
    bar = st.progress(0.0, text="loading the model and the images …")

    def report(stage: str, done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{STAGES.get(stage, stage)}: {done:,} of {total:,}")

    try:
        precompute(spec, progress=report)
    except USER_ERRORS as err:
        st.error(plain(f"Could not build the cache: {err}"))
        return
    lookup_cache.clear()
    if rerun:
        st.rerun()


SLIDE_OF_PAGE = {"": "heads_map", "head_explorer": "head", "ablation_lab": "ablation", "probe": "probe",
                 "alignment": "alignment", "specialisation": "heads_map", "compare": "heads_map"}


def tour_recorder(page) -> None:
    """Record a tour while exploring: each click adds the current view as a step; present, save or load it."""
    ss = st.session_state
    with st.expander(f"Tour ({len(ss.tour_draft.steps)} steps)" if ss.get("tour_draft") else "Tour"):
        if st.button("Add this view", key="tour_add", help="the page, model, dataset, head, PC and ablation now shown"):
            params = dict(st.query_params)  # the view as the last run wrote it to the link
            params.update({"layer": str(ss.layer), "head": str(ss.head), "pc": str(ss.pc), "metric": ss.metric})
            step = tours.step_from_view(params, SLIDE_OF_PAGE.get(page.url_path, "heads_map"),
                                        f"{page.title}: {head_label(ss.layer, ss.head)}")
            draft = ss.get("tour_draft") or tours.Tour("My tour", ())
            ss.tour_draft = tours.Tour(draft.title, (draft.steps + (step,))[:tours.MAX_STEPS])
        upload = st.file_uploader("Load a tour (JSON)", type=["json"], key="tour_upload")
        if upload is not None and ss.get("_tour_upload_id") != upload.file_id:
            ss._tour_upload_id = upload.file_id
            try:
                ss.tour_draft, notices = tours.from_json_text(upload.getvalue(), get_offer())
                for notice in notices:
                    st.warning(plain(notice))
            except ValueError as err:
                st.error(plain(f"Could not load the tour: {err}"))
        draft = ss.get("tour_draft")
        if draft:
            st.markdown(f"[Present it full-screen](./present?tour_data={tours.encode(draft)})")
            st.download_button("Save it (JSON)", draft.to_json(), "tour.json", "application/json")
            if st.button("Clear it", key="tour_clear"):
                ss.tour_draft = None
                st.rerun()
        st.markdown("[Present the demo tour](./present?tour=demo)")
