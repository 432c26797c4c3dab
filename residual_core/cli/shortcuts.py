"""The command line's ``shortcuts``: which heads a shortcut runs through, and what switching them off buys."""

import argparse
import json
import sys

from residual_core.cli import tables
from residual_core.cli.args import batch_option, cache_dir_option, limit, model_options, ranged
from residual_core.build.defaults import DEFAULT_IMAGES

HEADERS = ["method", "switched off", "val worst", "val mean", "test worst", "test mean", "gain", "truth rank (1 = most)"]


def _pct(value: float) -> str:
    return "—" if value != value else f"{value:.1%}"


def shortcut_rows(report: dict) -> list[list[str]]:
    rows = []
    for m in report["methods"]:
        spread = f" ± {m['test']['worst_std']:.1%}" if "worst_std" in m["test"] else ""
        rows.append([m["method"], ", ".join(m["switches"]) or "—", _pct(m["val"]["worst"]), _pct(m["val"]["mean"]),
                     _pct(m["test"]["worst"]) + spread, _pct(m["test"]["mean"]),
                     "—" if m["gain"] != m["gain"] else f"{m['gain']:+.0%}",
                     _ranks(m)])
    return rows


def _ranks(method: dict) -> str:
    """'median 3 of 32': where a method's switches stand by the ground truth ('—' without one)."""
    ranks = method.get("truth_ranks")
    if not ranks:
        return "—"
    return f"median {sorted(ranks)[(len(ranks) - 1) // 2]} of {method['truth_of']}"


def cmd_shortcuts(args: argparse.Namespace) -> int:
    from residual_core.analysis.shortcuts_run import analyse, report_dict
    from residual_core.build.pipeline import PrecomputeSpec, precompute
    from residual_core.read.cache import load_cache

    common = dict(model=args.model, dataset=args.dataset, limit=args.limit, seed=args.seed, device=args.device,
                  cache_dir=args.cache_dir, random_weights=args.random_weights, batch_size=args.batch_size)
    val = load_cache(precompute(PrecomputeSpec(split=args.val_split, **common)))
    test = load_cache(precompute(PrecomputeSpec(split=args.test_split, **common)))
    words = [w.strip() for w in args.words.split(",") if w.strip()] if args.words else None
    report, spec = analyse(val, test, args.groups, words, args.max_heads, args.max_pcs, args.draws)
    out = report_dict(report, val.units, spec)
    print(tables.table(HEADERS, shortcut_rows(out)), file=sys.stderr)
    print(f"Groups: {out['source']} ({len(report.group_names)} on test). gain: the share of the test gap between the "
          f"worst group and the mean that the switch recovers. truth rank: where a method's heads (PCs) stand among all "
          f"heads (every head's first 8 PCs) by the η² of the attribute, 1 = carries it most.", file=sys.stderr)
    print(out["verdict"], file=sys.stderr)
    print(json.dumps({"model": args.model, "dataset": args.dataset, "val": args.val_split, "test": args.test_split,
                      "n_val": val.n_images, "n_test": test.n_images} | out, ensure_ascii=False))
    return 0


def register(sub) -> None:
    p = sub.add_parser("shortcuts", help="find the heads behind a shortcut; worst-group accuracy before and after")
    model_options(p)
    p.add_argument("--dataset", default="demo-world/shape", help="the task (default demo-world/shape)")
    p.add_argument("--groups", default=None,
                   help="the attribute that splits each class into groups: a demo-world factor (default colour on "
                        "demo-world/shape), folders (class/group/image) or csv:PATH (columns id,group, or "
                        "Waterbirds' metadata.csv)")
    p.add_argument("--words", default=None, help="comma-separated words for the attribute's values (default: the "
                                                 "group values), read by the words method")
    p.add_argument("--val-split", default="val", help="where heads are chosen")
    p.add_argument("--test-split", default="test", help="where what they buy is reported")
    p.add_argument("--limit", type=limit, default=DEFAULT_IMAGES, help="images per split (default 2,000; 'all' for all)")
    p.add_argument("--max-heads", type=ranged(1, 64), default=8, help="the most heads a method may switch off")
    p.add_argument("--max-pcs", type=ranged(1, 256), default=16, help="the most PCs a method may switch off")
    p.add_argument("--draws", type=ranged(1, 1000), default=20, help="random head sets drawn for the baseline")
    batch_option(p)
    cache_dir_option(p)
    p.set_defaults(func=cmd_shortcuts)
