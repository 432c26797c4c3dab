"""Every open_clip architecture through `verify --random-weights`: exact, or refused with one line and exit 2.

    python tools/registry_sweep.py [--budget-gb 12] [--only NAME ...]

Each architecture runs in its own process (a fresh interpreter, so one model's memory is returned before
the next). Architectures whose estimated fp32 weights exceed --budget-gb are not built, and are listed as
skipped with the estimate. Writes out/registry_sweep.json and docs/registry_sweep.md, and prints the summary
table (the README's).
``--only ARCH …`` re-runs those architectures and keeps the other rows of the last run.
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


def _reason(row: dict) -> str:
    """The refusal's kind, for grouping (the message without the architecture's own names)."""
    message = row.get("message", "")
    for key, label in (("timm model", "timm image tower (not open_clip's VisionTransformer)"),
                       ("ResNet", "ResNet image tower"), ("attentional pooling", "attentional pooling (CoCa)"),
                       ("pool_type", "average pooling"), ("text tower is the Hugging Face", "Hugging Face text "
                       "tower: its config needs the hub and the transformers package"), ("GB of fp32", "larger than "
                       "this machine's memory budget (not built)")):
        if key in message:
            return label
    return message


def summary(rows: list[dict]) -> str:
    exact = [r for r in rows if r["outcome"] == "exact"]
    lines = ["| outcome | architectures | detail |", "|---|---|---|"]
    if exact:
        worst = max(exact, key=lambda r: r["rel_err"])
        lines.append(f"| exact (rel_err ≤ {EXACT:g}) | {len(exact)} | largest rel_err {worst['rel_err']:.1e} "
                     f"({worst['arch']}); {', '.join(r['arch'] for r in exact)} |")
    groups: dict[str, list[str]] = {}
    for row in rows:
        if row["outcome"] != "exact":
            groups.setdefault(f"{row['outcome']}: {_reason(row)}", []).append(row["arch"])
    for label, archs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        outcome, reason = label.split(": ", 1)
        shown = ", ".join(archs) if len(archs) <= 12 else ", ".join(archs[:12]) + f", … ({len(archs) - 12} more)"
        lines.append(f"| {outcome} (one line, exit 2): {reason} | {len(archs)} | {shown} |" if outcome == "refused"
                     else f"| {outcome}: {reason} | {len(archs)} | {shown} |")
    return "\n".join(lines)


def full_table(rows: list[dict]) -> str:
    lines = ["| architecture | outcome | rel_err, or the one-line message | seconds |", "|---|---|---|---|"]
    for row in rows:
        detail = f"{row['rel_err']:.1e}" if "rel_err" in row else row.get("message", "").replace("|", "\\|")
        lines.append(f"| {row['arch']} | {row['outcome']} | {detail} | {row.get('seconds', '')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget-gb", type=float, default=12.0, help="largest estimated fp32 weights to build")
    parser.add_argument("--timeout", type=int, default=1200)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--out", default="out/registry_sweep.json")
    parser.add_argument("--doc", default="docs/registry_sweep.md")
    args = parser.parse_args()
    previous = json.loads(Path(args.out).read_text()) if args.only and Path(args.out).is_file() else []
    rows = [row for row in previous if row["arch"] not in set(args.only or ())]  # --only re-runs those rows
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
    order = {arch: i for i, arch in enumerate(open_clip.list_models())}
    rows.sort(key=lambda row: order.get(row["arch"], len(order)))
    Path(args.out).write_text(json.dumps(rows, indent=1))
    text = summary(rows)
    print(text)
    Path(args.doc).write_text("# open_clip registry sweep\n\nEvery architecture in open_clip "
                              f"{open_clip.__version__}'s registry through `python -m residual_core verify --model ARCH "
                              "--random-weights --n-images 1`, each in its own process (`python tools/registry_sweep.py`)."
                              "\n\n" + text + "\n\n## Every architecture\n\n" + full_table(rows) + "\n")
    bad = [r for r in rows if r["outcome"] in ("FAILED", "NOT EXACT", "timeout")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
