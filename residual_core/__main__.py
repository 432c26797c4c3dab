"""Command line: ``python -m residual_core {verify,precompute,specialize,align,geometry,describe,search,maps,scorecard,
datasets,models,bench,textbank}``.

Commands that measure something print one JSON object on their last line. ``precompute`` also runs under
``torchrun --nproc-per-node N -m residual_core precompute …``: the ranks share the shards (see pipeline.py).
"""

import argparse
import json
import os
import sys

from residual_core import cli_tables as tables
from residual_core.cli_args import BATCH, SEED, Parser, limit as _limit, ranged


def _cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from residual_core.decompose import decompose_images
    from residual_core.models import load_clip, parse_model_spec

    loaded = load_clip(parse_model_spec(args.model, args.random_weights, args.seed), device=args.device, text=False)
    size = loaded.arch.image_size
    generator = torch.Generator().manual_seed(args.seed)
    if args.dataset:
        from residual_core.datasets import load_dataset

        source = load_dataset(args.dataset, "test")
        images = torch.stack([loaded.preprocess(source.image(i)) for i in range(min(args.n_images, len(source)))])
    else:
        images = torch.randn(args.n_images, 3, size, size, generator=generator)
    decomp = decompose_images(loaded.model, images.to(args.device), check=False)
    err, rel = decomp.errors()
    report = {"model": loaded.spec.name, "weights": loaded.weights_id, "n_images": int(images.shape[0]),
              "max_abs_err": err, "rel_err": rel, "n_units": loaded.arch.n_units,
              "n_heads": loaded.arch.n_layers * loaded.arch.n_heads, "n_layers": loaded.arch.n_layers,
              "d_embed": loaded.arch.d_embed, "ok": rel <= 1e-4}
    print(tables.verify_table(report), file=sys.stderr)
    print(json.dumps(report))
    return 0 if rel <= 1e-4 else 1


def _cmd_precompute(args: argparse.Namespace) -> int:
    from residual_core.cache import load_cache
    from residual_core.pipeline import PrecomputeSpec, distributed_ranks, precompute
    from residual_core.store import read_manifest

    ranks, device = distributed_ranks(args.device)  # one of torchrun's processes, or the only one
    spec = PrecomputeSpec(model=args.model, dataset=args.dataset, split=args.split, limit=args.limit,
                          seed=args.seed, batch_size=args.batch_size, device=device, cache_dir=args.cache_dir,
                          random_weights=args.random_weights, text_bank=args.text_bank, basis_from=args.basis_from,
                          keep_shards=args.keep_shards, dtype=args.dtype, basis_only=args.basis_only,
                          workers=args.workers)
    try:
        folder = precompute(spec, ranks=ranks)
    finally:
        if ranks.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if ranks.rank != 0:
        print(f"rank {ranks.rank}: shards written; rank 0 finished {folder}", file=sys.stderr)
        return 0
    manifest = read_manifest(folder)
    skipped = manifest["skipped"]["count"]
    if skipped:
        print(f"{skipped} image(s) could not be read and were skipped; the manifest lists them", file=sys.stderr)
    if manifest.get("kind") == "basis":
        print(f"basis ready at {folder} (use it with --basis-from)", file=sys.stderr)
        print(json.dumps({"basis": str(folder), "n_images": manifest["n_images"], "n_pcs": manifest["n_pcs"],
                          "max_rel_err": manifest["max_rel_err"], "skipped_images": skipped}))
        return 0
    cache = load_cache(folder)
    print(tables.precompute_table(cache, skipped), file=sys.stderr)
    print(json.dumps({"cache": str(folder), "n_images": cache.n_images, "n_classes": len(cache.classnames),
                      "zeroshot_accuracy": cache.manifest["zeroshot_accuracy"], "dtype": cache.manifest["dtype"],
                      "max_rel_err": cache.manifest["max_rel_err"], "skipped_images": skipped}))
    return 0


