"""The README's results table: every alignment method on the data this project reaches offline.

    python tools/results_table.py [--model demo] [--limit 10000] [--out out/results_table.json]

Runs the same code as ``python -m residual_core align`` (one process, so caches and the model load
once) and prints a Markdown table of test accuracy and parameter counts; results are also saved beside
each train cache, where the Alignment page shows them.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from residual_core.align import METHODS, align, result_tag, save_result, split_caches
from residual_core.pipeline import default_cache_dir

DATASETS = ["demo-world/shape", "demo-world/colour", "demo-world/size", "demo-world/position",
            "demo-world/texture", "demo-world/count", "demo-world/digit", "mnist-offline"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--limit", type=int, default=10_000, help="train images per dataset (val/test: all)")
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    parser.add_argument("--cache-dir", default=default_cache_dir())
    parser.add_argument("--out", default="out/results_table.json")
    args = parser.parse_args()
    rows = []
    for dataset in args.datasets:
        train_dir, train, val, test = split_caches(model=args.model, dataset=dataset, limit=args.limit,
                                                   cache_dir=args.cache_dir)
        for method in METHODS:
            result = align(train, val, test, method)
            save_result(train_dir, result, result_tag(method), {"model": args.model, "dataset": dataset,
                                                                "limit": args.limit, "epochs": 30, "seed": 42})
            rows.append({"dataset": dataset, "method": method, "n_params": result.n_params,
                         "test_acc": result.test_acc, "val_acc": result.val_acc, "seconds": result.seconds,
                         "n_train": train.n_images, "n_test": test.n_images})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    """Test accuracy (%) per dataset and method; parameter counts in the header (in a cell where they differ)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    params = {m: next(r["n_params"] for r in rows if r["method"] == m) for m in METHODS}
    lines = ["| dataset (train / test images) | " + " | ".join(f"{m} ({params[m]:,})" for m in METHODS) + " |",
             "|---|" + "---|" * len(METHODS)]
    for dataset in datasets:
        cells = {r["method"]: r for r in rows if r["dataset"] == dataset}
        first = cells[METHODS[0]]
        lines.append(f"| {dataset} ({first['n_train']:,} / {first['n_test']:,}) | " + " | ".join(
            f"{100 * cells[m]['test_acc']:.1f}" + (f" ({cells[m]['n_params']:,})" if cells[m]["n_params"] != params[m]
                                                   else "") for m in METHODS) + " |")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
