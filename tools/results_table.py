"""The README's results: every alignment method over several seeds, and head-specialisation curves.

    python tools/results_table.py [--model demo] [--limit 10000] [--seeds 0 1 2] [--out out/results_table.json]

Runs the same code as ``python -m residual_core align`` and ``specialize`` (one process, so caches and the
model load once). Prints the Markdown alignment table (test accuracy, mean ± std over the seeds; the seed
draws λ's initialisation and the batch order), then writes docs/results.md with that table and, per
dataset, the top-k specialisation curves (S, U|T, U, random band) with zero and mean ablation. Each run is
also saved beside its train cache, where the Alignment page shows it.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from residual_core.analysis.align import METHODS, align
from residual_core.analysis.align_results import result_tag, save_result, split_caches
from residual_core.build.pipeline import default_cache_dir
from residual_core.analysis.specialize import specialize

DATASETS = ["demo-world/shape", "demo-world/colour", "demo-world/size", "demo-world/position",
            "demo-world/texture", "demo-world/count", "demo-world/digit", "mnist-offline"]
SEEDLESS = ("zeroshot",)  # no parameters: one run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--limit", type=int, default=10_000, help="train images per dataset (val/test: all)")
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--cache-dir", default=default_cache_dir())
    parser.add_argument("--out", default="out/results_table.json")
    parser.add_argument("--doc", default="docs/results.md")
    parser.add_argument("--card", default="assets/demo/results.json", help="the curves the demo model card quotes")
    args = parser.parse_args()
    rows, curves = [], {}
    for dataset in args.datasets:
        train_dir, train, val, test = split_caches(model=args.model, dataset=dataset, limit=args.limit,
                                                   cache_dir=args.cache_dir)
        for method in METHODS:
            for seed in args.seeds[:1] if method in SEEDLESS else args.seeds:
                result = align(train, val, test, method, seed=seed)
                save_result(train_dir, result, result_tag(method) + f"_seed{seed}",
                            {"model": args.model, "dataset": dataset, "limit": args.limit, "epochs": 30, "seed": seed})
                rows.append({"dataset": dataset, "method": method, "seed": seed, "n_params": result.n_params,
                             "test_acc": result.test_acc, "val_acc": result.val_acc, "seconds": result.seconds,
                             "best_epoch": result.best_epoch, "n_train": train.n_images, "n_test": test.n_images})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        report = specialize(val, test)
        curves[dataset] = {k: report[k] for k in ("k", "n_heads", "curves", "baselines")} | {
            "n_val": val.n_images, "n_test": test.n_images}
        print(json.dumps({"dataset": dataset, "specialisation": curves[dataset]["baselines"]}), file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report = {"alignment": rows, "specialisation": curves, "seeds": args.seeds, "model": args.model,
              "limit": args.limit}
    Path(args.out).write_text(json.dumps(report, indent=1))
    if args.model == "demo":  # the model card quotes the curves (python -m residual_core.demo.card)
        Path(args.card).write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(rows)
    print(table)
    Path(args.doc).write_text(document(table, curves, args))


def _cell(values: list[float]) -> str:
    values = 100 * np.asarray(values)
    return f"{values.mean():.1f}" if len(values) == 1 else f"{values.mean():.1f} ± {values.std():.1f}"


def markdown(rows: list[dict]) -> str:
    """Test accuracy (%) per dataset and method, mean ± std over seeds; parameter counts in the header."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    params = {m: next(r["n_params"] for r in rows if r["method"] == m) for m in METHODS}
    lines = ["| dataset (train / test images) | " + " | ".join(f"{m} ({params[m]:,})" for m in METHODS) + " |",
             "|---|" + "---|" * len(METHODS)]
    for dataset in datasets:
        runs = {m: [r for r in rows if r["dataset"] == dataset and r["method"] == m] for m in METHODS}
        first = runs[METHODS[0]][0]
        cells = []
        for m in METHODS:
            count = runs[m][0]["n_params"]
            cells.append(_cell([r["test_acc"] for r in runs[m]]) + (f" ({count:,})" if count != params[m] else ""))
        lines.append(f"| {dataset} ({first['n_train']:,} / {first['n_test']:,}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_table(curve: dict) -> str:
    """One dataset's top-k test accuracy (%) by score, zero / mean ablation of every other unit."""
    lines = ["| k heads | S | U\\|T | U | random (mean ± std of 10) |", "|---|---|---|---|---|"]
    for i, k in enumerate(curve["k"]):
        cells = [f"{100 * curve['curves'][m]['zero'][i]:.1f} / {100 * curve['curves'][m]['mean'][i]:.1f}"
                 for m in ("S", "U|T", "U")]
        rand = curve["curves"]["random"]
        cells.append(" / ".join(f"{100 * rand[mode]['mean'][i]:.1f} ± {100 * rand[mode]['std'][i]:.1f}"
                                for mode in ("zero", "mean")))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    base = curve["baselines"]
    lines.append(f"| all {curve['n_heads']} (H) | {100 * base['H_zero']:.1f} / {100 * base['H_mean']:.1f} | | | "
                 f"full model (B): {100 * base['B']:.1f} |")
    return "\n".join(lines)


def document(table: str, curves: dict, args) -> str:
    parts = [f"# Results on offline data ({args.model} model)\n",
             f"Produced by `python tools/results_table.py` (seeds {' '.join(map(str, args.seeds))}; train limit "
             f"{args.limit:,}). Test accuracy (%), mean ± std over the seeds (zero-shot has no seed).\n", table,
             "\n## Head specialisation\n",
             "Heads scored on val by S, U|T and U (the reference's formulas), the top k kept on test; every other "
             "unit (heads, MLPs, emb) removed (zero) or replaced by its test mean (mean). Cells: zero / mean.\n"]
    for dataset, curve in curves.items():
        parts.append(f"\n### {dataset} (val {curve['n_val']:,} / test {curve['n_test']:,})\n")
        parts.append(curve_table(curve))
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
