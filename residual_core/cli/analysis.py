"""``specialize``, ``align`` and ``geometry``: the paper's analyses on cached coefficients."""

import argparse
import json
import sys

from residual_core.build.defaults import DEFAULT_DATASET, DEFAULT_IMAGES
from residual_core.cli import tables
from residual_core.cli.args import SEED, batch_option, cache_dir_option, limit, model_options, ranged


def cmd_specialize(args: argparse.Namespace) -> int:
    from residual_core.read.cache import load_cache
    from residual_core.build.pipeline import PrecomputeSpec, precompute
    from residual_core.analysis.specialize import specialize

    common = dict(model=args.model, dataset=args.dataset, limit=args.limit, seed=args.seed, device=args.device,
                  cache_dir=args.cache_dir, random_weights=args.random_weights, batch_size=args.batch_size)
    val = load_cache(precompute(PrecomputeSpec(split=args.val_split, **common)))
    test = load_cache(precompute(PrecomputeSpec(split=args.test_split, **common)))
    report = specialize(val, test, n_random=args.n_random, reference_compat=args.reference_compat)
    print(tables.specialize_table(report, val), file=sys.stderr)
    print(json.dumps({"model": args.model, "dataset": args.dataset, "val": args.val_split,
                      "test": args.test_split} | report))
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from residual_core.analysis.align_results import train_and_save
    from residual_core.engine.progress import steps

    bar = steps(args.epochs, f"training {args.method}", "epoch")

    def progress(epoch: int, epochs: int, val_acc: float) -> None:
        bar.update(1)
        bar.set_postfix_str(f"val {val_acc:.1%}")

    report = train_and_save(
        args.method, epochs=args.epochs, align_seed=args.align_seed, reference_compat=args.reference_compat,
        identity_start=args.identity_start, basis_from=args.basis_from, progress=progress, model=args.model,
        dataset=args.dataset, limit=args.limit, seed=args.seed, device=args.device, cache_dir=args.cache_dir,
        random_weights=args.random_weights, batch_size=args.batch_size)
    bar.close()
    report = {k: v for k, v in report.items() if k != "history"}
    sizes = report["settings"]["n_images"]
    print(tables.align_table(report, sizes["train"], sizes["val"], sizes["test"]), file=sys.stderr)
    print(json.dumps(report))
    return 0


def cmd_geometry(args: argparse.Namespace) -> int:
    import numpy as np

    from residual_core.read.cache import load_cache
    from residual_core.analysis.geometry import head_geometry, head_spectral_cosine
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    common = dict(model=args.model, split=args.split, limit=args.limit, seed=args.seed, device=args.device,
                  cache_dir=args.cache_dir, random_weights=args.random_weights, batch_size=args.batch_size)
    cache = load_cache(precompute(PrecomputeSpec(dataset=args.dataset, **common)))
    report = {"model": args.model, "dataset": args.dataset, "split": args.split, "n_images": cache.n_images,
              "heads": {k: np.asarray(v).round(4).tolist() for k, v in head_geometry(cache).items()}}
    for other in args.compare or []:
        other_cache = load_cache(precompute(PrecomputeSpec(dataset=other, **common)))
        report.setdefault("spectral_cosine", {})[other] = head_spectral_cosine(cache, other_cache).round(4).tolist()
    print(json.dumps(report))
    return 0


def register(sub) -> None:
    p = sub.add_parser("specialize", help="score heads on val (S, U|T, U, random), top-k accuracy on test")
    model_options(p)
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--val-split", default="val")
    p.add_argument("--test-split", default="test")
    p.add_argument("--limit", type=limit, default=DEFAULT_IMAGES,
                   help="images per split (default 2,000: minutes on 2 CPU cores with the demo model; 'all' for all)")
    batch_option(p)
    p.add_argument("--n-random", type=ranged(1, 1000), default=10, help="random-score seeds")
    p.add_argument("--reference-compat", action="store_true",
                   help="the reference's Pearson scale ((n-1)/n) and torch.topk tie order (README: conventions)")
    cache_dir_option(p)
    p.set_defaults(func=cmd_specialize)

    p = sub.add_parser("align", help="train ResiDual λ (or a baseline) on cached coefficients")
    model_options(p)
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--method", default="fine", choices=["zeroshot", "coarse", "fine", "full", "linear", "spectral"])
    p.add_argument("--limit", type=limit, default=10_000,
                   help="images per split (default 10,000: the train split is cut to that, val and test of the demo "
                        "world have 2,000; a few minutes on 2 CPU cores; 'all' for the whole splits)")
    p.add_argument("--epochs", type=ranged(1, 100_000), default=30)
    p.add_argument("--align-seed", type=SEED, default=42)
    p.add_argument("--reference-compat", action="store_true", help="reproduce the reference code's quirks")
    p.add_argument("--identity-start", action="store_true", help="λ = 1 with means added back (not in the paper)")
    p.add_argument("--basis-from", default=None,
                   help="a cache or --basis-only folder whose PCA basis all three splits use (e.g. ImageNet train)")
    batch_option(p)
    cache_dir_option(p)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("geometry", help="per-head PR, PCs to 90/99 %%, TwoNN; spectral cosine to other datasets")
    model_options(p)
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=limit, default=DEFAULT_IMAGES, help="images (default 2,000; 'all' for the whole split)")
    p.add_argument("--compare", nargs="*", metavar="DATASET", help="datasets whose head bases to compare with")
    batch_option(p)
    cache_dir_option(p)
    p.set_defaults(func=cmd_geometry)
