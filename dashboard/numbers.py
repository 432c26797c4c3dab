"""Numbers as every page and slide shows them. An accuracy and its change: the arrow follows the engine's sign.

``st.metric`` decides the arrow and its colour from the delta text's first character (an ASCII '-' is a fall), so
the text is built here from the number, never typed, and a change below ``noise`` reads "no change", uncoloured.
A per-head metric: in %, pp or its own unit, with noise-level cells blank and chance stated (``metric_view``).
"""

from dataclasses import dataclass

import numpy as np

from residual_core.read.cache import Cache, accuracy_noise, head_metrics
from residual_core.engine.units import points

NOISE = 5e-5  # below half of 0.01 pp: "+0.00 pp" with an arrow would claim a change that is not there


def accuracy_metric(where, label: str, accuracy: float, change: float, decimals: int = 2, noise: float = NOISE,
                    still: str = "no change") -> None:
    """``accuracy`` with its ``change`` (fractions) in pp; ``still`` is said instead when |change| < noise."""
    moved = abs(change) >= noise
    where.metric(label, f"{accuracy:.{decimals}%}", points(change, decimals) if moved else still,
                 delta_color="normal" if moved else "off", delta_arrow="auto" if moved else "off")


@dataclass(frozen=True)
class MetricView:
    """A per-head metric as every view shows it: accuracy in %, its changes in pp, noise-level cells blank."""

    values: np.ndarray  # [n_layers, n_heads] in the shown unit
    unit: str  # the colour bar's title
    blank_below: float  # |value| under this shows no number
    note: str  # one line under the map ("" when there is nothing to say)


UNITS = {"evr1": "share", "participation_ratio": "PCs", "k90": "PCs", "contribution_norm": "norm",
         "cosine_to_output": "cosine", "accuracy_alone": "accuracy (%)", "delta_acc_mean_ablated": "Δ accuracy (pp)"}


def metric_view(cache: Cache, metric: str) -> MetricView:
    values, blank, note = head_metrics(cache)[metric], 0.0, ""
    if metric in ("accuracy_alone", "delta_acc_mean_ablated"):
        values = values * 100
    if metric == "accuracy_alone":
        chance = 100 / max(len(cache.classnames), 1)
        note = (f"Chance is {chance:.1f} % ({len(cache.classnames)} classes): a head near it carries no class alone; "
                f"the whole model scores {cache.baseline_accuracy():.1%}.")
    if metric == "delta_acc_mean_ablated":
        blank = accuracy_noise(cache) * 100
        note = (f"Cells within ±{blank:.1f} pp are left blank: the standard error of the "
                f"{cache.baseline_accuracy():.1%} accuracy on these {cache.n_images:,} images, within which another "
                "sample would move it.")
    return MetricView(values, UNITS[metric], blank, note)
