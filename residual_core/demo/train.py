"""Train the demo CLIP on the attribute world: ``python -m residual_core.demo.train``.

open_clip's own model class (config ``residual-demo``), tokenizer and contrastive loss; fixed seed;
a GPU is used when present. The weights are written as fp16 safetensors (the model runs in fp32:
fp16 values are exactly representable, so exactness is unaffected) with a sha256 sidecar.
"""

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from residual_core.demo.captions import caption
from residual_core.data.world import CLASSNAMES, FACTORS, TEMPLATES, labels_of, world
from residual_core.engine.families.openclip import ensure_configs_registered
from residual_core.engine.models import ASSETS, sha256_file

ARCH = "residual-demo"
WEIGHTS = ASSETS / "demo" / "residual-demo.safetensors"


def normalise(images: np.ndarray, device: str) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> the open_clip val transform's output [n, 3, H, W] (same size, no resize)."""
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 255.0  # [n, 3, H, W]
    return (x - mean) / std


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, images: np.ndarray, scenes, device: str) -> dict[str, float]:
    model.eval()
    feats = torch.cat([model.encode_image(normalise(images[i:i + 500], device), normalize=True)
                       for i in range(0, len(images), 500)])
    out = {}
    for factor in FACTORS:
        weights = open_clip.build_zero_shot_classifier(model, tokenizer, list(CLASSNAMES[factor]),
                                                       list(TEMPLATES[factor]), device=device)
        pred = (feats @ weights).argmax(1).cpu().numpy()
        out[factor] = float((pred == labels_of(scenes, factor)).mean())
    model.train()
    return out


@dataclass(frozen=True)
class Stage:
    """One training stage: a fresh AdamW with warm-up then cosine over ``steps``."""

    steps: int
    lr: float
    solo: tuple[str, ...] = ()  # FACTOR=P: a caption names only FACTOR with probability P
    emphasis: tuple[str, ...] = ()  # FACTOR=P: mixed captions mention FACTOR with probability ≥ P


# The shipped recipe; assets/demo/MODEL_CARD.md explains the search that led to it.
RECIPE = (
    Stage(2400, 1e-3, solo=("digit=0.3",), emphasis=("shape=0.8", "position=0.8", "size=0.8", "count=0.8")),
    Stage(500, 5e-4, solo=("digit=0.2", "shape=0.15"),
          emphasis=("shape=0.9", "position=0.8", "size=0.8", "count=0.8")),
)


