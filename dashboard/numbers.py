"""One way to show an accuracy and its change on any page or slide: the arrow follows the engine's sign.

``st.metric`` decides the arrow and its colour from the delta text's first character (an ASCII '-' is a fall), so
the text is built here from the number, never typed, and a change below ``noise`` reads "no change", uncoloured.
"""

from residual_core.units import points

NOISE = 5e-5  # below half of 0.01 pp: "+0.00 pp" with an arrow would claim a change that is not there


def accuracy_metric(where, label: str, accuracy: float, change: float, decimals: int = 2, noise: float = NOISE,
                    still: str = "no change") -> None:
    """``accuracy`` with its ``change`` (fractions) in pp; ``still`` is said instead when |change| < noise."""
    moved = abs(change) >= noise
    where.metric(label, f"{accuracy:.{decimals}%}", points(change, decimals) if moved else still,
                 delta_color="normal" if moved else "off", delta_arrow="auto" if moved else "off")
