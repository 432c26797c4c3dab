"""The command line's ``scorecard``: how right each explanation method is against the demo world's ground truth."""

import argparse
import json
import sys

from residual_core.cli import tables
from residual_core.cli.args import cache_dir_option, limit, ranged
from residual_core.explain.leaderboard import HEADERS, leaderboard_cells
from residual_core.build.defaults import DEFAULT_IMAGES

def leaderboard_table(rows: dict) -> str:
    table = tables.table(list(HEADERS), leaderboard_cells(rows))
    maps = rows.get("heatmaps")
    if maps:
        table += (f"\nheatmaps ({maps['head']}'s push toward the true class, {maps['scenes']} scenes): pointing game "
                  f"{maps['pointing_game']:.0%}, mass on objects {maps['mass_on_objects']:.0%}; its raw attention: "
                  f"{maps['pointing_game_raw_attention']:.0%} and {maps['mass_on_objects_raw_attention']:.0%}")
    return table


def agreement_table(report: dict) -> str:
    from residual_core.explain.agreement import MEASURES

    rows = [[h["head"], *("—" if h[k] is None else (f"{h[k]:.2f}" if k == "data ↔ weights" else f"{h[k]:.0%}")
                          for k in MEASURES), " · ".join(h["shared_texts"]) or "—"] for h in report["heads"]]
    return tables.table(["head", *MEASURES, "texts two methods name"], rows)


def cmd_agreement(args: argparse.Namespace) -> int:
    """``scorecard --dataset D`` off the demo world: agreement between methods per head, pole purity by class."""
    from residual_core.build.pipeline import PrecomputeSpec, precompute
    from residual_core.engine.families.base import ModelLoadError
    from residual_core.engine.models import load_clip, parse_model_spec
    from residual_core.explain.agreement import agreement_report
    from residual_core.explain.weights_reading import read_weights
    from residual_core.read.cache import load_cache

    cache = load_cache(precompute(PrecomputeSpec(model=args.model, dataset=args.dataset, split=args.split,
                                                 limit=args.limit, cache_dir=args.cache_dir)))
    try:
        loaded = load_clip(parse_model_spec(args.model), text=False)
        readings, missing = read_weights(loaded.model, cache.text_embeds), ""
    except ModelLoadError as err:  # the cache is here, the weights are not: the other columns still say something
        readings, missing = None, str(err)
    report = agreement_report(cache, readings, missing)
    print(agreement_table(report), file=sys.stderr)
    means = ", ".join(f"{k} {v:.2f}" if k == "data ↔ weights" else f"{k} {v:.0%}"
                      for k, v in report["mean_agreement"].items() if v is not None)
    print(f"{args.dataset} has no ground truth for what a head encodes, so its explanations are not scored; what "
          f"needs none: agreement between methods (Jaccard of the texts each names; mean over heads: {means}) and "
          f"pole purity by class (the share of a PC pole's top 8 images in one class; mean "
          f"{report['pole_purity_mean']:.0%} over {cache.n_images:,} images).", file=sys.stderr)
    if missing:
        print(f"The weights' columns are empty: {missing}", file=sys.stderr)
    print(json.dumps({"model": args.model, "dataset": args.dataset, "split": args.split, "n_images": cache.n_images}
                     | report, ensure_ascii=False))
    return 0


def cmd_scorecard(args: argparse.Namespace) -> int:
    from residual_core.data.world import is_world_dataset
    from residual_core.explain.leaderboard import verdict
    from residual_core.explain.scorecard_run import build_scorecard

    if args.dataset and not is_world_dataset(args.dataset):
        return cmd_agreement(args)

    report = build_scorecard(args.model, args.limit, args.cache_dir, args.seeds, world_seed=args.world_seed)
    print(leaderboard_table(report["methods"]), file=sys.stderr)
    print(f"On {report['n_images']:,} test scenes per factor. {verdict(report)}", file=sys.stderr)
    curve = report.get("abstention_curve", [])
    if curve:
        print("Labels read from the images, by abstention threshold (η²): " + ", ".join(
            f"{c['threshold']:.2f}: {c['coverage']:.0%} labelled at {c['precision']:.0%}" for c in curve),
            file=sys.stderr)
    if "undetermined_heads" in report:
        print(f"Causal agreement leaves out the {report['undetermined_heads']} heads whose causal factor the images do "
              f"not decide (a bootstrap over images: the top factor's fall is not clearly above the second's); its "
              f"rates carry their 95 % interval.", file=sys.stderr)
    missing = report.get("unnameable", {})
    print("Values no text of the bank names (no text-space label can say them): " +
          ("; ".join(f"{f}: {', '.join(v)}" for f, v in missing.items()) or "none"), file=sys.stderr)
    print(json.dumps({"model": args.model, "world_seed": args.world_seed, "n_images": report["n_images"],
                      "methods": report["methods"],
                      "abstention_curve": curve, "unnameable": missing,
                      "undetermined_heads": report.get("undetermined_heads"), "seconds": round(report["seconds"], 2)}))
    return 0


def register(sub) -> None:
    p = sub.add_parser("scorecard", help="how right each explanation is, against the demo world's ground truth; "
                                         "on another --dataset, how far the methods agree")
    p.add_argument("--model", default="demo", help="a model whose demo-world caches to score (default demo)")
    p.add_argument("--limit", type=limit, default=DEFAULT_IMAGES, help="test scenes per factor (default 2,000: all)")
    p.add_argument("--seeds", type=ranged(1, 100), default=5, help="seeds of the random baselines")
    p.add_argument("--world-seed", type=ranged(0, 2 ** 31 - 1), default=None,
                   help="score on a fresh test world drawn by the same generator with this seed (its own caches)")
    p.add_argument("--dataset", default=None,
                   help="any dataset: off the demo world, agreement between methods and pole purity (no ground truth)")
    p.add_argument("--split", default="test", help="the split of --dataset (default test)")
    cache_dir_option(p)
    p.set_defaults(func=cmd_scorecard)
