"""Every open_clip architecture through `verify --random-weights`: exact, or refused with one line and exit 2.

    python tools/registry_sweep.py [--budget-gb 12] [--only NAME ...]

Each architecture runs in its own process (a fresh interpreter, so one model's memory is returned before
the next). Architectures whose estimated fp32 weights exceed --budget-gb are not built, and are listed as
skipped with the estimate. Writes out/registry_sweep.json and prints a Markdown table.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import open_clip

EXACT = 1e-5


def estimated_params(config: dict) -> int:
    """Transformer weights ≈ 12·width²·layers per tower (attention 4w², MLP 8w² at ratio 4)."""
    total = 0
    for tower in ("vision_cfg", "text_cfg"):
        cfg = config.get(tower) or {}
        layers, width = cfg.get("layers"), cfg.get("width")
        if isinstance(layers, int) and isinstance(width, int):
            ratio = cfg.get("mlp_ratio", 4.0)
            total += int(layers * width * width * (4 + 2 * ratio))
    return total


def run_one(arch: str, timeout: int) -> dict:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "residual_core", "verify", "--model", arch, "--random-weights", "--n-images", "1"]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"arch": arch, "outcome": "timeout", "seconds": timeout}
    seconds = round(time.perf_counter() - started, 1)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    row = {"arch": arch, "rc": done.returncode, "seconds": seconds, "traceback": "Traceback" in done.stderr}
    if done.returncode == 0 and done.stdout.strip():
        report = json.loads(done.stdout.strip().splitlines()[-1])
        row |= {"rel_err": report["rel_err"], "n_heads": report["n_heads"],
                "outcome": "exact" if report["rel_err"] <= EXACT else "NOT EXACT"}
    elif done.returncode == 2 and len(errors) == 1 and not row["traceback"]:
        row |= {"outcome": "refused", "message": errors[0][len("error: "):]}
    else:
        row |= {"outcome": "FAILED", "message": (done.stderr.strip().splitlines() or [""])[-1][:300]}
    return row


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget-gb", type=float, default=12.0, help="largest estimated fp32 weights to build")
    parser.add_argument("--timeout", type=int, default=1200)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--out", default="out/registry_sweep.json")
    args = parser.parse_args()
    rows = []
    for arch in args.only or open_clip.list_models():
        config = open_clip.get_model_config(arch) or {}
        gigabytes = estimated_params(config) * 4 / 2**30
        if gigabytes > args.budget_gb:
            row = {"arch": arch, "outcome": "skipped", "message": f"≈{gigabytes:.1f} GB of fp32 weights (estimated) "
                   f"> {args.budget_gb:g} GB budget on this 24 GB machine"}
        else:
            row = run_one(arch, args.timeout)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print("| architecture | outcome | rel_err / message |\n|---|---|---|")
    for row in rows:
        detail = f"{row['rel_err']:.1e}" if "rel_err" in row else row.get("message", "")
        print(f"| {row['arch']} | {row['outcome']} | {detail} |")
    bad = [r for r in rows if r["outcome"] in ("FAILED", "NOT EXACT", "timeout")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
