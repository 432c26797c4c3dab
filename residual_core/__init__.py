"""ResiDual engine: exact per-head decomposition of CLIP ViTs (open_clip, transformers), per-head PCA,
zero-shot and ablation.

Public API (re-exported here; importing has no side effects and loads nothing heavy: each name imports its
module, and with it torch and the model libraries, on first use):
  load_clip, parse_model_spec            -> LoadedClip, ModelSpec
  decompose_images                       -> ResidualDecomposition (Σ units == encode_image)
  precompute, PrecomputeSpec             -> a verified cache folder
  load_cache                             -> Cache (memory-mapped read side for the dashboard)
  AblationMask, evaluate, ablate_embeddings, LogitState, probe_images, head_metrics
  align, split_caches, specialize        -> the paper's λ training and head scores on caches
The layers below (engine/, data/, build/, read/, analysis/, explain/, cli/, bench/) say what each owns.
"""

import importlib

__version__ = "0.1.0"

_HOMES = {
    "residual_core.engine.models": ("LoadedClip", "ModelLoadError", "ModelSpec", "load_clip", "parse_model_spec"),
    "residual_core.engine.decompose": ("DecompositionError", "ResidualDecomposition", "UnsupportedModelError",
                                       "decompose_images"),
    "residual_core.engine.units": ("UnitTable",),
    "residual_core.build.pipeline": ("PrecomputeSpec", "precompute"),
    "residual_core.read.cache": ("Cache", "head_metrics", "load_cache"),
    "residual_core.read.ablation": ("AblationMask", "AblationResult", "AblationSummary", "ablate_embeddings",
                                    "evaluate", "evaluate_streamed"),
    "residual_core.read.live": ("LogitState",),
    "residual_core.read.probe": ("ProbeResult", "probe_images"),
    "residual_core.analysis.align": ("align",),
    "residual_core.analysis.align_results": ("split_caches",),
    "residual_core.analysis.specialize": ("specialize",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = list(_HOME_OF)


def __getattr__(name: str):
    """PEP 562: a public name is imported from its home on first use (``python -m residual_core models`` then
    lists without importing torch)."""
    if name not in _HOME_OF:
        raise AttributeError(f"module 'residual_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
