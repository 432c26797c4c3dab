"""The scorecard's leaderboard as text, and its verdict: what the terminal's table and the Scorecard page both show."""

COLUMNS = ("labelled", "label_accuracy", "label_ap", "ap_ceiling", "label_lift", "lift_ceiling", "causal_agreement", "purity_mean", "coverage",
           "best_eta_mean")
# label accuracy, label AP and its ceiling are over the units a method labels (one that abstains is scored on the rest)
HEADERS = ("method", "units", "labelled", "label accuracy", "label AP", "AP ceiling", "AP above chance", "its ceiling",
           "causal agreement", "purity@8",
           "coverage (AP ≥ 0.3)", "best η²")
NUMBERS = {"best_eta_mean", "label_ap", "ap_ceiling", "label_lift", "lift_ceiling"}  # shares of variance and APs, written as numbers, not rates


def leaderboard_cells(rows: dict) -> list[list[str]]:
    """The leaderboard as text, one list per method in ``HEADERS``' order (a baseline's cells as mean ± std); the
    terminal's table and the Scorecard page both show these."""
    def cell(row: dict, key: str) -> str:
        spread, fmt = row.get(f"{key}_std"), ".2f" if key in NUMBERS else ".1%"
        if row[key] != row[key]:  # nan: nothing to score (no per-factor cache changed any prediction)
            return "—"
        shown = spread is not None and spread >= 5e-4  # "± 0.0 %" is no spread worth a column's width
        interval = ""
        if key == "causal_agreement" and spread is None and row.get("causal_low") == row.get("causal_low"):
            interval = f" ({row['causal_low']:.0%}–{row['causal_high']:.0%})"  # its 95 % interval
        return f"{row[key]:{fmt}}" + (f" ± {spread:{fmt}}" if shown else "") + interval

    return [[name, f"{row['units']:.0f}", *(cell(row, k) for k in COLUMNS)] for name, row in rows.items()
            if "label_accuracy" in row]  # the heatmaps row has scores of its own


EXPLAINERS = ("read from the images", "nearest texts per PC", "TextSpan", "weights' directions")


def verdict(report: dict) -> str:
    """What to trust on a scorecard, in one line: the measures that separate the methods from random directions
    (beyond two of its standard deviations over seeds), the best method by them, and whether the map beats its
    baseline. Read from the report's numbers, never typed."""
    rows = report["methods"]
    chance = rows["random directions"]
    separating = [key for key in ("label_accuracy", "coverage", "best_eta_mean", "causal_agreement")
                  if any(rows[m][key] > chance[key] + 2 * chance.get(f"{key}_std", 0.0) for m in EXPLAINERS if m in rows)]
    names = {"label_accuracy": "label accuracy", "coverage": "coverage", "best_eta_mean": "η²",
             "causal_agreement": "causal agreement"}
    if not separating:
        line = "No measure separates the methods from random directions: trust no label on this model."
    else:
        best = max((m for m in EXPLAINERS if m in rows), key=lambda m: rows[m][separating[0]])
        rest = [names[k] for k in names if k not in separating]
        line = (f"Trust {_and(names[k] for k in separating)}: only "
                f"{'it separates' if len(separating) == 1 else 'they separate'} "
                f"the methods from random directions; the best is {best} "
                f"({rows[best][separating[0]]:.0%} against {chance[separating[0]]:.0%}), so even its labels are wrong "
                f"{1 - rows[best]['label_accuracy']:.0%} of the time."
                + (f" Do not read {_and(rest)}: random directions score the same." if rest else ""))
    maps = rows.get("heatmaps")
    if maps:
        beats = (maps["pointing_game"] > maps["pointing_game_raw_attention"]
                 and maps["mass_on_objects"] > maps["mass_on_objects_raw_attention"])
        line += (f" The map {'beats' if beats else 'does not beat'} raw attention at finding objects "
                 f"({maps['pointing_game']:.0%} against {maps['pointing_game_raw_attention']:.0%} of scenes).")
    return line


def _and(words) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
