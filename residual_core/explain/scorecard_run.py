"""The scorecard's methods and leaderboard (residual_core/explain/scorecard.py has the per-unit scores).

Methods, each a set of units per head: nearest texts per PC (the dashboard's labels: both poles of the top PCs),
TextSpan (its first texts), the weights' directions (both signs, labelled by their pursuit texts), and three random
baselines (mean ± std over seeds): random directions in each head's PC space labelled by their nearest text, the PC
poles under random bank texts, and random heads: each head's PC poles explained by another head's labels and
ablation (a random derangement of the heads), which keeps the texts and causal factors the method really produces
and breaks only their tie to the head. A leaderboard row per method: label accuracy, coverage (the share of factor
values some unit scores at AP ≥ 0.3), the mean over factors of the best unit's η², and causal agreement.
"""

import time
from dataclasses import replace

import numpy as np

from residual_core.explain.agreement import agreement_predicts, head_agreement
from residual_core.read.cache import Cache
from residual_core.build.store import copy_f32
from residual_core.explain.scorecard import AP_COVERAGE, N_PER_HEAD, PURITY_K, Unit, UnitScore, factor_labels, score_unit


def _centred(cache: Cache, unit: int) -> np.ndarray:
    """[n_images, n_pcs] the head's coefficients about their mean."""
    return copy_f32(cache.head_scores[unit]).T - np.asarray(cache.score_mean[unit], np.float32)


def _nearest_text(cache: Cache, direction: np.ndarray) -> str:
    """The bank text nearest a joint-space direction [d_embed]."""
    return cache.texts[int(np.argmax(np.asarray(cache.text_embeds, np.float64) @ direction))]


def pole_units(cache: Cache, unit: int, k: int, coef: np.ndarray | None = None) -> tuple[Unit, Unit]:
    """Both poles of one PC of one head, each labelled by its nearest text (what the Head explorer shows);
    ``coef``: the head's centred coefficients [n_images, n_pcs] where the caller has them."""
    layer, head = cache.units.head_at(unit)
    if coef is None:  # this PC's row alone, not the head's every PC
        score = copy_f32(cache.head_scores[unit, k]) - np.float32(cache.score_mean[unit, k])  # [n_images]
    else:
        score = coef[:, k]
    return (Unit("nearest texts per PC", layer, head, f"PC{k + 1} +", cache.texts[int(cache.text_pos_idx[unit, k, 0])],
                 score),
            Unit("nearest texts per PC", layer, head, f"PC{k + 1} −", cache.texts[int(cache.text_neg_idx[unit, k, 0])],
                 -score))


def label_doubts(cache: Cache, units: list[Unit]) -> list[str | None]:
    """For each unit, None when its label names what its top images share (or the cache has no ground truth), else
    one sentence saying what they share instead: the mark every view that shows a label puts beside it."""
    from residual_core.data import world

    try:
        truth = factor_labels(cache)
    except ValueError:  # not the demo world: no ground truth to check a label against
        return [None] * len(units)
    out = []
    for unit in units:
        scored = score_unit(unit, truth, world.FACTORS)
        out.append(None if scored.label_right else
                   f"“{unit.text}” does not name what its images share: {round(scored.purity * PURITY_K)} of its top "
                   f"{PURITY_K} have {scored.factor} “{scored.modal}” (η² {scored.eta[scored.factor]:.2f})")
    return out


def pc_units(cache: Cache, n: int = N_PER_HEAD) -> list[Unit]:
    units = []
    for u in range(cache.units.n_heads_total):
        coef = _centred(cache, u)
        for k in range(min(n, cache.n_pcs)):
            units.extend(pole_units(cache, u, k, coef))
    return units


def textspan_units(cache: Cache, spans, n: int = N_PER_HEAD) -> list[Unit]:
    """``spans``: describe.textspan of the cache, at least ``n`` texts per head (its first ``n`` are used)."""
    units = []
    for reading in spans:
        coef = _centred(cache, cache.head_index(reading.layer, reading.head))
        for j, (text, direction) in enumerate(zip(reading.texts[:n], reading.basis[:n])):
            units.append(Unit("TextSpan", reading.layer, reading.head, f"text {j + 1}", cache.texts[text],
                              coef @ direction))
    return units


