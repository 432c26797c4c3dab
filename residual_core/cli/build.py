"""``verify`` (Σ units == encode_image) and ``precompute`` (a dataset encoded once into a cache)."""

import argparse
import json
import sys

from residual_core.build.defaults import DEFAULT_DATASET, DEFAULT_IMAGES
from residual_core.cli import tables
from residual_core.cli.args import batch_option, cache_dir_option, limit, model_options, ranged


def cmd_verify(args: argparse.Namespace) -> int:
    import torch

    from residual_core.engine.decompose import decompose_images
    from residual_core.engine.models import load_clip, parse_model_spec

    loaded = load_clip(parse_model_spec(args.model, args.random_weights, args.seed), device=args.device, text=False)
    size = loaded.arch.image_size
    generator = torch.Generator().manual_seed(args.seed)
    if args.dataset:
        from residual_core.data.datasets import load_dataset

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


def cmd_precompute(args: argparse.Namespace) -> int:
    from residual_core.read.cache import load_cache
    from residual_core.build.pipeline import PrecomputeSpec, distributed_ranks, precompute
    from residual_core.build.store import read_manifest

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
        listed = manifest["skipped"]["first"]
        empty = [item["id"] for item in listed if item["id"].endswith("/")]
        if empty:
            print(f"class folder(s) with no image, left out: {', '.join(empty[:10])}", file=sys.stderr)
        print(f"{skipped} entr{'y was' if skipped == 1 else 'ies were'} left out (unreadable images, links out of the "
              "folder, empty class folders); the manifest lists each with why", file=sys.stderr)
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


def register(sub) -> None:
    p = sub.add_parser("verify", help="check Σ units == encode_image on a batch")
    model_options(p)
    p.add_argument("--n-images", type=ranged(1, 4096), default=8)
    p.add_argument("--dataset", default=None, help="use real images from this dataset instead of noise")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("precompute", help="encode a dataset once into a cache")
    model_options(p)
    p.add_argument("--dataset", default=DEFAULT_DATASET)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=limit, default=DEFAULT_IMAGES,
                   help="images (default 2,000, as every command and the dashboard: one cache; 'all' for the whole split)")
    batch_option(p)
    cache_dir_option(p)
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
    p.set_defaults(func=cmd_precompute)
