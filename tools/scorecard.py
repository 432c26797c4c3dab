"""Write docs/scorecard.md: how right each explanation method is, against the demo world's ground truth.

    python tools/scorecard.py [--model demo] [--limit 2000] [--seeds 5] [--world-seed 7000]

Builds (or finds) the demo world's test caches, one per factor, scores every method's units (residual_core/
scorecard.py, scorecard_run.py) and writes the leaderboard, each factor's best unit and the failures (the units whose
label names something their images do not share) to docs/scorecard.md, and everything to out/scorecard.json.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from residual_core.cli.scorecard import leaderboard_table  # noqa: E402
from residual_core.explain.image_labels import ABSTAIN_ETA, MIN_LIFT  # noqa: E402
from residual_core.explain.scorecard_run import build_scorecard  # noqa: E402


def _failures(units, limit: int = 12) -> list[str]:
    wrong = sorted((s for s in units if s.labelled and not s.label_right), key=lambda s: -s.eta[s.factor])[:limit]
    return [f"| {s.unit.label} | {s.unit.text} | {s.factor} (η² {s.eta[s.factor]:.2f}) | {s.modal} "
            f"({s.purity:.0%} of the top 8) | {', '.join(sorted(v for vs in s.named.values() for v in vs)) or '—'} |"
            for s in wrong]


def _curve(test: list[dict], second: list[dict]) -> list[str]:
    """Precision and coverage of the labels read from the images over the abstention threshold, on both worlds."""
    def cell(c: dict) -> str:
        return f"{c['coverage']:.0%} | {c['precision']:.1%} | {c['label_ap']:.2f} / {c['ap_ceiling']:.2f}"

    return ["## Labels read from the images: precision against coverage", "",
            f"A pole's label abstains when the family it is read in explains less than a share η² of its score; the "
            f"shipped threshold is {ABSTAIN_ETA} (chosen on the test world). Per threshold: the share of poles labelled, "
            "their label accuracy, and their label AP against its ceiling, on the test world and on the second world.",
            "", "| η² ≥ | labelled (test) | accuracy (test) | label AP / ceiling (test) | labelled (second) | "
                "accuracy (second) | label AP / ceiling (second) |", "|---|---|---|---|---|---|---|",
            *(f"| {a['threshold']:.2f} | {cell(a)} | {cell(b)} |" for a, b in zip(test, second)), ""]


def _rules(worlds: dict) -> list[str]:
    """The labelled poles read four ways, scored on each world: what a second part buys, and what raw AP rewards."""
    rows = []
    for world, report in worlds.items():
        rules = report["label_rules"]
        for name in ("top images", "shipped", "best AP", "random small value"):
            r = rules[name]
            share = f"{r['label_ap'] / r['ap_ceiling']:.1%}; {r['ap_share_low']:.1%}–{r['ap_share_high']:.1%}"
            rows.append(f"| {world} | {name} | {r['label_accuracy']:.1%} | {r['label_ap']:.2f} / {r['ap_ceiling']:.2f} "
                        f"({share}) | {r['label_lift']:.2f} / {r['lift_ceiling']:.2f} "
                        f"({r['label_lift'] / r['lift_ceiling']:.0%}) | {r['second_parts']} of {r['units']} |")
    return ["## Label AP and chance", "",
            "The labelled poles read four ways from the full model's own readings (no ground truth): **top images** "
            "(the modal reading of the top 8 images, in the family that explains most of the pole's score); "
            "**shipped**, the same with its second part where there is one (the value the pole's score ranks best "
            "*above chance* over every image, (AP − p) / (1 − p) ≥ "
            f"{MIN_LIFT}, when it is another value); **best AP**, the value whose readings the score ranks best by raw "
            "AP; and **random small value**, a value of the family with the fewest values drawn at random (size: "
            "small or large). Label accuracy is scored on the first part alone (what the label says the top images "
            "share); label AP on every value the label names.", "",
            "Raw AP rewards naming a common value: half the scenes are large, so any score has AP ≈ 0.5 for "
            "\"large\", and the raw ceiling (each pole's best single-value AP) is a size value for most poles. "
            "A random size word alone reaches about three quarters of that ceiling. AP above chance, "
            "(AP − p) / (1 − p) with p the value's share of the scenes, is 0 for any random ranking and 1 for a "
            "perfect one; its ceiling is each pole's best value by the same measure. Beside each share of the "
            "ceiling, its 95 % bootstrap interval over the poles (2,000 resamples): how far it moves with the "
            "poles the model happens to have.", "",
            "| world | rule | label accuracy | label AP / ceiling (share; 95 % interval) | AP above chance / its ceiling "
            "| second parts |",
            "|---|---|---|---|---|---|", *rows, ""]


def _agreement(predicts: dict) -> list[str]:
    """Does agreement between methods (what the Scorecard page offers where there is no ground truth) predict a
    head's label accuracy?"""
    if not predicts:
        return []
    heads = next(iter(predicts.values())).heads
    return ["## Does agreement between methods predict a right label?", "",
            "Off the demo world there is no ground truth, and the Scorecard page offers agreement between methods "
            "instead (`residual_core/explain/agreement.py`). Here it can be checked: per head, the agreement against the share "
            f"of its labels that are right (all three methods' units), over {heads} heads.", "",
            "| agreement | Spearman ρ | p | labels right, heads at or above the median | labels right, the rest |",
            "|---|---|---|---|---|",
            *(f"| {name} | {p.rho:+.2f} | {p.p_value:.2f} | {p.accuracy_agreeing:.0%} | {p.accuracy_disagreeing:.0%} |"
              for name, p in predicts.items()), ""]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="demo")
    parser.add_argument("--limit", type=int, default=2_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--world-seed", type=int, default=7000, help="the fresh test world scored beside the shipped")
    args = parser.parse_args()
    report = build_scorecard(args.model, args.limit, seeds=args.seeds)
    second = build_scorecard(args.model, args.limit, seeds=args.seeds, split="val")
    fresh = build_scorecard(args.model, args.limit, seeds=args.seeds, world_seed=args.world_seed)
    rows = report["methods"]  # heatmaps: a row of their own (pointing game and mass on the objects)
    lines = ["# Scorecard: how right each explanation is", "",
             f"Generated by `python tools/scorecard.py --model {args.model} --limit {args.limit} --seeds {args.seeds} "
             f"--world-seed {args.world_seed}` on "
             f"the demo world's test split ({report['n_images']:,} scenes per factor; {report['seconds']:.0f} s of scoring "
             "after the caches exist). Definitions: `residual_core/explain/scorecard.py`. Random baselines: mean ± std over "
             f"{args.seeds} seeds.", "", "```", leaderboard_table(rows), "```", "",
             f"The same on a second world (the generator's val split: other scenes, other seeds; {second['n_images']:,} "
             "scenes per factor), which no threshold was chosen on:", "", "```", leaderboard_table(second["methods"]),
             "```", "",
             f"And on a fresh test world drawn by the same generator with seed {args.world_seed} (`scorecard --world-seed "
             f"{args.world_seed}`: demo-world/<factor>@{args.world_seed}, caches of its own; {fresh['n_images']:,} scenes "
             f"per factor, {fresh['undetermined_heads']} heads' causal factor undetermined):", "", "```",
             leaderboard_table(fresh["methods"]), "```", "",
             "- **read from the images**: each PC pole labelled by what the full model reads in its top 8 images (every "
             "image read zero-shot in each factor's class names; the factor whose readings explain most of the pole's "
             f"score; its modal value), no label where that share is below η² {ABSTAIN_ETA}; a second part names "
             f"the value the pole's score ranks best above chance over every image, where it is another one "
             f"(AP above chance ≥ {MIN_LIFT}) "
             "(`residual_core/explain/image_labels.py`);",
             "- **labelled**: the share of units a method puts a label on; label accuracy and label AP are over those;",
             "- **label accuracy**: the unit's text names the value its top 8 images share (any, where several tie), of "
             "the factor it explains most (η²);",
             "- **label AP**: over every image, the AP of the unit's score for the value its label names (its best "
             "named value; 0 when it names none): a label read from 8 images cannot win it by construction; "
             "**AP ceiling**: the unit's best AP for any single value, read with the ground truth; **AP above "
             "chance**: the same with each value's AP lifted over its share p of the scenes, (AP − p) / (1 − p), "
             "and **its ceiling** the unit's best value by that measure (see \"Label AP and chance\");", "- **coverage**: the share of the 35 factor values some unit of the method scores at AP ≥ 0.3;",
             "- **best η²**: for each factor, the unit that explains it most; the mean over the seven factors;",
             "- **causal agreement**: the unit's factor is the one whose accuracy falls most when its head is "
             "mean-ablated, over the heads where the images decide it (a bootstrap of 200 resamples: the 95 % interval "
             "of the top factor's fall minus the second's stays above 0; "
             f"{report['undetermined_heads']} of the test world's heads and {second['undetermined_heads']} of the "
             "second world's are undetermined and left out), with its 95 % Wilson interval;", "- **purity@8**: the share of the top 8 images sharing their modal value of the unit's "
             "factor;", "- baselines: **random directions** in each head's PC space, labelled by their nearest text; "
             "**random labels**, the PC poles under bank texts drawn at random; **random heads**, each head's PC poles "
             "under the labels and the ablation of another head (a random derangement), which keeps the texts and "
             "causal factors the method really produces and breaks only their tie to the head.", "",
             "Values no text of the bank names (so no text-space label can say them): "
             + ("; ".join(f"{f}: {', '.join(v)}" for f, v in report["unnameable"].items()) or
                "none: every factor's class names, through their first two prompt templates, join the shipped bank "
                "(without them: magenta, small, large and plain)") + ".", "",
             *_curve(report["abstention_curve"], second["abstention_curve"]),
             *_rules({"test": report, "val": second, f"fresh (seed {args.world_seed})": fresh}),
             *_agreement(report["agreement"])]
    for name in ("read from the images", "nearest texts per PC", "TextSpan", "weights' directions"):
        units = report["units"][name]
        lines += [f"## Best unit per factor: {name}", "", "| factor | unit | its label | η² |", "|---|---|---|---|"]
        for factor in units[0].eta:
            best = max(units, key=lambda s: s.eta[factor])
            lines.append(f"| {factor} | {best.unit.label} | {best.unit.text} | {best.eta[factor]:.2f} |")
        lines += ["", "### Where its labels fail (the most explanatory units first)", "",
                  "| unit | label | what it explains | what its top images share | what the label names |",
                  "|---|---|---|---|---|", *_failures(units), ""]
    (ROOT / "docs" / "scorecard.md").write_text("\n".join(lines))
    (ROOT / "out").mkdir(exist_ok=True)
    (ROOT / "out" / "scorecard.json").write_text(json.dumps({"methods": rows, "second_world": second["methods"],
                                                             "fresh_world": fresh["methods"],
                                                             "seconds": report["seconds"]}, indent=1))
    print(leaderboard_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
