"""The command line's ``describe`` and ``search``: heads in words. A readable table on stderr, one JSON line on stdout."""

import argparse
import json
import sys
import time

from residual_core.cli import tables
from residual_core.cli.args import cache_dir_option, limit, model_options, ranged, words
from residual_core.build.defaults import DEFAULT_IMAGES


def _cache(args: argparse.Namespace):
    from residual_core.read.cache import load_cache
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    return load_cache(precompute(PrecomputeSpec(model=args.model, dataset=args.dataset, split=args.split,
                                                limit=args.limit, cache_dir=args.cache_dir, seed=args.seed,
                                                random_weights=args.random_weights, text_bank=args.text_bank)))


def cmd_describe(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.method == "weights":
        return _describe_weights(args, started)
    if args.dataset is None:
        raise ValueError(f"describe --method {args.method} reads a cache: name its --dataset (or use --method "
                         "weights, which needs none)")
    if args.method == "images":
        return _describe_images(args, started)
    from residual_core.explain.describe import completeness, textspan, textspan_reference

    cache = _cache(args)
    readings = textspan(cache, args.texts) if args.convention == "pca" else textspan_reference(cache, args.texts)
    counts = sorted({1, 2, 5, args.texts} & set(range(1, args.texts + 1)))
    curve = completeness(cache, readings, counts)
    heads = [{"layer": r.layer, "head": r.head, "texts": [cache.texts[i] for i in r.texts],
              "explained": [round(v, 5) for v in r.explained]} for r in readings]
    header = ["head", "TextSpan's texts in order (share of variance each)", "together"]
    print(tables.table(header,
                       [[r.label, "; ".join(f"{cache.texts[i]} ({v:.0%})" for i, v in zip(r.texts[:3], r.explained)),
                         f"{r.cumulative[-1]:.0%}" if r.texts else "—"] for r in readings]), file=sys.stderr)
    print(f"completeness: zero-shot {cache.baseline_accuracy():.1%}; every head replaced by its first m texts' span: "
          + ", ".join(f"m={m} {acc:.1%}" for m, acc in zip(counts, curve)), file=sys.stderr)
    print(json.dumps({"model": args.model, "dataset": args.dataset, "method": "textspan",
                      "convention": args.convention, "heads": heads,
                      "completeness": {"m": counts, "accuracy": curve, "zeroshot": cache.baseline_accuracy()},
                      "seconds": round(time.perf_counter() - started, 3)}))
    return 0


def _describe_images(args: argparse.Namespace, started: float) -> int:
    """Each head's PC poles labelled by what the whole model reads in their top images (the dashboard's default)."""
    from residual_core.engine.models import ModelLoadError, load_clip, parse_model_spec
    from residual_core.explain.image_labels import families_for, read_images
    from residual_core.explain.scorecard_run import pole_units

    cache = _cache(args)
    try:
        loaded = load_clip(parse_model_spec(args.model, args.random_weights, args.seed))
    except ModelLoadError:  # the weights are not here: the cache's own classes still read its images
        loaded = None
    reader = read_images(cache, families_for(cache, loaded))
    heads, rows = [], []
    for u in range(cache.units.n_heads_total):
        layer, head = cache.units.head_at(u)
        poles = []
        for k in range(min(args.directions, cache.n_pcs)):
            for unit in pole_units(cache, u, k):
                label = reader.label(unit.scores)
                poles.append({"pole": unit.name, "label": label.text or None, "evidence": label.evidence(),
                              "family": label.family, "eta2": round(label.eta, 4), "agree": label.agree,
                              "over_every_image": label.ranks or None, "nearest_text": unit.text})
        heads.append({"layer": layer, "head": head, "poles": poles})
        rows.append([f"L{layer}H{head}", "; ".join(f"{p['pole']} {p['label'] or '(no clear label)'}"
                                                   + (f" (over all: {p['over_every_image']})" if p["over_every_image"]
                                                      else "") for p in poles[:4])])
    print(tables.table(["head", "what the model reads in each pole's top images (PC1 +/−, PC2 +/−)"], rows),
          file=sys.stderr)
    labelled = sum(p["label"] is not None for h in heads for p in h["poles"])
    total = sum(len(h["poles"]) for h in heads)
    print(f"{labelled} of {total} poles labelled; the rest read as no clear label (their images' readings explain "
          f"less than 20 % of the score). --method textspan or weights for the text-space readings.", file=sys.stderr)
    print(json.dumps({"model": args.model, "dataset": args.dataset, "method": "images", "families":
                      [f.name for f in reader.families], "heads": heads,
                      "seconds": round(time.perf_counter() - started, 3)}, ensure_ascii=False))
    return 0


def _describe_weights(args: argparse.Namespace, started: float) -> int:
    from residual_core.build.finalize import model_bank
    from residual_core.engine.models import load_clip, parse_model_spec
    from residual_core.build.plan import DEFAULT_DATASET, default_bank
    from residual_core.engine.textbank import load_bank
    from residual_core.explain.weights_reading import read_weights

    loaded = load_clip(parse_model_spec(args.model, args.random_weights, args.seed))
    # no dataset to go by: the demo models read the world's words, any other model words about photos
    dataset = args.dataset or (DEFAULT_DATASET if args.model in ("demo", "demo-shortcut") else "")
    texts = load_bank(args.text_bank or default_bank(dataset))
    bank = model_bank(loaded, args.cache_dir, texts).numpy()
    readings = read_weights(loaded.model, bank, n_directions=args.directions, n_texts=args.texts)
    heads = []
    for r in readings:
        power = r.singular ** 2 / max(float((r.singular ** 2).sum()), 1e-300)
        heads.append({"layer": r.layer, "head": r.head, "texts": [[texts[i] for i in plus] for plus, _ in r.texts],
                      "texts_negative": [[texts[i] for i in minus] for _, minus in r.texts],
                      "explained": [round(float(v), 5) for v in power[:len(r.texts)]]})
    print(tables.table(["head", "direction 1: + texts / − texts", "its share of the head's weight spectrum"],
                       [[r.label, " · ".join(texts[i] for i in r.texts[0][0]) + "  /  "
                         + " · ".join(texts[i] for i in r.texts[0][1]), f"{h['explained'][0]:.0%}"]
                        for r, h in zip(readings, heads)]), file=sys.stderr)
    print(json.dumps({"model": args.model, "method": "weights", "heads": heads,
                      "seconds": round(time.perf_counter() - started, 3)}))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from residual_core.explain.describe import check_query, concept_noise, search_heads
    from residual_core.engine.models import load_clip, parse_model_spec
    from residual_core.engine.zeroshot import embed_texts

    started = time.perf_counter()
    query = check_query(args.query)
    cache = _cache(args)
    loaded = load_clip(parse_model_spec(args.model, args.random_weights, args.seed))
    embedding = embed_texts(loaded, [query]).numpy()
    ranked = search_heads(cache, embedding)[:args.top]
    noise = concept_noise(cache, embedding)
    print(tables.table(["head", "share of its variance along the concept", "variance along it", "PCs carrying it"],
                       [[f"L{r.layer}H{r.head}", f"{r.share:.1%}", f"{r.strength:.3g}",
                         ", ".join(f"PC{k + 1} ({s:.0%})" for k, s in zip(r.pcs, r.pc_shares))] for r in ranked]),
          file=sys.stderr)
    if noise.at_noise:
        print("warning: " + noise.words(query, f"L{ranked[0].layer}H{ranked[0].head}"), file=sys.stderr)
    print(json.dumps({"query": query, "model": args.model, "dataset": args.dataset, "at_noise_level": noise.at_noise,
                      "random_best_share_q99": round(noise.random_q99, 6),
                      "heads": [{"layer": r.layer, "head": r.head, "score": round(r.share, 6),
                                 "strength": round(r.strength, 6), "pcs": [k + 1 for k in r.pcs]} for r in ranked],
                      "seconds": round(time.perf_counter() - started, 3)}))
    return 0


def register(sub) -> None:
    p = sub.add_parser("describe", help="each head in words: what the model reads in its PC poles' images (default), "
                                        "TextSpan on a cache, or its weights alone (no data)")
    model_options(p)
    p.add_argument("--dataset", default=None, help="the cache to read; not needed for --method weights")
    p.add_argument("--method", choices=["images", "textspan", "weights"], default="images",
                   help="images: each PC pole labelled by what the whole model reads in its top 8 images; textspan: "
                        "TextSpan's texts per head; weights: the heads' write directions (no data)")
    p.add_argument("--texts", type=ranged(1, 200), default=10, help="texts per head (per direction and sign for weights)")
    p.add_argument("--convention", choices=["pca", "textspan"], default="pca",
                   help="textspan method: pca (the default: the head's centred variance, from the cache's PCA) or "
                        "textspan (TextSpan's own: per-image normalised data, texts on its top-80 uncentred span)")
    p.add_argument("--directions", type=ranged(1, 1024), default=3,
                   help="images: PCs per head whose poles are labelled; weights: write directions read per head")
    _cache_args(p)
    p.set_defaults(func=cmd_describe)
    p = sub.add_parser("search", help="heads ranked by their share of variance along a concept (free text)")
    model_options(p)
    p.add_argument("query", type=words, help='the concept, a few words: "a red object"')
    p.add_argument("--dataset", required=True)
    p.add_argument("--top", type=ranged(1, 100_000), default=10, help="heads listed (at most all of them)")
    _cache_args(p)
    p.set_defaults(func=cmd_search)


def _cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=limit, default=DEFAULT_IMAGES, help="images in the cache read (default 2,000)")
    p.add_argument("--text-bank", default=None, help="text file, one description per line (default: the shipped bank)")
    cache_dir_option(p)
