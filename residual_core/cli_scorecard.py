"""The command line's ``scorecard``: how right each explanation method is against the demo world's ground truth."""

import argparse
import json
import sys

from residual_core import cli_tables as tables
from residual_core.cli_args import ranged

COLUMNS = ("label_accuracy", "coverage", "best_eta_mean", "causal_agreement", "purity_mean")


HEADERS = ("method", "units", "label accuracy", "coverage (AP ≥ 0.3)", "best η² (mean over factors)",
           "causal agreement", "purity@8")


def leaderboard_cells(rows: dict) -> list[list[str]]:
    """The leaderboard as text, one list per method in ``HEADERS``' order (a baseline's cells as mean ± std); the
    terminal's table and the Scorecard page both show these."""
    def cell(row: dict, key: str) -> str:
        spread, fmt = row.get(f"{key}_std"), ".2f" if key == "best_eta_mean" else ".1%"  # η² is a share, not a rate
        return f"{row[key]:{fmt}}" + (f" ± {spread:{fmt}}" if spread is not None else "")

    return [[name, f"{row['units']:.0f}", *(cell(row, k) for k in COLUMNS)] for name, row in rows.items()
            if "label_accuracy" in row]  # the heatmaps row has scores of its own


def leaderboard_table(rows: dict) -> str:
    table = tables.table(list(HEADERS), leaderboard_cells(rows))
    maps = rows.get("heatmaps")
    if maps:
        table += (f"\nheatmaps ({maps['head']}'s push toward the true class, {maps['scenes']} scenes): pointing game "
                  f"{maps['pointing_game']:.0%}, mass on objects {maps['mass_on_objects']:.0%}; its raw attention: "
                  f"{maps['pointing_game_raw_attention']:.0%} and {maps['mass_on_objects_raw_attention']:.0%}")
    return table


def cmd_scorecard(args: argparse.Namespace) -> int:
    from residual_core.scorecard_run import build_scorecard, verdict

    report = build_scorecard(args.model, args.limit, args.cache_dir, args.seeds)
    print(leaderboard_table(report["methods"]), file=sys.stderr)
    print(f"On {report['n_images']:,} test scenes per factor. {verdict(report)}", file=sys.stderr)
    print(json.dumps({"model": args.model, "n_images": report["n_images"], "methods": report["methods"],
                      "seconds": round(report["seconds"], 2)}))
    return 0


def add_parser(sub, limit_type, default_cache_dir: str) -> None:
    p = sub.add_parser("scorecard", help="how right each explanation is, against the demo world's ground truth")
    p.add_argument("--model", default="demo", help="a model whose demo-world caches to score (default demo)")
    p.add_argument("--limit", type=limit_type, default=2_000, help="test scenes per factor (default 2,000: all)")
    p.add_argument("--seeds", type=ranged(1, 100), default=5, help="seeds of the random baselines")
    p.add_argument("--cache-dir", default=default_cache_dir)
    p.set_defaults(func=cmd_scorecard)
