"""The paper's analyses on cached coefficients: head specialisation, geometry, and λ alignment.

Owns: head scores and top-k curves (specialize), intrinsic dimension and spectral cosines (geometry), ResiDual λ
and its baselines (align, adapters), saved results and split caches (align_results).
May import: engine/, data/, build/, read/.
"""
