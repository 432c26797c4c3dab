"""``bench``: speed and size figures, one JSON line (residual_core/bench/)."""

import argparse
import json

from residual_core.cli.args import ranged


def cmd_bench(args: argparse.Namespace) -> int:
    if args.maps:
        from residual_core.bench.maps import run_maps_bench

        print(json.dumps(run_maps_bench()))
        return 0
    if args.words:
        from residual_core.bench.words import run_words_bench

        print(json.dumps(run_words_bench()))
        return 0
    if args.scorecard:
        from residual_core.bench.scorecard import run_scorecard_bench

        print(json.dumps(run_scorecard_bench()))
        return 0
    if args.shortcuts:
        from residual_core.bench.shortcuts import run_shortcuts_bench

        print(json.dumps(run_shortcuts_bench(args.n_images, min(args.repeats, 5))))
        return 0
    if args.scale:
        from residual_core.bench.scale import run_scale

        chosen = {name: tuple(values) for name, values in (("sizes", args.sizes), ("classes", args.classes)) if values}
        print(json.dumps(run_scale(**chosen, all_heads=args.all_heads)))
        return 0
    from residual_core.bench.core import run_bench

    print(json.dumps(run_bench(args)))
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="speed and size figures, one JSON line")
    p.add_argument("--n-images", type=ranged(100, 100_000_000), default=10_000, help="images in the synthetic toggle cache")
    p.add_argument("--trace-images", type=ranged(1, 4096), default=32, help="images for the trace-overhead ratio")
    p.add_argument("--arch", default="ViT-B-32", help="architecture for the overhead and size figures")
    p.add_argument("--repeats", type=ranged(1, 100_000), default=50)
    p.add_argument("--with-subnormals", action="store_true",
                   help="also time λ training with subnormal arithmetic on (what flushing them saves; slow)")
    p.add_argument("--maps", action="store_true",
                   help="instead: per-token maps' speed and how well they point at the demo world's objects")
    p.add_argument("--words", action="store_true",
                   help="instead: TextSpan, concept search and the weights' reading at ViT-B-32 size")
    p.add_argument("--scorecard", action="store_true",
                   help="instead: the whole scorecard on the demo model, 2,000 scenes per factor, once its caches "
                        "exist")
    p.add_argument("--shortcuts", action="store_true",
                   help="finding shortcut heads: group metric per toggle, greedy search over 144 heads (--n-images)")
    p.add_argument("--scale", action="store_true",
                   help="instead: toggles, head metrics and peak RSS at 10 k, 100 k and 1 M images (10 and 1,000 "
                        "classes), and the scaling exponent")
    p.add_argument("--sizes", type=ranged(100, 100_000_000), nargs="+", metavar="N",
                   help="with --scale: the cache sizes in images (default 10000 100000 1000000)")
    p.add_argument("--classes", type=ranged(2, 100_000), nargs="+", metavar="C",
                   help="with --scale: the class counts (default 10 1000)")
    p.add_argument("--all-heads", action="store_true",
                   help="with --scale: store all 144 heads at 1 M images too (21 GB of disk, about 45 min more)")
    p.set_defaults(func=cmd_bench)