def weight_units(cache: Cache, readings, n: int = N_PER_HEAD) -> list[Unit]:
    units = []
    for reading in readings:
        u = cache.head_index(reading.layer, reading.head)
        coef = _centred(cache, u)
        in_pcs = np.asarray(cache.head_components[u], np.float64) @ reading.directions[:n].T  # [n_pcs, n]
        for j, (plus, minus) in enumerate(reading.texts[:n]):
            score = coef @ in_pcs[:, j]
            units.append(Unit("weights' directions", reading.layer, reading.head, f"direction {j + 1} +",
                              cache.texts[plus[0]] if plus else "", score))
            units.append(Unit("weights' directions", reading.layer, reading.head, f"direction {j + 1} −",
                              cache.texts[minus[0]] if minus else "", -score))
    return units


def random_direction_units(cache: Cache, seed: int, n: int = 2 * N_PER_HEAD) -> list[Unit]:
    rng = np.random.default_rng(seed)
    units = []
    for u in range(cache.units.n_heads_total):
        layer, head = cache.units.head_at(u)
        coef = _centred(cache, u)
        for j in range(n):
            r = rng.standard_normal(cache.n_pcs)
            r /= np.linalg.norm(r)
            joint = r @ np.asarray(cache.head_components[u], np.float64)  # [d_embed]
            units.append(Unit("random directions", layer, head, f"random {j + 1}", _nearest_text(cache, joint),
                              coef @ r))
    return units


def random_label_units(cache: Cache, seed: int) -> list[Unit]:
    rng = np.random.default_rng(seed)
    return [Unit("random labels", p.layer, p.head, p.name, cache.texts[int(rng.integers(len(cache.texts)))], p.scores)
            for p in pc_units(cache)]


