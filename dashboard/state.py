"""View state shared by all pages: session defaults, the URL query string, cached loaders."""

import base64
import json
import zlib
from pathlib import Path

import streamlit as st

from residual_core.ablation import AblationMask
from residual_core.cache import Cache, load_cache
from residual_core.models import LoadedClip, load_clip, parse_model_spec
from residual_core.pipeline import DEFAULT_DATASET, DEFAULT_MODEL, PrecomputeSpec, cached_path, default_cache_dir
from residual_core.store import MANIFEST, CacheError

DEFAULT_LIMIT = 2000
SHARED_KEYS = ("model", "dataset", "split", "limit", "layer", "head", "pc", "metric", "basis_from")
FALLBACK_MODEL = "tiny-random"  # when the demo weights are missing: clearly labelled random weights


def default_model() -> str:
    from residual_core.models import ASSETS, SHORT_NAMES

    return DEFAULT_MODEL if (ASSETS / SHORT_NAMES[DEFAULT_MODEL].pretrained).is_file() else FALLBACK_MODEL


def encode_mask(mask: AblationMask) -> str:
    raw = json.dumps(mask.to_dict(), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def decode_mask(text: str) -> AblationMask:
    padded = text + "=" * (-len(text) % 4)
    return AblationMask.from_dict(json.loads(zlib.decompress(base64.urlsafe_b64decode(padded))))


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
    qp = st.query_params
    ss.model = qp.get("model", default_model())
    ss.dataset = qp.get("dataset", DEFAULT_DATASET)
    ss.split = qp.get("split", "test")
    ss.limit = int(qp.get("n", DEFAULT_LIMIT))
    ss.layer = int(qp.get("layer", 0))
    ss.head = int(qp.get("head", 0))
    ss.pc = int(qp.get("pc", 0))
    ss.metric = qp.get("metric", "accuracy_alone")
    ss.basis_from = qp.get("basis") or None  # PCA basis of another cache (the Alignment page's train split)
    try:
        ss.mask = decode_mask(qp["mask"]) if "mask" in qp else AblationMask()
    except (ValueError, KeyError, zlib.error, json.JSONDecodeError):
        ss.mask = AblationMask()
        ss.url_warning = "the ablation mask in the link could not be read; starting from no ablation"
    for key in SHARED_KEYS:
        ss[f"_keep_{key}"] = ss[key]
    ss._initialised = True


def write_url() -> None:
    ss = st.session_state
    params = {"model": ss.model, "dataset": ss.dataset, "split": ss.split, "n": str(ss.limit),
              "layer": str(ss.layer), "head": str(ss.head), "pc": str(ss.pc), "metric": ss.metric}
    if not ss.mask.is_empty:
        params["mask"] = encode_mask(ss.mask)
    if ss.get("basis_from"):
        params["basis"] = ss.basis_from
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def view_state() -> dict:
    ss = st.session_state
    return {"model": ss.model, "dataset": ss.dataset, "split": ss.split, "n_images": ss.limit, "layer": ss.layer,
            "head": ss.head, "pc": ss.pc, "metric": ss.metric, "mask": ss.mask.to_dict(),
            "cache": str(ss.get("cache_path", "")), "cache_key": ss.get("cache_key", "")}


def current_spec() -> PrecomputeSpec:
    ss = st.session_state
    return PrecomputeSpec(model=ss.model, dataset=ss.dataset, split=ss.split, limit=ss.limit or None,
                          cache_dir=default_cache_dir(), basis_from=ss.get("basis_from") or None)


@st.cache_data(show_spinner="checking the cache …", max_entries=64)
def find_cache(spec: PrecomputeSpec) -> str | None:
    found = cached_path(spec)
    return str(found) if found else None


@st.cache_resource(show_spinner="opening the cache …", max_entries=8)
def get_cache(path: str) -> Cache:
    # One memory-mapped instance per process, shared by all browser sessions; never mutated.
    return load_cache(path)


@st.cache_resource(show_spinner="loading the model …", max_entries=2)
def get_model(model: str, random_weights: bool = False, seed: int = 0) -> LoadedClip:
    return load_clip(parse_model_spec(model, random_weights, seed))


def list_caches(cache_dir: str | None = None) -> list[dict]:
    rows = []
    for manifest in sorted(Path(cache_dir or default_cache_dir()).glob(f"*/{MANIFEST}")):
        try:
            data = json.loads(manifest.read_text())
            spec = data["spec"]
            rows.append({"path": str(manifest.parent), "model": spec["model"], "dataset": spec["dataset"],
                         "split": spec["split"], "n_images": data["n_images"],
                         "shape": (data["arch"]["n_layers"], data["arch"]["n_heads"]),
                         "weights": str(data.get("inputs", {}).get("weights", ""))[:12],  # tells checkpoints apart
                         "accuracy": round(data["zeroshot_accuracy"], 4)})
        except (OSError, KeyError, json.JSONDecodeError):
            continue
    return rows


def active_cache() -> Cache | None:
    """The cache of the current spec, or None (the sidebar explains what to do)."""
    path = st.session_state.get("cache_path")
    if not path:
        return None
    try:
        cache = get_cache(path)
    except CacheError as err:
        st.error(f"The cache could not be opened: {err}")
        return None
    ss = st.session_state
    ss.layer = min(ss.layer, cache.n_layers - 1)
    ss.head = min(ss.head, cache.n_heads - 1)
    ss.pc = min(ss.pc, cache.n_pcs - 1)
    return cache


@st.cache_data(show_spinner="computing the 2-D map (once per head) …", max_entries=64)
def embedding_2d(path: str, unit: int, method: str):
    """[n_images, 2] coordinates of one head's contributions, and the axis titles."""
    from residual_core.cache import as_f32

    cache = get_cache(path)
    scores = as_f32(cache.head_scores[unit])  # [n_pcs, n_images]
    if method.startswith("PCA"):
        return scores[:2].T.copy(), ("PC1 coefficient", "PC2 coefficient")
    import umap

    reducer = umap.UMAP(n_components=2, random_state=0, n_neighbors=15, min_dist=0.1)
    return reducer.fit_transform(scores.T), ("UMAP 1", "UMAP 2")


def page_cache(title: str) -> Cache:
    """Every page's prologue: its title, then the active cache (or a hint and a stop)."""
    st.title(title)
    cache = active_cache()
    if cache is None:
        st.info("Pick a model and dataset in the sidebar; the cache is built once.")
        st.stop()
    return cache


@st.cache_resource(show_spinner="decomposing …", max_entries=16)
def probe_cached(cache_path: str, model: str, random_weights: bool, seed: int, digests: tuple[str, ...],
                 _images: list):
    """Probe once per set of images: widget changes on the probe page reuse the result (no model call)."""
    from residual_core.probe import probe_images

    return probe_images(get_model(model, random_weights, seed), get_cache(cache_path), _images)