def _cmd_specialize(args: argparse.Namespace) -> int:
    from residual_core.cache import load_cache
    from residual_core.pipeline import PrecomputeSpec, precompute
    from residual_core.specialize import specialize

    common = dict(model=args.model, dataset=args.dataset, limit=args.limit, seed=args.seed, device=args.device,
                  cache_dir=args.cache_dir, random_weights=args.random_weights, batch_size=args.batch_size)
    val = load_cache(precompute(PrecomputeSpec(split=args.val_split, **common)))
    test = load_cache(precompute(PrecomputeSpec(split=args.test_split, **common)))
    report = specialize(val, test, n_random=args.n_random, reference_compat=args.reference_compat)
    print(tables.specialize_table(report, val), file=sys.stderr)
    print(json.dumps({"model": args.model, "dataset": args.dataset, "val": args.val_split,
                      "test": args.test_split} | report))
    return 0


def _cmd_align(args: argparse.Namespace) -> int:
    from residual_core.align_results import train_and_save
    from residual_core.progress import steps

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


def _cmd_geometry(args: argparse.Namespace) -> int:
    import numpy as np

    from residual_core.cache import load_cache
    from residual_core.geometry import head_geometry, head_spectral_cosine
    from residual_core.pipeline import PrecomputeSpec, precompute

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


def _cmd_datasets(args: argparse.Namespace) -> int:
    from residual_core.datasets import list_datasets

    rows = list_datasets()
    print(tables.table(["dataset", "classes", "where", "about"],
                       [[r["name"], r["classes"], "offline" if r["offline"] else "needs download", r["about"]]
                        for r in rows]))
    print(json.dumps(rows))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from residual_core.models import list_models

    rows = list_models()
    flags = {"hub": "needs network once", "file": "file missing"}
    print(tables.table(["name", "spec", "where", "about"],
                       [[r["name"], r["spec"], "offline" if r["offline"] else flags[r["source"]], r["about"]]
                        for r in rows]))
    print("Any open_clip ARCH:TAG (open_clip.list_pretrained()) or ARCH:/path/to/checkpoint also works.")
    print(json.dumps(rows))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.maps:
        from residual_core.maps_bench import run_maps_bench

        print(json.dumps(run_maps_bench()))
        return 0
    if args.words:
        from residual_core.words_bench import run_words_bench

        print(json.dumps(run_words_bench()))
        return 0
    if args.scorecard:
        from residual_core.scorecard_run import run_scorecard_bench

        print(json.dumps(run_scorecard_bench()))
        return 0
    if args.scale:
        from residual_core.scale_bench import run_scale

        chosen = {name: tuple(values) for name, values in (("sizes", args.sizes), ("classes", args.classes)) if values}
        print(json.dumps(run_scale(**chosen, all_heads=args.all_heads)))
        return 0
    from residual_core.bench import run_bench

    print(json.dumps(run_bench(args)))
    return 0


