"""ResiDual engine: exact per-head decomposition of CLIP ViTs (open_clip, transformers), per-head PCA,
zero-shot and ablation.

Public API (re-exported here; importing has no side effects):
  load_clip, parse_model_spec            -> LoadedClip, ModelSpec
  decompose_images                       -> ResidualDecomposition (Σ units == encode_image)
  precompute, PrecomputeSpec             -> a verified cache folder
  load_cache                             -> Cache (memory-mapped read side for the dashboard)
  AblationMask, evaluate, ablate_embeddings, LogitState, probe_images
"""

__version__ = "0.1.0"

from residual_core.models import LoadedClip, ModelLoadError, ModelSpec, load_clip, parse_model_spec  # noqa: E402
from residual_core.decompose import (  # noqa: E402
    DecompositionError, ResidualDecomposition, UnsupportedModelError, decompose_images,
)
from residual_core.units import UnitTable  # noqa: E402
from residual_core.pipeline import PrecomputeSpec, precompute  # noqa: E402
from residual_core.cache import Cache, load_cache  # noqa: E402
from residual_core.ablation import (  # noqa: E402
    AblationMask, AblationResult, AblationSummary, ablate_embeddings, evaluate, evaluate_streamed)
from residual_core.live import LogitState  # noqa: E402
from residual_core.probe import ProbeResult, probe_images  # noqa: E402

__all__ = [
    "LoadedClip", "ModelLoadError", "ModelSpec", "load_clip", "parse_model_spec", "DecompositionError",
    "ResidualDecomposition", "UnitTable", "UnsupportedModelError", "decompose_images", "PrecomputeSpec",
    "precompute", "Cache", "load_cache", "AblationMask", "AblationResult", "AblationSummary", "LogitState",
    "ablate_embeddings", "evaluate", "evaluate_streamed", "ProbeResult", "probe_images",
]
