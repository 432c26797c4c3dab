"""View state shared by all pages: session defaults, the URL query string, cached loaders."""

from dataclasses import replace

import streamlit as st

from dashboard.offer import Offer, built_caches, offer_from_process
from dashboard.view import FIELDS, ViewState, parse_view, to_query
from residual_core.read.cache import Cache, load_cache, most_important_head
from residual_core.engine.models import LoadedClip, load_clip, parse_model_spec
from residual_core.build.pipeline import CacheLookup, PrecomputeSpec, lookup
from residual_core.build.store import CacheError, read_manifest

PC_PILLS = 24  # PCs the lab draws a toggle for; a link may switch off any PC, and those stay off
SHARED_KEYS = tuple(name for name in FIELDS if name != "mask")  # the view's widget keys (the mask is no widget)


@st.cache_resource(show_spinner=False)
def _process_offer() -> Offer:
    return offer_from_process()


@st.cache_resource(show_spinner=False)
def configure_threads() -> int:
    """One torch thread per operation in the server (RESIDUAL_THREADS overrides): sessions run in their own
    threads, so concurrent toggles use both cores side by side, and no two-thread kernel waits on a core that
    another session holds (tools/concurrent_toggles.py measures both settings)."""
    import os

    import torch

    threads = int(os.environ.get("RESIDUAL_THREADS", "1"))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


@st.cache_resource(show_spinner=False)
def _janitor():
    """One per server process (dashboard/janitor.py): closes sessions whose browser left, so their uploads go."""
    from streamlit.runtime import Runtime

    from dashboard.janitor import start

    return start(Runtime.instance())


def note_session() -> None:
    """Tell the janitor this session is alive (every run)."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is not None and Runtime.exists():  # a bare run (tests, `python app.py`) has no sessions to close
        _janitor().note(ctx.session_id)


def get_offer() -> Offer:
    """The server's offer; built caches are re-listed on every run (a manifest read each, no hashing)."""
    offer = _process_offer()
    built = built_caches(offer.cache_dir)
    models = tuple(dict.fromkeys(offer.models + tuple(b.model for b in built)))
    datasets = tuple(dict.fromkeys(offer.datasets + tuple(b.dataset for b in built)))
    return replace(offer, models=models, datasets=datasets, built=built)


def init_state() -> None:
    """Read the URL once per browser session into session_state; later runs keep session_state."""
    ss = st.session_state
    if ss.get("_initialised"):
        # Streamlit drops a widget's key when a run does not draw that widget (another page); keep a copy.
        for key in SHARED_KEYS:
            if key in ss:
                ss[f"_keep_{key}"] = ss[key]
            else:
                ss[key] = ss[f"_keep_{key}"]
        return
    query = st.query_params.to_dict()
    view, notices = parse_view(query, get_offer())
    ss._head_from_url = "layer" in query or "head" in query
    for name in FIELDS:
        ss[name] = getattr(view, name)
    ss.url_notices = notices
    for key in SHARED_KEYS:
        ss[f"_keep_{key}"] = ss[key]
    ss._initialised = True


def show_notices() -> None:
    """What the link asked for that was refused, as plain text."""
    for notice in st.session_state.get("url_notices", ()):
        st.warning(plain(notice))


def plain(text: object) -> str:
    """User-supplied text for st.error/warning/info, shown as typed: never a link, an image or formatting.

    Every markdown character is backslash-escaped, and an invisible word joiner (U+2060) goes where the
    autolinker starts (after ':' and '@', inside 'www.'), which otherwise turns a bare https://…, www.… or
    e-mail address into a link. Elsewhere the text is untouched, so a browser's find still matches it.
    """
    text, out = str(text), []
    for index, char in enumerate(text):
        if char == "." and text[max(index - 3, 0):index].lower() == "www":
            out.append("\u2060")
        out.append(f"\\{char}" if char in _MARKDOWN else char)
        if char in ":@":
            out.append("\u2060")
    return "".join(out)


_MARKDOWN = set("\\`*_{}[]()<>#+-.!|:~=$&\"'/@%^")


def current_view() -> ViewState:
    ss = st.session_state
    return ViewState(**{name: ss.get(name) for name in FIELDS})


