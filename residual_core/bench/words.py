"""``python -m residual_core bench --words``: how long heads take to put into words (issue 24's figures).

TextSpan for all 144 heads of a ViT-B-32-shaped cache (2,048 texts, m = 20) at 2,000 and 50,000 images (it reads
the PCA, not the images, so the two should match); a concept query and the retrieval of its images; the data-free
reading of every head of ViT-B-32 (random weights) and of the demo model. Best of ``repeats`` runs each.
"""

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from residual_core.bench.timing import best_of


def _bank(n_texts: int, d_embed: int, seed: int = 0) -> np.ndarray:
    bank = np.random.default_rng(seed).standard_normal((n_texts, d_embed)).astype(np.float32)
    return bank / np.linalg.norm(bank, axis=1, keepdims=True)  # [n_texts, d_embed]


def run_words_bench(sizes: tuple[int, ...] = (2_000, 50_000), n_texts: int = 2_048, m: int = 20,
                    repeats: int = 3) -> dict:
    from residual_core.bench.core import synthetic_cache
    from residual_core.explain.describe import retrieve, search_heads, textspan
    from residual_core.engine.models import load_clip, parse_model_spec
    from residual_core.explain.weights_reading import read_weights

    report: dict = {"n_texts": n_texts, "texts_per_head": m}
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            cache = synthetic_cache(Path(tmp), n)
            evals = np.sort(np.random.default_rng(1).gamma(1.0, size=(cache.units.n_heads_total, cache.n_pcs)))[:, ::-1]
            cache = replace(cache, text_embeds=_bank(n_texts, cache.output.shape[1]), texts=tuple(map(str, range(n_texts))),
                            head_eigenvalues=np.ascontiguousarray(evals, np.float32))
            report[f"textspan_144_heads_s_{n}"] = round(best_of(lambda: textspan(cache, m), repeats), 3)
            concept = np.asarray(cache.text_embeds[:1])
            report[f"concept_query_s_{n}"] = round(best_of(lambda: search_heads(cache, concept), repeats), 4)
            top = [(r.layer, r.head) for r in search_heads(cache, concept)[:3]]
            report[f"retrieval_top3_heads_s_{n}"] = round(best_of(lambda: retrieve(cache, top, concept), repeats), 3)
    report |= image_label_timing(repeats=min(repeats, 2))
    for name, spec in (("vit_b_32_random", parse_model_spec("ViT-B-32", True, 0)), ("demo", "demo")):
        loaded = load_clip(spec, text=False)
        bank = _bank(n_texts, loaded.arch.d_embed)
        report[f"weights_reading_s_{name}"] = round(best_of(lambda: read_weights(loaded.model, bank), repeats), 3)
    return report


def image_label_timing(n: int = 50_000, n_classes: int = 1_000, repeats: int = 2) -> dict:
    """Labels read from the images (explain/image_labels.py) on a ViT-B-32-shaped cache of ``n`` images and
    ``n_classes`` classes: every image read once in the classes, then both poles of every head's first PC labelled
    (the Heads map's 288 labels), with no pole abstaining, so that every label also ranks every image for its second
    part (random data would otherwise abstain and skip that step)."""
    from residual_core.bench.core import synthetic_cache
    from residual_core.explain.image_labels import dataset_family, read_images
    from residual_core.explain.scorecard_run import pole_units

    with tempfile.TemporaryDirectory() as tmp:
        cache = synthetic_cache(Path(tmp), n, n_classes=n_classes)
        read = best_of(lambda: read_images(cache, (dataset_family(cache),)), repeats)
        reader = read_images(cache, (dataset_family(cache),))
        poles = [unit for u in range(cache.units.n_heads_total) for unit in pole_units(cache, u, 0)]
        label = best_of(lambda: [reader.label(unit.scores, abstain_eta=0.0) for unit in poles], repeats)
    return {f"image_labels_read_s_{n}": round(read, 2), f"image_labels_{len(poles)}_poles_s_{n}": round(label, 2)}
