"""The command line's ``maps``: where heads look in one image, as PNG overlays and one JSON line.

    python -m residual_core maps --model demo --image scene.png [--head L3H6] [--pc 1] [--text "a red object"] --out DIR

The image is decoded like an upload (residual_core.data.images: bounded, never pickled). Maps are read from the cache
of ``--dataset`` (its PCA basis and classifier): the push toward the predicted class of the heads that push it
hardest (or of ``--head``), PC ``--pc`` of ``--head``, a ``--text`` direction, and raw attention as the baseline.
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from residual_core.cli import tables
from residual_core.cli.args import cache_dir_option, limit, model_options, ranged, words, writable_folder
from residual_core.build.defaults import DEFAULT_IMAGES


def parse_head(text: str, n_layers: int, n_heads: int) -> tuple[int, int]:
    """'L3H6' -> (3, 6), or ValueError (one line) naming what is wrong."""
    found = re.fullmatch(r"[Ll](\d{1,3})[Hh](\d{1,3})", text.strip())
    if not found:
        raise ValueError(f"--head {text[:20]!r} is not a head like L3H6")
    layer, head = int(found.group(1)), int(found.group(2))
    if layer >= n_layers or head >= n_heads:
        raise ValueError(f"--head {text} is not in this {n_layers}-layer × {n_heads}-head model")
    return layer, head


def overlay_png(image: np.ndarray, patches: np.ndarray, path: Path, title: str = "", unit: str = "") -> None:
    """Three panels ×4 (the image, the map alone, the map over the image) under a title, above a colour scale
    centred at 0 with its end values: the map alone stays readable where a red overlay meets red shapes."""
    from PIL import Image, ImageDraw

    from residual_core.engine.tokens import overlay  # here, not at the top: listing commands must not import torch

    grey = np.full_like(image, 235)
    panels = [image, overlay(grey, patches, alpha=1.0), overlay(image, patches)]
    side = image.shape[0] * 4
    canvas = Image.new("RGB", (3 * side + 40, side + 70), "white")
    for i, panel in enumerate(panels):
        canvas.paste(Image.fromarray(panel).resize((side, side), Image.NEAREST), (10 + i * (side + 10), 24))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 6), title[:120], fill="black")
    top = float(np.abs(patches).max())
    width = 2 * side
    for x in range(width):  # the scale: white at 0, full blue at −top, full red at +top, as the panels blend
        t = 2 * x / (width - 1) - 1
        colour = (214, 39, 40) if t >= 0 else (31, 119, 180)
        mix = tuple(int(255 * (1 - abs(t)) + c * abs(t)) for c in colour)
        draw.line([(10 + x, side + 32), (10 + x, side + 42)], fill=mix)
    draw.text((10, side + 46), f"{-top:+.3g}", fill="black")
    draw.text((10 + width // 2 - 4, side + 46), "0", fill="black")
    draw.text((10 + width - 40, side + 46), f"{top:+.3g}", fill="black")
    draw.text((20 + width, side + 34), unit[:40], fill="black")
    canvas.save(path)


def cmd_maps(args: argparse.Namespace) -> int:
    from residual_core.read.cache import load_cache
    from residual_core.engine.decompose import decompose_images
    from residual_core.data.images import open_image_file
    from residual_core.engine.models import load_clip, parse_model_spec
    from residual_core.build.pipeline import PrecomputeSpec, precompute
    from residual_core.read.probe import probe_images
    from residual_core.engine.tokens import heads_map, patch_map, text_direction, where_in_words
    from residual_core.engine.units import head_label
    from residual_core.engine.zeroshot import embed_texts

    started = time.perf_counter()
    if args.pc is not None and not args.head:  # every check that needs no model comes before the model loads
        raise ValueError("--pc reads one head's PC: name the head with --head (e.g. --head L3H6)")
    out = writable_folder(args.out)
    path = Path(args.image)
    image = open_image_file(path).image
    cache = load_cache(precompute(PrecomputeSpec(model=args.model, dataset=args.dataset, split="test", limit=args.limit,
                                                 cache_dir=args.cache_dir, random_weights=args.random_weights,
                                                 seed=args.seed)))
    loaded = load_clip(parse_model_spec(args.model, args.random_weights, args.seed))
    result = probe_images(loaded, cache, [image])
    parts = result.tokens
    exact = decompose_images(loaded.model, loaded.preprocess(image)[None]).heads.double()
    rel_err = float((parts.contributions().double() - exact).norm() / exact.norm())
    predicted = int(np.argmax(result.probs[0]))
    heads = [parse_head(args.head, cache.n_layers, cache.n_heads)] if args.head else result.driving_heads(
        0, predicted, cache, top=3)
    names = "+".join(head_label(*h) for h in heads)
    wanted = [("prediction", "class", predicted, f"push toward '{cache.classnames[predicted]}'"),
              ("attention", "attention", 0, "raw CLS attention (baseline)")]
    if args.pc is not None:
        if not 1 <= args.pc <= cache.n_pcs:
            raise ValueError(f"--pc {args.pc} is not one of this cache's PCs 1..{cache.n_pcs}")
        wanted.append((f"pc{args.pc}", "pc", args.pc - 1, f"PC{args.pc}"))
    maps, rows = [], []
    for name, kind, target, what in wanted:
        patches, rest = result.where(0, cache, heads, kind, target)
        maps.append((name, what, patches, rest))
    if args.text:
        from residual_core.explain.describe import check_query

        query = check_query(args.text)
        per_token, constant = heads_map(parts, heads, text_direction(embed_texts(loaded, [query]).numpy(), 0))
        maps.append(("text", f"along '{query}'", patch_map(per_token[0], parts.grid), float(per_token[0, 0] + constant[0])))
    report = []
    for name, what, patches, rest in maps:
        file = out / f"{path.stem}_{names}_{name}.png"
        unit = {"prediction": "push toward it (logits)", "attention": "attention weight", "text": "along it (c·t)"}
        overlay_png(result.inputs[0], patches, file, f"{names}: {what}", unit.get(name, "PC coefficient"))
        where = where_in_words(patches)
        region, share = where.region, where.share
        report.append({"map": name, "what": what, "heads": names, "where": region, "share": round(share, 4),
                       "patch_sum": float(patches.sum()), "rest": rest, "png": str(file)})
        rows.append([name, what, names, f"{region} ({share:.0%})", str(file)])
    print(tables.table(["map", "of", "heads", "mostly from", "written to"], rows), file=sys.stderr)
    print(f"exactness: the tokens' terms add up to every head's contribution to {rel_err:.1e} (relative)",
          file=sys.stderr)
    print(json.dumps({"image": str(path), "model": args.model, "dataset": args.dataset,
                      "predicted": cache.classnames[predicted], "grid": parts.grid, "exact_rel_err": rel_err,
                      "maps": report, "seconds": round(time.perf_counter() - started, 3)}))
    return 0


def register(sub) -> None:
    from residual_core.build.defaults import DEFAULT_DATASET

    p = sub.add_parser("maps", help="where heads look in one image: PNG overlays and their summary")
    model_options(p)
    p.add_argument("--image", required=True, help="an image file (PNG, JPEG, …), decoded like an upload")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="the cache whose PCA and classifier the maps read")
    p.add_argument("--head", default=None, help="a head like L3H6 (default: the three that push the prediction most)")
    p.add_argument("--pc", type=ranged(1, 100_000), default=None, help="with --head: map that head's PC (1-based)")
    p.add_argument("--text", type=words, default=None, help="also map the direction of this text")
    p.add_argument("--limit", type=limit, default=DEFAULT_IMAGES, help="images of the cache read (default 2,000)")
    p.add_argument("--out", required=True, help="folder for the PNGs")
    cache_dir_option(p)
    p.set_defaults(func=cmd_maps)
