"""The engine: a CLIP ViT loaded through one model-family seam and split exactly into per-unit contributions.

Owns: model specs and loading (models, families/), the decomposition (decompose), per-token terms at CLS (tokens),
unit names and indices (units), per-head PCA from mergeable moments (pca), class and text embeddings (zeroshot),
the text bank (textbank), progress reporting (progress). May import: nothing of residual_core outside engine/.
"""
