"""Heads in words: TextSpan on the cache's PCA, and concept search over the heads.

TextSpan (Gandelsman et al., ICLR 2024; clip_text_span ``compute_complete_text_set.py``) picks, for one head, the
text along which the head's centred contributions vary most, removes that direction from the data and from every
text, and repeats. The variance along a text t is tᵀ Σ_h t, and Σ_h = V_hᵀ diag(λ_h) V_h is what the cache's PCA
holds, so the whole selection runs in PC coordinates, a = V_h t, without reading an image:
  score_j = Σ_k λ_k a_jk²     (the deflated text, not renormalised: TextSpan's own rule)
  pick j*, u = a_j*/‖a_j*‖, then a_j ← a_j − (a_j·u) u for every text
and each pick explains uᵀ diag(λ) u of tr diag(λ) (the deflated u are orthonormal, so the shares add up).
Differences from TextSpan's script, named in docs/conventions.md: texts are projected on the span of the head's
centred contributions (its PCs), not on the top-80 singular vectors of the uncentred data; completeness replaces
every head by its projection on its texts' span (emb and MLPs kept) instead of mean-ablating all but the last
layers; the bank is the cache's own.

Concept search: a concept is one or more texts with orthonormal basis Q; a head's share of variance along it is
tr(Qᵀ Σ_h Q) / tr Σ_h, and the PCs that carry it are those with the largest λ_k ‖V_h[k] Q‖².
"""

from dataclasses import dataclass

import numpy as np

from residual_core.read.cache import Cache

from residual_core.build.store import copy_f32
from residual_core.engine.units import head_label

DEFAULT_TEXTS = 10


@dataclass(frozen=True)
class HeadTexts:
    """One head's TextSpan reading: the texts in the order chosen, with the share of variance each explains."""

    layer: int
    head: int
    texts: tuple[int, ...]  # indices into the cache's text bank, in the order picked
    explained: tuple[float, ...]  # share of the head's variance each pick removes (they add up)
    basis: np.ndarray  # [m, n_pcs] the picked directions in PC coordinates, orthonormal rows

    @property
    def cumulative(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.cumsum(self.explained))

    @property
    def label(self) -> str:
        return head_label(self.layer, self.head)


def bank_in_pcs(cache: Cache, unit: int) -> np.ndarray:
    """[n_texts, n_pcs] the text bank's embeddings in one head's PC coordinates (their projection on its span)."""
    bank = np.asarray(cache.text_embeds, np.float64)  # [n_texts, d_embed]
    return bank @ np.asarray(cache.head_components[unit], np.float64).T


def textspan_pcs(coords: np.ndarray, eigenvalues: np.ndarray, m: int) -> tuple[list[int], list[float], np.ndarray]:
    """TextSpan's greedy selection in PC coordinates: coords [n_texts, k], eigenvalues [k] ->
    (picked rows, explained shares, basis [m, k])."""
    a = np.array(coords, np.float64, copy=True)  # [n_texts, k], deflated in place
    lam = np.clip(np.asarray(eigenvalues, np.float64), 0, None)  # [k]
    total = max(float(lam.sum()), 1e-300)
    picked, shares, basis = [], [], []
    for _ in range(min(m, len(a), len(lam))):
        scores = (a * a) @ lam  # [n_texts] variance along each deflated text
        scores[picked] = -np.inf  # a picked text is deflated to zero; never pick it twice
        j = int(np.argmax(scores))
        norm = float(np.linalg.norm(a[j]))
        if norm < 1e-12:
            break  # every text left is orthogonal to the head's remaining variance
        u = a[j] / norm  # [k]
        picked.append(j)
        shares.append(float(u @ (lam * u)) / total)
        basis.append(u)
        a -= np.outer(a @ u, u)
    return picked, shares, np.array(basis).reshape(len(basis), len(lam))


def textspan(cache: Cache, m: int = DEFAULT_TEXTS, units=None) -> tuple[HeadTexts, ...]:
    """TextSpan for every head (or ``units``, head indices), from the cache's PCA and text bank alone."""
    require_bank(cache)
    out = []
    for unit in range(cache.units.n_heads_total) if units is None else units:
        picked, shares, basis = textspan_pcs(bank_in_pcs(cache, unit), cache.head_eigenvalues[unit], m)
        out.append(HeadTexts(*cache.units.head_at(unit), tuple(picked), tuple(shares), basis))
    return tuple(out)


def require_bank(cache: Cache) -> None:
    """ValueError (one line) when the cache holds no usable text bank embeddings."""
    bank = np.asarray(cache.text_embeds)
    if bank.ndim == 2 and len(bank) < 2:
        raise ValueError(f"this cache's text bank holds {len(bank)} text; describing a head needs at least 2: pass a "
                         "bank of more descriptions with --text-bank FILE (one per line)")
    if bank.ndim != 2 or not np.isfinite(bank).all() or not np.abs(bank).sum():
        raise ValueError("this cache has no text bank embeddings to describe heads with; rebuild it with precompute "
                         "(it embeds assets/text_bank.txt, or --text-bank FILE)")


