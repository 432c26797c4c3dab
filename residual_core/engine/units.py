"""The one home of unit names and indices.

Two index spaces, never mixed:
  head index   ``layer * n_heads + head``: the row of every per-head array (head_scores, head_mean, …)
  unit row     the table order of ``UnitTable.units``: emb, then the MLPs by layer, then the heads layer-major
Figures and pages carry (layer, head) as data; labels like "L3H5" are made here, for display only.
"""

from dataclasses import dataclass


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def pc_label(layer: int, head: int, pc: int) -> str:
    """PCs are numbered from 1 for people (index ``pc`` from 0)."""
    return f"L{layer}H{head} PC{pc + 1}"


def mlp_label(layer: int) -> str:
    return f"L{layer}MLP"


def heads_in_words(heads, n_layers: int, n_heads: int) -> str:
    """Which heads a set holds, a group per layer: 'L0: all · L3: H1 H6'. For a line that stays readable where a
    chip per head would not (a preset can switch off 140 heads)."""
    by_layer = {}
    for layer, head in sorted(heads):
        by_layer.setdefault(layer, []).append(head)
    return " · ".join(f"L{layer}: all" if len(hs) == n_heads else f"L{layer}: " + " ".join(f"H{h}" for h in hs)
                      for layer, hs in by_layer.items() if layer < n_layers) or "none"


def points(change: float, decimals: int = 1) -> str:
    """A change in accuracy (a difference of two fractions) in percentage points, '+5.9 pp': never '%', which reads
    as relative (5.9 % of 90 % accuracy is 5.3 points)."""
    return f"{change * 100:+.{decimals}f} pp"  # ASCII '-': st.metric reads a fall from it (U+2212 read as a gain)


@dataclass(frozen=True)
class Unit:
    kind: str  # "emb" | "mlp" | "head"
    layer: int  # -1 for emb
    head: int  # -1 for emb and mlp

    @property
    def label(self) -> str:
        if self.kind == "emb":
            return "emb"
        return mlp_label(self.layer) if self.kind == "mlp" else head_label(self.layer, self.head)


@dataclass(frozen=True)
class UnitTable:
    """Labels and indices of a model's units: emb, then MLPs by layer, then heads layer-major."""

    n_layers: int
    n_heads: int

    @property
    def n_heads_total(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def units(self) -> tuple[Unit, ...]:
        emb = (Unit("emb", -1, -1),)
        mlps = tuple(Unit("mlp", l, -1) for l in range(self.n_layers))
        heads = tuple(Unit("head", l, h) for l in range(self.n_layers) for h in range(self.n_heads))
        return emb + mlps + heads

    @property
    def labels(self) -> list[str]:
        return [u.label for u in self.units]

    @property
    def first_head_row(self) -> int:
        """Unit row of head L0H0 (rows before it are emb and the MLPs)."""
        return 1 + self.n_layers

    def head_index(self, layer: int, head: int) -> int:
        """Head index (layer-major, heads only); ValueError for a head the model does not have."""
        if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
            raise ValueError(f"no head {head_label(layer, head)} in a {self.n_layers}×{self.n_heads} model")
        return layer * self.n_heads + head

    def head_at(self, index: int) -> tuple[int, int]:
        """(layer, head) of a head index."""
        if not 0 <= index < self.n_heads_total:
            raise ValueError(f"head index {index} is outside 0..{self.n_heads_total - 1}")
        return divmod(int(index), self.n_heads)

    def head_labels(self) -> list[str]:
        """Labels of the head axis, in head-index order."""
        return [head_label(l, h) for l in range(self.n_layers) for h in range(self.n_heads)]