def write_url() -> None:
    params = to_query(current_view())
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def view_state() -> dict:
    """The view as a downloadable JSON object: its fields, the mask as data, and the cache it reads."""
    ss, view = st.session_state, current_view()
    return ({name: getattr(view, name) for name in FIELDS if name != "mask"} | {"mask": view.mask.to_dict()}
            | {"cache": str(ss.get("cache_path", "")), "cache_key": ss.get("cache_key", "")})


def current_spec() -> PrecomputeSpec:
    ss = st.session_state
    offer = get_offer()
    return PrecomputeSpec(model=ss.model, dataset=ss.dataset, split=ss.split, limit=ss.limit or None,
                          cache_dir=offer.cache_dir, basis_from=ss.get("basis_from") or None,
                          text_bank=offer.bank_path(ss.get("bank", "default")))


@st.cache_data(show_spinner="checking the cache …", max_entries=64)
def lookup_cache(spec: PrecomputeSpec) -> CacheLookup:
    return lookup(spec)


def find_cache(spec: PrecomputeSpec) -> str | None:
    found = lookup_cache(spec)
    return str(found.folder) if found.ready else None


@st.cache_resource(show_spinner="opening the cache …", max_entries=8)
def get_cache(path: str) -> Cache:
    # One memory-mapped instance per process, shared by all browser sessions; never mutated.
    return load_cache(path)


@st.cache_resource(show_spinner="loading the model …", max_entries=2)
def get_model(model: str, random_weights: bool = False, seed: int = 0) -> LoadedClip:
    return load_clip(parse_model_spec(model, random_weights, seed))


def active_cache() -> Cache | None:
    """The cache of the current spec, re-verified on every run, or None (the sidebar explains what to do)."""
    path = st.session_state.get("cache_path")
    if not path:
        return None
    try:
        read_manifest(path)  # sizes each run; digests again only for a file whose identity changed
        cache = get_cache(path)
        if not cache.is_current():  # a file was replaced since it was mapped: map the verified new one
            get_cache.clear()
            cache = get_cache(path)
    except CacheError as err:
        get_cache.clear()
        lookup_cache.clear()
        st.error(plain(f"The cache could not be used: {err}"))
        return None
    ss = st.session_state
    if not ss.get("_head_from_url") and ss.get("_head_default_for") != path:
        # no head in the link: open on the head that matters most here, where a toggle visibly moves accuracy
        ss.layer, ss.head = most_important_head(cache)
        ss._head_default_for = path
    ss.layer = min(ss.layer, cache.n_layers - 1)
    ss.head = min(ss.head, cache.n_heads - 1)
    ss.pc = min(ss.pc, cache.n_pcs - 1)
    try:
        ss.mask.check_fits(cache.n_layers, cache.n_heads, cache.n_pcs)
    except ValueError as err:
        st.warning(plain(f"{err}; starting from no ablation"))
        ss.mask = type(ss.mask)()
    return cache


@st.cache_data(show_spinner="drawing the map …", max_entries=32)
def head_map(path: str, unit: int, method: str):
    """(rows, xy, axis titles) of one head's 2-D map (residual_core.analysis.geometry.head_map_2d), once per choice."""
    from residual_core.analysis.geometry import head_map_2d

    return head_map_2d(get_cache(path), unit, method)


def image_key(image) -> str:
    """The one key of an image for the probe's cache: its pixels, size and mode."""
    import hashlib

    return f"{hashlib.sha256(image.tobytes()).hexdigest()}:{image.size}:{image.mode}"


def probe(cache: Cache, images: list):
    """The probe of ``images`` on ``cache`` (residual_core.read.probe), once per set of images: a widget change
    reuses it, and every page and slide keys it the same way."""
    spec = cache.manifest["spec"]
    return probe_cached(str(cache.path), spec["model"], bool(spec.get("random_weights")), int(spec.get("seed", 0)),
                         tuple(image_key(im) for im in images), images)


