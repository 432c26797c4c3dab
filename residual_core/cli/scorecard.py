"""The command line's ``scorecard``: how right each explanation method is against the demo world's ground truth."""

import argparse
import json
import sys

from residual_core.cli import tables
from residual_core.cli.args import cache_dir_option, limit, ranged
from residual_core.explain.leaderboard import HEADERS, leaderboard_cells

def leaderboard_table(rows: dict) -> str:
    table = tables.table(list(HEADERS), leaderboard_cells(rows))
    maps = rows.get("heatmaps")
    if maps:
        table += (f"\nheatmaps ({maps['head']}'s push toward the true class, {maps['scenes']} scenes): pointing game "
                  f"{maps['pointing_game']:.0%}, mass on objects {maps['mass_on_objects']:.0%}; its raw attention: "
                  f"{maps['pointing_game_raw_attention']:.0%} and {maps['mass_on_objects_raw_attention']:.0%}")
    return table


def cmd_scorecard(args: argparse.Namespace) -> int:
    from residual_core.explain.leaderboard import verdict
    from residual_core.explain.scorecard_run import build_scorecard

    report = build_scorecard(args.model, args.limit, args.cache_dir, args.seeds)
    print(leaderboard_table(report["methods"]), file=sys.stderr)
    print(f"On {report['n_images']:,} test scenes per factor. {verdict(report)}", file=sys.stderr)
    print(json.dumps({"model": args.model, "n_images": report["n_images"], "methods": report["methods"],
                      "seconds": round(report["seconds"], 2)}))
    return 0


def register(sub) -> None:
    p = sub.add_parser("scorecard", help="how right each explanation is, against the demo world's ground truth")
    p.add_argument("--model", default="demo", help="a model whose demo-world caches to score (default demo)")
    p.add_argument("--limit", type=limit, default=2_000, help="test scenes per factor (default 2,000: all)")
    p.add_argument("--seeds", type=ranged(1, 100), default=5, help="seeds of the random baselines")
    cache_dir_option(p)
    p.set_defaults(func=cmd_scorecard)