def completeness(cache: Cache, readings: tuple[HeadTexts, ...], counts: list[int]) -> list[float]:
    """Zero-shot accuracy with every described head replaced by its projection on its first m texts' span (its
    mean kept), for each m in ``counts``; through the ablation engine."""
    from residual_core.read.ablation import evaluate_projected

    out = []
    for m in counts:
        bases = {cache.head_index(r.layer, r.head): r.basis[:m] for r in readings}
        out.append(evaluate_projected(cache, bases).accuracy)
    return out


@dataclass(frozen=True)
class ConceptHead:
    layer: int
    head: int
    share: float  # of the head's variance along the concept
    strength: float  # that variance itself (joint-space units²): a head can be all concept yet write it weakly
    pcs: tuple[int, ...]  # the PCs that carry it, most first
    pc_shares: tuple[float, ...]  # each one's part of the head's variance along the concept


MAX_QUERY_CHARS = 300


def check_query(text: str) -> str:
    """A free-text concept, stripped; ValueError (one line) for an empty, overlong or letterless one."""
    text = " ".join(str(text).split())
    if not text:
        raise ValueError("the concept is empty: type a few words, e.g. 'a red object'")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(f"the concept is {len(text):,} characters; describe it in at most {MAX_QUERY_CHARS}")
    if not any(ch.isalpha() for ch in text):
        raise ValueError(f"the concept {text[:40]!r} has no words; type a few words, e.g. 'a red object'")
    return text


def concept_basis(embeddings: np.ndarray) -> np.ndarray:
    """[r, d_embed] text embeddings -> [d_embed, r'] an orthonormal basis of their span."""
    q, r = np.linalg.qr(np.asarray(embeddings, np.float64).T)
    keep = np.abs(np.diag(r)) > 1e-8 * max(np.abs(np.diag(r)).max(), 1e-300)
    return q[:, keep]


def search_heads(cache: Cache, embeddings: np.ndarray, top_pcs: int = 3) -> tuple[ConceptHead, ...]:
    """Every head ranked by its share of variance along the concept's span (embeddings [r, d_embed])."""
    q = concept_basis(embeddings)  # [d_embed, r]
    rows = []
    for unit in range(cache.units.n_heads_total):
        lam = np.clip(np.asarray(cache.head_eigenvalues[unit], np.float64), 0, None)  # [k]
        along = lam * ((np.asarray(cache.head_components[unit], np.float64) @ q) ** 2).sum(1)  # [k]
        strength = float(along.sum())
        order = np.argsort(-along, kind="stable")[:top_pcs]
        rows.append(ConceptHead(*cache.units.head_at(unit), strength / max(float(lam.sum()), 1e-300), strength,
                                tuple(int(k) for k in order),
                                tuple(float(along[k]) / max(strength, 1e-300) for k in order)))
    return tuple(sorted(rows, key=lambda r: -r.share))


NOISE_WORDS = ("is at noise level here: the best head, {head}, has {best:.1%} of its variance along it, no more than "
               "the best head along a random direction of the same rank ({q99:.1%} at the 99th percentile, {median:.1%} "
               "typical); the heads and images below are not evidence that this model encodes it")


@dataclass(frozen=True)
class ConceptNoise:
    """What the best head's share would be along a random concept of the same rank: the null a search is read against."""

    best_share: float  # the best head's share along the concept
    random_q99: float  # 99th percentile, over random subspaces of the concept's rank, of the best head's share
    random_median: float

    @property
    def at_noise(self) -> bool:
        return self.best_share <= self.random_q99

    def words(self, concept: str, head: str) -> str:
        """One sentence for a concept at noise level."""
        return f"“{concept}” " + NOISE_WORDS.format(head=head, best=self.best_share, q99=self.random_q99,
                                                    median=self.random_median)


