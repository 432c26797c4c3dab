"""Is a new image like the cache's own? Two Mahalanobis distances, fitted and calibrated on the cache.

The probe explains an image through the heads' PCs, which were fitted on the cached images: for an image unlike
them (a photograph against a world of drawn scenes, a lone digit) those coordinates describe where it falls
outside what the PCs know, and the explanation may not transfer. Two views of "unlike", each a Ledoit-Wolf
Gaussian (scikit-learn's shrinkage covariance, stable when dimensions approach the images):
  * the L2-normalised image embedding (what the classifier reads);
  * every head's top PC coefficients, concatenated (what the explanation reads), at most MAX_DIMS numbers.
Both are fitted on one half of a sample of the cached images and calibrated on the other half, which they did not
see. An image's typicality is the smaller share, over the two, of held-out cached images further away than it;
the probe warns below ALARM. How well it separates (false alarms on held-out scenes, hits on real photographs and
digits, against the nearest-neighbour cosine it replaced) is measured by ``python tools/typicality_check.py`` and
recorded in docs/measurements.md.
"""

from dataclasses import dataclass

import numpy as np

from residual_core.read.cache import Cache

from residual_core.build.store import copy_f32

MAX_FIT = 4_000  # cached images the Gaussians are fitted on (a seeded sample beyond it)
MAX_CAL = 2_000  # held-out cached images the distances are calibrated on
MAX_DIMS = 1_024  # head coefficients kept: each head's top PCs up to this many numbers in all
ALARM = 0.004  # per view, on the continuous tail: held-out false alarms 0.4-1.0 % over refits (docs/measurements.md)


@dataclass(frozen=True)
class _View:
    mean: np.ndarray  # [d]
    precision: np.ndarray  # [d, d]
    log_mean: float  # of the held-out cached images' log squared distances
    log_std: float

    def distance(self, x: np.ndarray) -> np.ndarray:
        """x [n, d] -> [n] squared Mahalanobis distances."""
        centred = x - self.mean
        return np.einsum("nd,de,ne->n", centred, self.precision, centred)

    def share_further(self, x: np.ndarray) -> np.ndarray:
        """x [n, d] -> [n] the share of held-out cached images expected further from the fit than each row: the
        normal tail of their log distances. Continuous and defined beyond the calibration set's range, so a photo
        far outside reads 1e-9, not 'one step of 1/n_cal', and a refit moves the threshold little (it rests on
        every held-out image's distance, not on the handful in the empirical 0.5 % tail)."""
        from scipy.special import ndtr

        z = (np.log(np.maximum(self.distance(x), 1e-300)) - self.log_mean) / self.log_std
        return ndtr(-z)


@dataclass(frozen=True)
class TypicalityModel:
    embedding: _View
    heads: _View
    pcs_per_head: int

    def typicality(self, embeddings: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """embeddings [n, E] (any norm), scores [n, n_heads_total, n_pcs] in the cache's basis -> [n] in [0, 1]."""
        emb = _unit_rows(embeddings)
        heads = np.asarray(scores, np.float64)[:, :, :self.pcs_per_head].reshape(len(scores), -1)  # [n, U·k]
        return np.minimum(self.embedding.share_further(emb), self.heads.share_further(heads))


def _unit_rows(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, np.float64)
    return array / np.linalg.norm(array, axis=1, keepdims=True).clip(1e-12)


def _fit(features: np.ndarray, fit: np.ndarray, cal: np.ndarray) -> _View:
    from sklearn.covariance import LedoitWolf

    model = LedoitWolf().fit(features[fit])
    centred = features[cal] - model.location_
    logs = np.log(np.maximum(np.einsum("nd,de,ne->n", centred, model.precision_, centred), 1e-300))
    return _View(model.location_, model.precision_, float(logs.mean()), float(max(logs.std(), 1e-6)))


_MODELS: dict[tuple[str, str], TypicalityModel] = {}


def typicality_model(cache: Cache, seed: int = 0) -> TypicalityModel:
    """Fitted on half of a seeded sample of the cache's images, calibrated on the other half; once per cache."""
    memo = (str(cache.path), str(cache.manifest.get("key", "")))
    if not memo[1]:  # an in-memory cache (tests, the bench) has no key to memoise by
        return fit(cache, seed)
    if memo not in _MODELS:
        _MODELS[memo] = fit(cache, seed)
    return _MODELS[memo]


def fit(cache: Cache, seed: int = 0) -> TypicalityModel:
    """A model fitted on half of a seeded sample of the cache's images and calibrated on the other half."""
    rng = np.random.default_rng(seed)
    n = min(cache.n_images, MAX_FIT + MAX_CAL)
    rows = np.sort(rng.choice(cache.n_images, n, replace=False))
    held_out = rng.permutation(n) < min(MAX_CAL, n // 2)  # [n] True: calibration, never fitted
    fit, cal = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    k = max(1, min(cache.n_pcs, MAX_DIMS // cache.units.n_heads_total))
    heads = np.concatenate([copy_f32(cache.head_scores[u, :k], (slice(None), rows)).T  # [n, k] a head at a time
                            for u in range(cache.units.n_heads_total)], axis=1).astype(np.float64)
    emb = _unit_rows(copy_f32(cache.output, rows))
    return TypicalityModel(_fit(emb, fit, cal), _fit(heads, fit, cal), k)