def _cmd_textbank(args: argparse.Namespace) -> int:
    from residual_core.textbank import write_bank

    path = write_bank()
    print(json.dumps({"path": str(path), "lines": len(path.read_text().splitlines())}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from residual_core.defaults import DEFAULT_DATASET, DEFAULT_MODEL, default_cache_dir

    parser = Parser(prog="python -m residual_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default=DEFAULT_MODEL, help="ARCH:PRETRAINED, ARCH:/path/ckpt or a short name")
        p.add_argument("--random-weights", action="store_true", help="seeded random weights (exactness checks)")
        p.add_argument("--seed", type=SEED, default=0)
        p.add_argument("--device", default="cpu", help="cpu or cuda")

    p = sub.add_parser("verify", help="check Σ units == encode_image on a batch")
    model_args(p)
    p.add_argument("--n-images", type=ranged(1, 4096), default=8)
    p.add_argument("--dataset", default=None, help="use real images from this dataset instead of noise")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("precompute", help="encode a dataset once into a cache")
    model_args(p)
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=_limit, default=None, help="images (default: the whole split; 2,000 for the demo "
                                                                "world's test split)")
    p.add_argument("--batch-size", type=BATCH, default=64)
    p.add_argument("--cache-dir", default=default_cache_dir(), help="also settable as RESIDUAL_CACHE")
    p.add_argument("--text-bank", default=None, help="text file, one description per line")
    p.add_argument("--basis-from", default=None, help="cache folder whose PCA basis to reuse")
    p.add_argument("--keep-shards", action="store_true", help="keep raw shards after finishing")
    p.add_argument("--basis-only", action="store_true",
                   help="stream the moments and keep only the per-head PCA basis (no per-image arrays); pass "
                        "the folder to later builds as --basis-from (the paper's ImageNet-train basis)")
    p.add_argument("--workers", type=ranged(0, 256), default=0,
                   help="data-loader processes decoding images in parallel (0: none; on a GPU node, about the "
                        "CPU cores per GPU minus one)")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"],
                   help="storage of head coefficients, emb and MLPs: float16 reconstructs encode_image to ~3e-4 "
                        "relative, float32 to ~1e-6 in a larger cache (bytes per image: docs/measurements.md)")
    p.set_defaults(func=_cmd_precompute)

    p = sub.add_parser("specialize", help="score heads on val (S, U|T, U, random), top-k accuracy on test")
    model_args(p)
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--val-split", default="val")
    p.add_argument("--test-split", default="test")
    p.add_argument("--limit", type=_limit, default=2_000,
                   help="images per split (default 2,000: minutes on 2 CPU cores with the demo model; 'all' for all)")
    p.add_argument("--batch-size", type=BATCH, default=64)
    p.add_argument("--n-random", type=ranged(1, 1000), default=10, help="random-score seeds")
    p.add_argument("--reference-compat", action="store_true",
                   help="the reference's Pearson scale ((n-1)/n) and torch.topk tie order (README: conventions)")
    p.add_argument("--cache-dir", default=default_cache_dir())
    p.set_defaults(func=_cmd_specialize)

    p = sub.add_parser("align", help="train ResiDual λ (or a baseline) on cached coefficients")
    model_args(p)
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--method", default="fine", choices=["zeroshot", "coarse", "fine", "full", "linear", "spectral"])
    p.add_argument("--limit", type=_limit, default=10_000,
                   help="images per split (default 10,000: the train split is cut to that, val and test of the demo "
                        "world have 2,000; a few minutes on 2 CPU cores; 'all' for the whole splits)")
    p.add_argument("--epochs", type=ranged(1, 100_000), default=30)
    p.add_argument("--align-seed", type=SEED, default=42)
    p.add_argument("--reference-compat", action="store_true", help="reproduce the reference code's quirks")
    p.add_argument("--identity-start", action="store_true", help="λ = 1 with means added back (not in the paper)")
    p.add_argument("--basis-from", default=None,
                   help="a cache or --basis-only folder whose PCA basis all three splits use (e.g. ImageNet train)")
    p.add_argument("--batch-size", type=BATCH, default=64)
    p.add_argument("--cache-dir", default=default_cache_dir())
    p.set_defaults(func=_cmd_align)

    p = sub.add_parser("geometry", help="per-head PR, PCs to 90/99 %%, TwoNN; spectral cosine to other datasets")
    model_args(p)
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=_limit, default=2_000, help="images (default 2,000; 'all' for the whole split)")
    p.add_argument("--compare", nargs="*", metavar="DATASET", help="datasets whose head bases to compare with")
    p.add_argument("--batch-size", type=BATCH, default=64)
    p.add_argument("--cache-dir", default=default_cache_dir())
    p.set_defaults(func=_cmd_geometry)

    from residual_core.cli_words import add_parsers

    add_parsers(sub, model_args, _limit, default_cache_dir())
    from residual_core.cli_maps import add_parser as add_maps

    add_maps(sub, model_args, _limit, DEFAULT_DATASET, default_cache_dir())
    from residual_core.cli_scorecard import add_parser as add_scorecard

    add_scorecard(sub, _limit, default_cache_dir())
    sub.add_parser("datasets", help="list registered datasets").set_defaults(func=_cmd_datasets)
    sub.add_parser("models", help="list registered model short names").set_defaults(func=_cmd_models)
    sub.add_parser("textbank", help="rewrite assets/text_bank.txt").set_defaults(func=_cmd_textbank)

    p = sub.add_parser("bench", help="speed and size figures, one JSON line")
    p.add_argument("--n-images", type=ranged(100, 100_000_000), default=10_000, help="images in the synthetic toggle cache")
    p.add_argument("--trace-images", type=ranged(1, 4096), default=32, help="images for the trace-overhead ratio")
    p.add_argument("--arch", default="ViT-B-32", help="architecture for the overhead and size figures")
    p.add_argument("--repeats", type=ranged(1, 100_000), default=50)
    p.add_argument("--with-subnormals", action="store_true",
                   help="also time λ training with subnormal arithmetic on (what flushing them saves; slow)")
    p.add_argument("--maps", action="store_true",
                   help="instead: per-token maps' speed and how well they point at the demo world's objects (issue 25)")
    p.add_argument("--words", action="store_true",
                   help="instead: TextSpan, concept search and the weights' reading at ViT-B-32 size (issue 24's figures)")
    p.add_argument("--scorecard", action="store_true",
                   help="instead: the whole scorecard on the demo model, 2,000 scenes per factor, once its caches "
                        "exist (issue 26's figure)")
    p.add_argument("--scale", action="store_true",
                   help="instead: toggles, head metrics and peak RSS at 10 k, 100 k and 1 M images (10 and 1,000 "
                        "classes), and the scaling exponent")
    p.add_argument("--sizes", type=ranged(100, 100_000_000), nargs="+", metavar="N",
                   help="with --scale: the cache sizes in images (default 10000 100000 1000000)")
    p.add_argument("--classes", type=ranged(2, 100_000), nargs="+", metavar="C",
                   help="with --scale: the class counts (default 10 1000)")
    p.add_argument("--all-heads", action="store_true",
                   help="with --scale: store all 144 heads at 1 M images too (21 GB of disk, about 45 min more)")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or a refused argument (2, its one line already printed)
        return done.code if isinstance(done.code, int) else 2
    try:
        return args.func(args)
    except BrokenPipeError:  # piped into head or less and closed early: nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume from the finished shards", file=sys.stderr)
        return 130
    except Exception as err:  # one line, never a traceback, unless RESIDUAL_DEBUG=1 asks for it (any error)
        if os.environ.get("RESIDUAL_DEBUG"):
            raise
        if _is_user_error(err):
            print(f"error: {_one_line(err)}", file=sys.stderr)
        else:
            print(f"error: unexpected {type(err).__name__}: {_one_line(err)} (rerun with RESIDUAL_DEBUG=1 for the "
                  "traceback, and please report it)", file=sys.stderr)
        return 2


# Errors that mean "bad input, here is what to do", by the module that defines them. Only modules this run
# imported are asked: an error class whose module was never loaded cannot have been raised (and listing
# models or datasets must not import torch just to name them).
USER_ERRORS = {"residual_core.store": ("CacheError",), "residual_core.sources": ("DatasetUnavailableError",),
               "residual_core.families.base": ("ModelLoadError", "UnsupportedModelError")}


def _is_user_error(err: Exception) -> bool:
    kinds = [ValueError, FileNotFoundError]
    for module, names in USER_ERRORS.items():
        if module in sys.modules:
            kinds += [getattr(sys.modules[module], name) for name in names]
    return isinstance(err, tuple(kinds))


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:500]


if __name__ == "__main__":
    sys.exit(main())
