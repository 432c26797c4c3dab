"""Building a cache from the dashboard: the main area's prompt, the build with its progress, every page's prologue.

A build runs only on a click ("Build the cache", in the sidebar or the main area); no page load starts one.
"""

import streamlit as st

from dashboard.state import active_cache, current_spec, lookup_cache, plain
from residual_core.read.cache import Cache, sample_stride
from residual_core.data.datasets import DatasetUnavailableError
from residual_core.engine.decompose import UnsupportedModelError
from residual_core.engine.models import ModelLoadError
from residual_core.build.pipeline import precompute
from residual_core.build.store import CacheError

USER_ERRORS = (ModelLoadError, DatasetUnavailableError, UnsupportedModelError, CacheError, ValueError, OSError)


def build_prompt() -> None:
    """The main area of a page without a cache: what would be built, the button, and the build's progress."""
    ss = st.session_state
    what = f"{ss.model} on {ss.dataset} ({ss.split} split, {ss.limit:,} images)"
    if ss.pop("_build_requested", False) or st.button("Build the cache", type="primary", key="build_main"):
        header = st.empty()  # cleared if the build fails: the error alone says what happened
        lines = header.container()
        lines.subheader(plain(f"Building the cache: {what}"))
        lines.caption("The model runs once over the images (seconds for the demo model's 2,000 images on 2 CPU "
                      "cores); afterwards every view is arithmetic on the cache. The other pages are in the sidebar.")
        if not build(current_spec()):
            header.empty()
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


STAGES = {"encode": "encoding images with the model", "finalize": "fitting each head's PCA and its nearest texts"}


def build(spec, rerun: bool = True) -> bool:
    """Build ``spec``'s cache with a progress bar; False (the bar gone, one error line) when it cannot be built."""
    bar = st.progress(0.0, text="loading the model and the images …")

    def report(stage: str, done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{STAGES.get(stage, stage)}: {done:,} of {total:,}")

    try:
        precompute(spec, progress=report)
    except USER_ERRORS as err:
        bar.empty()
        st.error(plain(f"Could not build the cache: {err}"))
        return False
    lookup_cache.clear()
    if rerun:
        st.rerun()
    return True
