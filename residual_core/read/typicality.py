"""Is a new image like the cache's own? Three Mahalanobis distances, fitted and calibrated on the cache.

The probe explains an image through the heads' PCs, which were fitted on the cached images: for an image unlike
them (a photograph against a world of drawn scenes, a lone digit) those coordinates describe where it falls
outside what the PCs know, and the explanation may not transfer. Three views of "unlike", each a Ledoit-Wolf
Gaussian (scikit-learn's shrinkage covariance, stable when dimensions approach the images):
  * the L2-normalised image embedding (what the classifier reads);
  * every head's top PC coefficients, concatenated (what the explanation reads), at most MAX_DIMS numbers;
  * the image's own pixels, as the cache keeps them (its thumbnail): the share of pixels in each of 64 colour
    cells and of neighbour differences in each of 8 steps. The model's views miss some photo crops (a crop of
    sky or wall reads like a plain scene), whose pixels are nothing like drawn scenes: the colours are continuous
    and every step between neighbours occurs.
Each is fitted on one half of a sample of the cached images and calibrated on the other half, which it did not
see, by a normal on their log distances: its mean and spread for the model's two views; for the pixels, the normal
through the held-out 90th and 99th percentiles, whose tail is heavier than a normal through the bulk (matched on
the bulk, the pixel view alone raised 1.2-2.1 % false alarms at ALARM; docs/measurements.md). An image's
typicality is the smallest share, over the three views, of held-out cached images further away than it, times
three (Bonferroni: the chance that any of the three views alarms on an image like the cache's stays about ALARM);
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
ALARM = 0.004  # on the continuous tail, all views together: held-out false alarms (docs/measurements.md)
MIN_THUMB = 8  # thumbnails smaller than this (an in-memory cache keeps 1 × 1 placeholders) leave the pixel view out
COLOUR_CELLS = 4  # per channel: 64 colour cells
STEPS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.1)  # edges of a neighbour difference (sum over RGB in [0, 1])


@dataclass(frozen=True)
class _View:
    mean: np.ndarray  # [d]
    precision: np.ndarray  # [d, d]
    log_centre: float  # the normal matched to the held-out cached images' log squared distances (its tail)
    log_scale: float

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

        z = (np.log(np.maximum(self.distance(x), 1e-300)) - self.log_centre) / self.log_scale
        return ndtr(-z)


@dataclass(frozen=True)
class TypicalityModel:
    embedding: _View
    heads: _View
    pcs_per_head: int

    pixels: _View | None  # None: the cache keeps no thumbnails (an in-memory cache)

    def typicality(self, embeddings: np.ndarray, scores: np.ndarray, thumbs: np.ndarray) -> np.ndarray:
        """embeddings [n, E] (any norm), scores [n, n_heads_total, n_pcs] in the cache's basis, thumbs [n, t, t, 3]
        uint8 as the cache makes them (``thumbnail``) -> [n] in [0, 1]."""
        emb = _unit_rows(embeddings)
        heads = np.asarray(scores, np.float64)[:, :, :self.pcs_per_head].reshape(len(scores), -1)  # [n, U·k]
        views = [self.embedding.share_further(emb), self.heads.share_further(heads)]
        if self.pixels is not None:
            views.append(self.pixels.share_further(pixel_features(thumbs)))
        return np.minimum(len(views) * np.minimum.reduce(views), 1.0)


def thumbnail(image, size: int) -> np.ndarray:
    """[size, size, 3] uint8: an image as the cache's thumbnails are made (build/shards.py)."""
    from PIL import ImageOps

    return np.asarray(ImageOps.fit(image.convert("RGB"), (size, size)), dtype=np.uint8)


def pixel_features(thumbs: np.ndarray) -> np.ndarray:
    """thumbs [n, t, t, 3] uint8 -> [n, 64 + 8]: the square roots of the shares of pixels in each colour cell and of
    horizontal and vertical neighbour differences in each step (square roots: a Gaussian fits shares better)."""
    x = np.asarray(thumbs, np.float64) / 255.0  # [n, t, t, 3]
    n, cells = len(x), COLOUR_CELLS
    q = np.minimum((x * cells).astype(np.int64), cells - 1)  # [n, t, t, 3] each channel's cell
    cell = (q[..., 0] * cells + q[..., 1]) * cells + q[..., 2]  # [n, t, t]
    flat = (cell.reshape(n, -1) + cells ** 3 * np.arange(n)[:, None]).ravel()
    colours = np.bincount(flat, minlength=n * cells ** 3).reshape(n, cells ** 3) / cell[0].size  # [n, 64]
    steps = np.concatenate([np.abs(np.diff(x, axis=2)).sum(-1).reshape(n, -1),
                            np.abs(np.diff(x, axis=1)).sum(-1).reshape(n, -1)], axis=1)  # [n, 2·t·(t−1)]
    which = np.clip(np.searchsorted(STEPS, steps, side="right") - 1, 0, len(STEPS) - 2)  # [n, 2·t·(t−1)]
    flat = (which + (len(STEPS) - 1) * np.arange(n)[:, None]).ravel()
    diffs = np.bincount(flat, minlength=n * (len(STEPS) - 1)).reshape(n, -1) / steps.shape[1]  # [n, 8]
    return np.sqrt(np.concatenate([colours, diffs], axis=1))


def _unit_rows(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, np.float64)
    return array / np.linalg.norm(array, axis=1, keepdims=True).clip(1e-12)


def _fit(features: np.ndarray, fit: np.ndarray, cal: np.ndarray, tail: bool = False) -> _View:
    """A Gaussian fitted on rows ``fit`` of features [n, d], calibrated on rows ``cal``: the log distances'
    normal by their mean and spread, or (``tail``) the normal through their 90th and 99th percentiles."""
    from sklearn.covariance import LedoitWolf

    from scipy.special import ndtri

    model = LedoitWolf().fit(features[fit])
    centred = features[cal] - model.location_
    logs = np.log(np.maximum(np.einsum("nd,de,ne->n", centred, model.precision_, centred), 1e-300))
    if not tail:
        return _View(model.location_, model.precision_, float(logs.mean()), float(max(logs.std(), 1e-6)))
    low, high = np.percentile(logs, [90, 99])  # the normal through both: its tail, not its bulk, matches theirs
    scale = max((high - low) / (ndtri(0.99) - ndtri(0.90)), 1e-6)
    return _View(model.location_, model.precision_, float(low - ndtri(0.90) * scale), float(scale))


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
    pixels = None
    if cache.thumbs.shape[1] >= MIN_THUMB:
        features = pixel_features(np.asarray(cache.thumbs[rows]))  # [n, 72]
        pixels = _fit(features, fit, cal, tail=True)
    return TypicalityModel(_fit(emb, fit, cal), _fit(heads, fit, cal), k, pixels)