def concept_noise(cache: Cache, embeddings: np.ndarray, n_random: int = 200, seed: int = 0) -> ConceptNoise:
    """The best head's share along the concept against the best share along ``n_random`` random subspaces of the
    same rank (uniform on the sphere: seeded Gaussian columns, orthonormalised). A concept the model has no head for
    ("stripes" where nothing is striped) scores no better than those."""
    rank = concept_basis(embeddings).shape[1]
    comps = np.asarray(cache.head_components, np.float64)  # [U, k, d_embed]
    lam = np.clip(np.asarray(cache.head_eigenvalues, np.float64), 0, None)  # [U, k]
    total = lam.sum(1).clip(1e-300)  # [U]
    draws = max(20, n_random // max(1, rank // 8))  # a wide concept (hundreds of classes): fewer, costlier draws
    rng = np.random.default_rng(seed)
    best = np.empty(draws)
    for i in range(draws):
        q, _ = np.linalg.qr(rng.standard_normal((comps.shape[2], rank)))  # [d_embed, rank]
        along = np.einsum("uk,ukr->u", lam, np.einsum("ukd,dr->ukr", comps, q) ** 2)  # [U]
        best[i] = (along / total).max()
    first = search_heads(cache, embeddings, top_pcs=1)[0].share
    return ConceptNoise(float(first), float(np.quantile(best, 0.99)), float(np.median(best)))


def retrieve(cache: Cache, heads: list[tuple[int, int]], embeddings: np.ndarray, top: int = 12) -> np.ndarray:
    """Rows of the ``top`` images whose combined contribution of ``heads`` points most toward the concept (the
    largest cosine with any of its texts): property-based retrieval, from the cache alone."""
    texts = np.asarray(embeddings, np.float64)
    texts = texts / np.linalg.norm(texts, axis=1, keepdims=True).clip(1e-12)  # [r, d_embed]
    total = np.zeros((cache.n_images, cache.output.shape[1]))  # [n, d_embed]
    for layer, head in heads:
        unit = cache.head_index(layer, head)
        total += cache.head_mean[unit] + copy_f32(cache.head_scores[unit]).T @ cache.head_components[unit]
    cos = (total @ texts.T) / np.linalg.norm(total, axis=1, keepdims=True).clip(1e-12)  # [n, r]
    return np.argsort(-cos.max(1), kind="stable")[:top]


REFERENCE_RANK = 80  # TextSpan's --w_ov_rank: the top singular vectors of a head's data that its texts are projected on


def head_data(cache: Cache, unit: int) -> np.ndarray:
    """[n_images, d_embed] one head's contributions, each image's divided by the norm of its embedding (TextSpan's
    normalisation: its hook returns the projected residual stream over ‖encode_image‖)."""
    scores = copy_f32(cache.head_scores[unit]).astype(np.float64)  # [n_pcs, n]
    data = cache.head_mean[unit].astype(np.float64) + scores.T @ cache.head_components[unit].astype(np.float64)
    norms = np.linalg.norm(np.asarray(cache.output, np.float64), axis=1, keepdims=True)  # [n, 1]
    return data / np.maximum(norms, 1e-30)


def textspan_reference(cache: Cache, m: int = DEFAULT_TEXTS, rank: int = REFERENCE_RANK,
                       units=None) -> tuple[HeadTexts, ...]:
    """TextSpan under its own convention (clip_text_span ``compute_complete_text_set.py``): each head's data
    normalised per image (``head_data``), the bank projected on the span of the top ``rank`` right singular vectors
    of the uncentred data, then on the centred data: pick the text whose projection has the largest standard
    deviation, remove its direction from the data and from every text, repeat. ``explained``: the share of the
    centred data's variance each pick removes; ``basis``: the picked directions in PC coordinates, orthonormalised."""
    require_bank(cache)
    bank = np.asarray(cache.text_embeds, np.float64)  # [n_texts, d_embed]
    out = []
    for unit in range(cache.units.n_heads_total) if units is None else units:
        data = head_data(cache, unit)  # [n, d]
        _, _, vh = np.linalg.svd(data, full_matrices=False)
        span = vh[:rank]  # [r, d] orthonormal rows: (vh vhᵀ)⁻¹ = I, so the projector is spanᵀ span
        texts = (bank @ span.T) @ span  # [n_texts, d]
        data = data - data.mean(0, keepdims=True)
        total = max(float((data ** 2).sum()), 1e-300)
        picked, shares, directions = [], [], []
        for _ in range(min(m, len(texts))):
            spread = (data @ texts.T).std(0, ddof=1)  # [n_texts] torch's std: the n − 1 estimate
            j = int(np.argmax(spread))
            text = texts[j].copy()  # [d] the picked text as deflated so far
            norm2 = float(text @ text)
            if norm2 < 1e-30:
                break
            along = data @ text / norm2  # [n]
            data = data - np.outer(along, text)
            texts = texts - np.outer(texts @ text / norm2, text)
            picked.append(j)
            shares.append(float((along ** 2).sum() * norm2) / total)
            directions.append(text / np.sqrt(norm2))
        coords = np.asarray(directions).reshape(len(directions), -1) @ cache.head_components[unit].T.astype(np.float64)
        basis = np.linalg.qr(coords.T)[0].T if len(coords) else coords.reshape(0, cache.n_pcs)  # [m, n_pcs]
        out.append(HeadTexts(*cache.units.head_at(unit), tuple(picked), tuple(shares), basis))
    return tuple(out)