def _round_to_fp16(model: torch.nn.Module) -> None:
    """What saving (fp16) and reloading between stages does: a stage starts from exactly the shipped values."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def _train_stage(model, stage: Stage, args, scenes, images, val_scenes, val_images, tokenizer, device,
                 checkpoint: Path | None = None) -> dict:
    """One stage; with ``checkpoint``, its state is saved every ``args.checkpoint_every`` steps and a run that finds
    the file resumes from it (the same batches and captions as a run that never stopped)."""
    started = time.time()
    # every stage is seeded afresh, so a stage run with --init gives the same model as the stage run in line
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    emphasis, solo = _probabilities(stage.emphasis), _probabilities(stage.solo)
    loss_fn = open_clip.ClipLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=stage.lr, betas=(0.9, 0.98))
    warmup = max(1, stage.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) /
                                                                               max(1, stage.steps - warmup))))
    history = []
    order = rng.permutation(len(scenes))
    cursor, first, step_seconds = 0, 0, 0.0  # step_seconds: training steps only (no rendering, no evaluation)
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=True)  # written by this function, tensors and text only
        model.load_state_dict(saved["model"])
        optim.load_state_dict(saved["optim"])
        schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["torch_rng"])
        rng.bit_generator.state = json.loads(saved["numpy_rng"])
        order, cursor, first = saved["order"].numpy(), int(saved["cursor"]), int(saved["step"])
        history, step_seconds = json.loads(saved["history"]), float(saved["step_seconds"])
        print(f"resumed from {checkpoint} at step {first}", flush=True)
    bar = tqdm(range(first, stage.steps), desc="training demo CLIP", unit="step", initial=first, total=stage.steps)
    for step in bar:
        tick = time.perf_counter()
        if cursor + args.batch_size > len(order):
            order, cursor = rng.permutation(len(scenes)), 0
        idx = order[cursor:cursor + args.batch_size]
        cursor += args.batch_size
        texts = tokenizer([caption(scenes[i], rng, emphasis, solo) for i in idx]).to(device)
        out = model(normalise(images[idx], device), texts)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step_seconds += time.perf_counter() - tick
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % args.eval_every == 0 or step + 1 == stage.steps:
            acc = zero_shot_accuracy(model, tokenizer, val_images, val_scenes, device)
            history.append({"step": step + 1, "loss": float(loss.item()), "val": acc,
                            "minutes": (time.time() - started) / 60})
            print(json.dumps(history[-1]), flush=True)
        if checkpoint is not None and ((step + 1) % args.checkpoint_every == 0 or step + 1 == stage.steps):
            state = {"model": model.state_dict(), "optim": optim.state_dict(), "schedule": schedule.state_dict(),
                     "torch_rng": torch.get_rng_state(), "numpy_rng": json.dumps(rng.bit_generator.state),
                     "order": torch.from_numpy(order), "cursor": cursor, "step": step + 1,
                     "history": json.dumps(history), "step_seconds": step_seconds}
            torch.save(state, str(checkpoint) + ".tmp")
            os.replace(str(checkpoint) + ".tmp", checkpoint)  # a stop mid-write keeps the previous checkpoint
    return {"emphasis": emphasis, "solo": solo, "steps": stage.steps, "batch_size": args.batch_size,
            "lr": stage.lr, "seed": args.seed, "n_train": args.n_train, "device": device,
            "threads": torch.get_num_threads(), "minutes": (time.time() - started) / 60,
            "seconds_per_step": step_seconds / max(stage.steps, 1), "history": history}


def stages_of(args: argparse.Namespace) -> tuple[Stage, ...]:
    """The shipped RECIPE, or one stage when any of --steps/--lr/--solo/--emphasis is given."""
    if all(getattr(args, k) is None for k in ("steps", "lr", "solo", "emphasis")):
        return RECIPE
    first = RECIPE[0]
    return (Stage(args.steps if args.steps is not None else first.steps,
                  args.lr if args.lr is not None else first.lr,
                  tuple(args.solo) if args.solo is not None else first.solo,
                  tuple(args.emphasis) if args.emphasis is not None else first.emphasis),)


def train(args: argparse.Namespace) -> dict:
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    stages = stages_of(args)
    torch.manual_seed(args.seed)
    ensure_configs_registered()
    model = open_clip.create_model(ARCH, output_dict=True).to(device)
    if args.init:  # a later stage continues from earlier weights (fp16 on disk, fp32 here)
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(args.init).items()})
    if args.freeze:  # e.g. the shortcut model: only the text tower learns the tie; the image tower stays the demo's
        for param in getattr(model, args.freeze).parameters():
            param.requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(ARCH)
    print(f"rendering {args.n_train} training scenes of the {args.world} world …", flush=True)
    if args.world == "shortcut":
        from residual_core.demo.shortcut import shortcut_world

        scenes, images = shortcut_world(args.n_train, workers=args.workers, tie=args.tie)
    else:
        scenes, images = world("train", args.n_train, workers=args.workers)
    val_scenes, val_images = world("val", args.n_val, workers=args.workers)
    reports = []
    for i, stage in enumerate(stages):
        if i:
            _round_to_fp16(model)
        print(f"stage {i + 1} of {len(stages)}: {stage}", flush=True)
        checkpoint = Path(f"{args.out}.stage{i + 1}.ckpt") if args.checkpoint_every else None
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        reports.append(_train_stage(model, stage, args, scenes, images, val_scenes, val_images, tokenizer, device,
                                    checkpoint) | {"init": args.init if i == 0 else f"stage {i}", "world": args.world})
    weights = Path(args.out)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"arch": ARCH, "seed": str(args.seed),
                                             "steps": str(sum(st.steps for st in stages))})
    (weights.parent / (weights.name + ".sha256")).write_text(f"{sha256_file(weights)}  {weights.name}\n")
    log_path = weights.parent / "training_log.json"
    previous = []  # a run with --init appends itself to the earlier stages' log
    if args.init and log_path.is_file():
        earlier = json.loads(log_path.read_text())
        previous = earlier.get("stages", [earlier])
    report = {"stages": previous + reports}
    log_path.write_text(json.dumps(report, indent=1))
    return report


def _probabilities(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        factor, _, p = item.partition("=")
        if factor not in FACTORS or not p:
            raise SystemExit(f"expected FACTOR=P with FACTOR one of {', '.join(FACTORS)}; got {item!r}")
        out[factor] = float(p)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m residual_core.demo.train", description=__doc__)
    parser.add_argument("--steps", type=int, default=None, help="one stage of this many steps (default: the recipe)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=60_000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(WEIGHTS), help="where to write the safetensors weights")
    parser.add_argument("--init", default=None, help="continue from these weights (a later training stage)")
    # without --steps/--lr/--solo/--emphasis: the shipped RECIPE (its stages one after the other)
    parser.add_argument("--emphasis", nargs="*", default=None, metavar="FACTOR=P",
                        help="mention FACTOR in captions with probability ≥ P, e.g. digit=0.9")
    parser.add_argument("--solo", nargs="*", default=None, metavar="FACTOR=P",
                        help="with probability P a caption names FACTOR alone, e.g. digit=0.3")
    parser.add_argument("--world", choices=["demo", "shortcut"], default="demo",
                        help="the training world: the demo world, or the shortcut world (colour tied to shape in training)")
    parser.add_argument("--tie", type=float, default=None,
                        help="shortcut world: share of training scenes whose colour follows their shape (default 0.98)")
    parser.add_argument("--freeze", choices=["visual"], default=None,
                        help="keep the image tower as --init has it (train the text tower and logit scale only)")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="save the training state every N steps beside --out and resume from it when run again")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes that render the training world")
    report = train(parser.parse_args())
    last = report["stages"][-1]
    print(json.dumps({k: v for k, v in last.items() if k != "history"} | {"final_val": last["history"][-1]["val"]}))


if __name__ == "__main__":
    main()