def random_head_units(cache: Cache, seed: int) -> list[Unit]:
    """The PC poles of each head under the labels and the ablation of another head: unit i of head u keeps u's
    scores and takes the text, layer and head (so the causal factor) of the same pole of head π(u), π a random
    derangement (no head keeps its own; the identity where there is one head)."""
    rng = np.random.default_rng(seed)
    n_heads = cache.units.n_heads_total
    perm = rng.permutation(n_heads)
    while n_heads > 1 and (perm == np.arange(n_heads)).any():
        perm = rng.permutation(n_heads)  # ~e draws on average
    units = pc_units(cache)
    per_head = len(units) // n_heads
    out = []
    for i, own in enumerate(units):
        other = units[int(perm[i // per_head]) * per_head + i % per_head]
        out.append(Unit("random heads", other.layer, other.head, own.name, other.text, own.scores))
    return out


BOOTSTRAP = 200  # resamples of the images behind each head's causal factor


def causal_factors(cache: Cache, per_factor: dict[str, Cache], boot: int = BOOTSTRAP,
                   seed: int = 0) -> dict[int, str | None]:
    """{head index: the factor whose accuracy falls most when the head is mean-ablated}, from per-factor caches of
    the same images; None where no factor falls, or where the fall is undetermined: over ``boot`` resamples of the
    images, the 95 % interval of (the top factor's fall − the second's) reaches 0."""
    from residual_core.read.ablation import AblationMask, evaluate

    names = list(per_factor)
    n = min(c.n_images for c in per_factor.values())
    before = np.stack([(c.baseline_predictions() == c.labels)[:n] for c in per_factor.values()])  # [F, n]
    rng = np.random.default_rng(seed)
    resample = rng.integers(0, n, (boot, n))  # [B, n] the same images for every factor (one world, many labels)
    out = {}
    for u in range(cache.units.n_heads_total):
        mask = AblationMask(heads=frozenset({cache.units.head_at(u)}))
        after = np.stack([(evaluate(c, mask).predictions == c.labels)[:n] for c in per_factor.values()])  # [F, n]
        fall = before.astype(np.int8) - after.astype(np.int8)  # [F, n]
        drops = fall.mean(1)  # [F]
        if drops.max() <= 0:
            out[u] = None
            continue
        top, second = np.argsort(-drops, kind="stable")[:2]
        diff = fall[top][resample].mean(1) - fall[second][resample].mean(1)  # [B]
        out[u] = names[int(top)] if np.percentile(diff, 2.5) > 0 else None
    return out


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson interval of a rate of ``hits`` in ``n``."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (
        1 + z * z / n)
    return float(centre - half), float(centre + half)


def share_interval(part: np.ndarray, whole: np.ndarray, boot: int = 2_000, seed: int = 0) -> tuple[float, float]:
    """The 95 % bootstrap interval (over units) of mean(``part``) / mean(``whole``), both [n_units]: how far a share
    such as label AP over its ceiling moves with the units a model happens to have."""
    if len(part) == 0:
        return float("nan"), float("nan")
    resample = np.random.default_rng(seed).integers(0, len(part), (boot, len(part)))  # [boot, n_units]
    shares = part[resample].mean(1) / whole[resample].mean(1)
    return float(np.percentile(shares, 2.5)), float(np.percentile(shares, 97.5))


def leaderboard_row(scores: list[UnitScore]) -> dict[str, float]:
    factors = list(scores[0].eta)
    aps = {f: np.fmax.reduce(np.stack([s.ap[f] for s in scores]), axis=0) for f in factors}  # [n_values]; nan: absent
    values = np.concatenate([a[~np.isnan(a)] for a in aps.values()])
    causal = [s.factor == s.causal for s in scores if s.causal is not None]
    labelled = [s for s in scores if s.labelled] or scores  # a method that abstains is scored on what it labels
    return {"units": len(scores), "labelled": float(np.mean([s.labelled for s in scores])),
            "label_accuracy": float(np.mean([s.label_right for s in labelled])),
            "label_ap": float(np.mean([s.label_ap for s in labelled])),
            "ap_ceiling": float(np.mean([s.best_ap for s in labelled])),
            "label_lift": float(np.mean([s.label_lift for s in labelled])),
            "lift_ceiling": float(np.mean([s.best_lift for s in labelled])),
            "ties": float(np.sum([s.tied for s in labelled])),
            "coverage": float(np.mean(values >= AP_COVERAGE)),
            "best_eta_mean": float(np.mean([max(s.eta[f] for s in scores) for f in factors])),
            "causal_agreement": float(np.mean(causal)) if causal else float("nan"),
            "causal_low": wilson(int(np.sum(causal)), len(causal))[0],
            "causal_high": wilson(int(np.sum(causal)), len(causal))[1], "causal_units": len(causal),
            "purity_mean": float(np.mean([s.purity for s in scores]))}


def image_label_units(cache: Cache, reader) -> list[Unit]:
    """The PC poles (as ``pc_units``), each labelled by what the full model reads in its top images
    (explain/image_labels.py); a pole no family explains keeps no label."""
    labels = [(u, reader.label(u.scores)) for u in pc_units(cache)]
    return [replace(u, method=IMAGE_METHOD, text=label.text, also=label.ranks) for u, label in labels]


IMAGE_METHOD = "read from the images"


def unnameable(cache: Cache) -> dict[str, list[str]]:
    """{factor: the world's values no text of the cache's bank names} (what a text-space label can never say)."""
    from residual_core.data import world
    from residual_core.explain.scorecard import named_values

    named: dict[str, set[str]] = {f: set() for f in world.FACTORS}
    for text in cache.texts:
        for factor, values in named_values(text).items():
            named[factor] |= values
    return {f: [v for v in values if v not in named[f]] for f, values in world.FACTORS.items()
            if any(v not in named[f] for v in values)}
THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)  # η² below which an image label abstains


def label_rules(cache: Cache, reader, scored) -> dict[str, dict]:
    """Label AP and chance: the labelled poles (η² ≥ the abstention threshold) labelled four ways from the model's
    own readings, no ground truth: ``top images`` (the modal reading of the top 8, in the family that explains most
    of the score), ``shipped`` (the same with its second part, the value ranked best above chance over every image),
    ``best AP`` (the value whose readings the score ranks best by raw AP, in any family) and ``random small value``
    (a value of the family with the fewest values drawn at random, size on the demo world: what raw AP gives a
    label for naming a common value). Each with its label accuracy, label AP over its ceiling (and the 95 % bootstrap
    interval of that share over the poles) and the same above chance."""
    from residual_core.explain.image_labels import ABSTAIN_ETA
    from residual_core.explain.scorecard import reading_aps

    labels = [(u, reader.label(u.scores)) for u in pc_units(cache)]
    labels = [(u, label) for u, label in labels if label.text]  # the poles the shipped rule labels
    smallest = min(range(len(reader.families)), key=lambda i: len(reader.families[i].texts))
    rng = np.random.default_rng(0)
    best_ap = []
    for u, _ in labels:
        order = np.argsort(-np.asarray(u.scores, np.float64), kind="stable")
        aps = [np.nan_to_num(reading_aps(order, r, len(f.texts)), nan=-1.0)  # nan: a value no image reads as
               for r, f in zip(reader.readings, reader.families)]
        family = int(np.argmax([a.max() for a in aps]))
        best_ap.append(reader.families[family].texts[int(np.argmax(aps[family]))])
    rules = {"top images": [(label.text, "") for _, label in labels],
             "shipped": [(label.text, label.ranks) for _, label in labels],
             "best AP": [(text, "") for text in best_ap],
             "random small value": [(str(rng.choice(reader.families[smallest].texts)), "") for _ in labels]}
    out = {}
    for name, texts in rules.items():
        rows = scored([replace(u, method=IMAGE_METHOD, text=t, also=a) for (u, _), (t, a) in zip(labels, texts)])
        low, high = share_interval(np.array([r.label_ap for r in rows]), np.array([r.best_ap for r in rows]))
        out[name] = {"ap_share_low": low, "ap_share_high": high,
                     "label_accuracy": float(np.mean([r.label_right for r in rows])) if rows else float("nan"),
                     **{key: float(np.mean([getattr(r, field) for r in rows])) if rows else float("nan")
                        for key, field in (("label_ap", "label_ap"), ("ap_ceiling", "best_ap"),
                                           ("label_lift", "label_lift"), ("lift_ceiling", "best_lift"))},
                     "units": len(rows), "threshold": ABSTAIN_ETA,
                     "second_parts": sum(bool(a) for _, a in texts)}
    out["random small value"]["family"] = reader.families[smallest].name
    return out


def abstention_curve(cache: Cache, reader, scored) -> list[dict]:
    """Precision and coverage of the labels read from the images as the abstention threshold moves: each pole's
    label read once without abstaining, then, per threshold, the poles whose family explains at least that share
    of their score. ``scored(units) -> [UnitScore]``."""
    units = pc_units(cache)
    labels = [reader.label(u.scores, abstain_eta=0.0) for u in units]
    scores = scored([replace(u, method=IMAGE_METHOD, text=label.text, also=label.ranks)
                     for u, label in zip(units, labels)])
    eta = np.array([label.eta for label in labels])
    right = np.array([s.label_right for s in scores], dtype=float)
    label_ap, ceiling = np.array([s.label_ap for s in scores]), np.array([s.best_ap for s in scores])
    lift, lift_ceiling = np.array([s.label_lift for s in scores]), np.array([s.best_lift for s in scores])
    out = []
    for threshold in THRESHOLDS:
        kept = eta >= threshold
        out.append({"threshold": threshold, "coverage": float(kept.mean()),
                    "precision": float(right[kept].mean()) if kept.any() else float("nan"),
                    "label_ap": float(label_ap[kept].mean()) if kept.any() else float("nan"),
                    "ap_ceiling": float(ceiling[kept].mean()) if kept.any() else float("nan"),
                    "label_lift": float(lift[kept].mean()) if kept.any() else float("nan"),
                    "lift_ceiling": float(lift_ceiling[kept].mean()) if kept.any() else float("nan")})
    return out


def run_scorecard(cache: Cache, per_factor: dict[str, Cache], weights, seeds: int = 5, reader=None) -> dict:
    """Every method's leaderboard row and its scored units, and how far agreement between the methods predicts a
    head's label accuracy; ``weights``: the weights' readings of the cache's model
    (residual_core.explain.weights_reading.read_weights)."""
    from residual_core.data import world
    from residual_core.explain.describe import textspan

    started = time.perf_counter()
    labels = factor_labels(cache)
    causal = causal_factors(cache, per_factor)

    def scored(units: list[Unit]) -> list[UnitScore]:
        return [score_unit(u, labels, world.FACTORS, causal[cache.head_index(u.layer, u.head)]) for u in units]

    spans = textspan(cache, 2 * N_PER_HEAD)  # once: the scorecard's TextSpan units and the agreement check share it
    methods = {"nearest texts per PC": scored(pc_units(cache)), "TextSpan": scored(textspan_units(cache, spans)),
               "weights' directions": scored(weight_units(cache, weights))}
    if reader is not None:
        methods = {IMAGE_METHOD: scored(image_label_units(cache, reader))} | methods
    rows = {name: leaderboard_row(units) for name, units in methods.items()}
    for name, make in (("random directions", random_direction_units), ("random labels", random_label_units),
                       ("random heads", random_head_units)):
        runs = [leaderboard_row(scored(make(cache, seed))) for seed in range(seeds)]
        rows[name] = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
        rows[name] |= {f"{key}_std": float(np.std([r[key] for r in runs])) for key in runs[0] if key != "units"}
    pooled = [s for name, units in methods.items() if name != IMAGE_METHOD for s in units]  # the text methods'
    curve = abstention_curve(cache, reader, scored) if reader is not None else []
    rules = label_rules(cache, reader, scored) if reader is not None else {}
    return {"methods": rows, "units": methods, "abstention_curve": curve, "label_rules": rules,
            "unnameable": unnameable(cache),
            "undetermined_heads": sum(v is None for v in causal.values()),
            "agreement": agreement_predicts(head_agreement(cache, weights, spans=spans), pooled),
            "seconds": time.perf_counter() - started}


def build_scorecard(model: str = "demo", limit: int | None = 2_000, cache_dir: str | None = None, seeds: int = 5,
                    progress=None, split: str = "test", world_seed: int | None = None) -> dict:
    """The caches a scorecard reads (one per world factor, test split), the weights' reading, and the scorecard;
    ``progress(stage, done, total)`` as precompute's. ``split``: the world drawn
    for it (test: the shipped test world; val: a second world of the same generator, other seeds); ``world_seed``:
    a fresh test world drawn by the same generator with this seed (``demo-world/<factor>@<seed>``)."""
    from residual_core.data import world
    from residual_core.read.cache import load_cache
    from residual_core.build.defaults import default_cache_dir
    from residual_core.engine.models import load_clip
    from residual_core.build.pipeline import PrecomputeSpec, precompute
    from residual_core.explain.weights_reading import read_weights

    per_factor = {}
    for factor in world.FACTORS:
        fresh = f"@{world_seed}" if world_seed is not None else ""  # a fresh test world: its own caches
        spec = PrecomputeSpec(model=model, dataset=f"demo-world/{factor}{fresh}", split=split, limit=limit,
                              cache_dir=cache_dir or default_cache_dir())
        per_factor[factor] = load_cache(precompute(spec, progress))
    from residual_core.explain.heatmaps import map_ground_truth

    cache = per_factor["shape"]
    loaded = load_clip(model)
    from residual_core.explain.image_labels import families_for, read_images

    reader = read_images(cache, families_for(cache, loaded))
    report = run_scorecard(cache, per_factor, read_weights(loaded.model, cache.text_embeds), seeds, reader)
    maps = map_ground_truth(loaded, cache, min(200, cache.n_images))  # heatmaps against the world's object masks
    report["methods"]["heatmaps"] = {"head": maps["ground_truth_head"], "scenes": maps["ground_truth_scenes"],
                                     "pointing_game": maps["pointing_game_push_to_true_class"],
                                     "mass_on_objects": maps["mass_on_objects_push"],
                                     "pointing_game_raw_attention": maps["pointing_game_raw_attention"],
                                     "mass_on_objects_raw_attention": maps["mass_on_objects_raw_attention"]}
    return report | {"cache": str(cache.path), "n_images": cache.n_images}
