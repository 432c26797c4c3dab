"""The sidebar shared by all pages: what to look at, and building its cache when there is none."""

from pathlib import Path

import streamlit as st

from dashboard.state import FALLBACK_MODEL, current_spec, default_model, find_cache, list_caches
from residual_core.datasets import REGISTRY, SPLITS, DatasetUnavailableError
from residual_core.demo.world import FACTORS
from residual_core.models import SHORT_NAMES, ModelLoadError
from residual_core.pipeline import DEFAULT_DATASET, precompute
from residual_core.store import CacheError, read_manifest

DATASETS = [f"demo-world/{f}" for f in FACTORS] + list(REGISTRY)


def _open_existing() -> None:
    row = st.session_state.get("_existing")
    if row:
        ss = st.session_state
        ss.model, ss.dataset, ss.split, ss.limit = row["model"], row["dataset"], row["split"], row["n_images"]


def sidebar() -> None:
    ss = st.session_state
    with st.sidebar:
        st.header("Model and data")
        caches = list_caches()
        if caches:
            st.selectbox("Open a cache already built", caches, index=None, key="_existing", on_change=_open_existing,
                         format_func=lambda r: f"{r['model']} · {r['dataset']} · {r['split']} · {r['n_images']} img",
                         placeholder=f"{len(caches)} built")
        st.selectbox("Model", sorted(set(SHORT_NAMES) | {ss.model}), key="model", accept_new_options=True,
                     help="A short name, or any open_clip ARCH:PRETRAINED tag, or ARCH:/path/to/checkpoint")
        st.selectbox("Dataset", sorted(set(DATASETS) | {ss.dataset}), key="dataset", accept_new_options=True,
                     help="A registered dataset, or folder:/path/with/one/subfolder/per/class")
        st.selectbox("Split", SPLITS, key="split")
        st.number_input("Images", min_value=10, max_value=200_000, step=500, key="limit",
                        help="a deterministic, class-stratified subset of the split")
        if ss.model == FALLBACK_MODEL:
            st.warning("Random-weight model: the decomposition is exact but heads mean nothing. "
                       "Train the demo model (README) or pick a pretrained one.")
        if ss.get("basis_from") and not _basis_matches(ss.basis_from, ss.model, ss.dataset):
            ss.basis_from = None  # another model or dataset: its own basis again
        if ss.get("basis_from"):
            st.caption(f"PCs in the basis of `{ss.basis_from.rsplit('/', 1)[-1]}` (applied from Alignment)")
            if st.button("Use this split's own PCA basis"):
                ss.basis_from = None
                st.rerun()
        spec = current_spec()
        try:
            path = find_cache(spec)
        except (ModelLoadError, DatasetUnavailableError, CacheError, ValueError, FileNotFoundError) as err:
            ss.cache_path = None
            st.error(str(err))
            return
        if path:
            ss.cache_path = path
            ss.cache_key = path.rsplit("__", 1)[-1]
            st.caption(f"cache `{ss.cache_key}` · {spec.limit or 'all'} images")
            return
        ss.cache_path = None
        st.info("No cache for this choice yet: encoding runs the model once, then every view is arithmetic.")
        # The first open builds the default view by itself; anything else waits for a click.
        auto = not ss.get("_auto_built") and (spec.model, spec.dataset) == (default_model(), DEFAULT_DATASET)
        if auto or st.button("Build the cache", type="primary"):
            ss._auto_built = True
            _build(spec)


def _basis_matches(folder: str, model: str, dataset: str) -> bool:
    try:
        spec = read_manifest(Path(folder))["spec"]
    except (CacheError, KeyError, OSError):
        return False
    return (spec["model"], spec["dataset"]) == (model, dataset)


def _build(spec) -> None:
    bar = st.progress(0.0, text="loading …")

    def report(stage: str, done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{stage}: {done}/{total} images")

    try:
        precompute(spec, progress=report)
    except (ModelLoadError, DatasetUnavailableError, CacheError, ValueError) as err:
        st.error(f"Could not build the cache: {err}")
        return
    find_cache.clear()
    st.rerun()