@st.cache_resource(show_spinner="decomposing …", max_entries=16, ttl=600)
def probe_cached(cache_path: str, model: str, random_weights: bool, seed: int, keys: tuple[str, ...], _images: list):
    from residual_core.read.probe import probe_images

    return probe_images(get_model(model, random_weights, seed), get_cache(cache_path), _images)


@st.cache_resource(show_spinner="reading every image as the model does …", max_entries=8)
def image_reader(path: str, model: str, random_weights: bool, seed: int):
    """Every image of the cache read zero-shot in each family of texts (explain/image_labels.py), once per cache:
    with the model's text tower on the demo world (each factor), else the cache's own classes (no model)."""
    from residual_core.engine.models import ModelLoadError
    from residual_core.explain.image_labels import families_for, read_images

    cache = get_cache(path)
    try:
        loaded = get_model(model, random_weights, seed)
    except (ModelLoadError, ValueError):  # the weights are not here: the cache's classes still read its images
        loaded = None
    return read_images(cache, families_for(cache, loaded))


def unit_labels(cache: Cache, units: list) -> tuple:
    """(label, doubt) of each unit (explain/scorecard.Unit): what the full model reads in its top images
    (explain/image_labels.py), and the ground truth's doubt about that label where there is one (else None)."""
    from dataclasses import replace

    from residual_core.explain.scorecard_run import label_doubts

    spec = cache.manifest["spec"]
    reader = image_reader(str(cache.path), spec["model"], bool(spec.get("random_weights")), int(spec.get("seed", 0)))
    labels = [reader.label(u.scores) for u in units]
    doubts = label_doubts(cache, [replace(u, text=label.text) for u, label in zip(units, labels)])
    return tuple(zip(labels, (d if not label.abstains else None for d, label in zip(doubts, labels))))


def pole_labels(cache: Cache, unit: int, pc: int) -> tuple:
    """``unit_labels`` of both poles of PC ``pc`` of head index ``unit``."""
    from residual_core.explain.scorecard_run import pole_units

    return unit_labels(cache, list(pole_units(cache, unit, pc)))


@st.cache_resource(show_spinner="reading each head's first PC from its images …", max_entries=8)
def head_pole_words(path: str) -> tuple:
    """[n_layers][n_heads] "PC1 + label; PC1 − label" of every head: what the whole model reads in the top images of
    its first PC's two poles (the labels the Head explorer shows), once per cache."""
    from residual_core.explain.scorecard_run import pole_units

    cache = get_cache(path)
    spec = cache.manifest["spec"]
    reader = image_reader(path, spec["model"], bool(spec.get("random_weights")), int(spec.get("seed", 0)))
    cells = []
    for u in range(cache.units.n_heads_total):
        labels = [reader.label(unit.scores) for unit in pole_units(cache, u, 0)]
        cells.append("; ".join(f"{sign} {label.text or 'no clear label'}" for sign, label in zip("+−", labels)))
    return tuple(tuple(cells[l * cache.n_heads:(l + 1) * cache.n_heads]) for l in range(cache.n_layers))


@st.cache_resource(show_spinner="reading every head in words (TextSpan on the cache's PCA) …", max_entries=8)
def head_texts(path: str, m: int = 10) -> tuple:
    """Every head's TextSpan texts (residual_core.explain.describe.textspan), once per cache: no image is read."""
    from residual_core.explain.describe import textspan

    return textspan(get_cache(path), m)


@st.cache_resource(show_spinner="reading every head from its weights …", max_entries=4)
def head_weights(path: str, model: str, random_weights: bool, seed: int) -> tuple:
    """Every head's write directions in words (residual_core.explain.weights_reading), against the cache's own text bank."""
    from residual_core.explain.weights_reading import read_weights

    return read_weights(get_model(model, random_weights, seed).model, get_cache(path).text_embeds)


@st.cache_data(show_spinner="encoding the concept with the model's text tower …", max_entries=64)
def concept_embedding(model: str, random_weights: bool, seed: int, texts: tuple[str, ...]):
    """[len(texts), d_embed] L2-normalised text embeddings: run on a press of Search, never on a widget change."""
    from residual_core.engine.zeroshot import embed_texts

    return embed_texts(get_model(model, random_weights, seed), list(texts)).numpy()
