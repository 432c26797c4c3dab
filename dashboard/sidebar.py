"""The sidebar shared by all pages: what to look at (only what the server offers), and whether its cache is built.

Nothing here starts a build: "Build the cache" asks the main area (builds.py) to build it, where its progress shows.
"""

from pathlib import Path

import streamlit as st

from dashboard.builds import USER_ERRORS
from dashboard.offer import FALLBACK_MODEL
from dashboard.state import current_spec, get_offer, lookup_cache, plain
from dashboard.tour_recorder import tour_recorder
from residual_core.data.datasets import SPLITS
from residual_core.build.store import CacheError, read_manifest



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
        if len(offer.bank_names) > 1:
            if ss.get("bank") not in offer.bank_names:
                ss.bank = offer.bank_names[0]
            st.selectbox("Text bank", offer.bank_names, key="bank",
                         help="the texts heads are described with: default is the demo world's words on its datasets "
                              "and words about photos elsewhere (the server's operator can add files)")
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
            say_what_was_built(found.folder)
            return
        ss.cache_path = None
        ss.cache_problem = found.problem
        if found.problem:
            st.warning(plain(f"The cache on disk was not usable and will be rebuilt: {found.problem}"))
        st.info("No cache for this choice yet: encoding runs the model once, then every view is arithmetic.")
        if st.button("Build the cache", type="primary", key="build_sidebar"):
            ss._build_requested = True  # built in the main area, where its progress can be seen


def _basis_matches(folder: str, model: str, dataset: str) -> bool:
    try:
        spec = read_manifest(Path(folder), verify=False)["spec"]
    except (CacheError, KeyError, OSError):
        return False
    return (spec.get("model"), spec.get("dataset")) == (model, dataset)


def say_what_was_built(folder) -> None:
    """The cache's real image count, and what the build left out (empty class folders by name), not the size asked."""
    ss = st.session_state
    try:
        manifest = read_manifest(folder, verify=False)  # a JSON read: the lookup has just verified it
    except CacheError:
        st.caption(f"cache {ss.cache_key}")
        return
    skipped = manifest["skipped"]
    left = f" · {skipped['count']:,} left out (listed in its manifest)" if skipped["count"] else ""
    st.caption(f"cache {ss.cache_key} · {manifest['n_images']:,} images{left}")
    empty = [item["id"] for item in skipped["first"] if item["id"].endswith("/")]
    if empty:
        st.caption(plain(f"Class folders with no image, left out: {', '.join(empty[:10])}"))
