"""Figure builders for the dashboard: arrays in, figures out (no Streamlit, no model). Plotly, except the
ablation lab's per-class bars, which every toggle redraws (Vega-Lite, through Altair: see per_class_bars)."""

import html

import altair as alt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from residual_core.engine.units import UnitTable

FONT = dict(size=16, color="#1f2328")  # legible on a projector at 1280×720
_AXIS = dict(tickfont=dict(size=15), title=dict(font=dict(size=16)))
TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.update(font=FONT, xaxis=_AXIS, yaxis=_AXIS, title=dict(font=dict(size=19)),
                       legend=dict(font=dict(size=15)), hoverlabel=dict(font=dict(size=15)))
LAYOUT = dict(margin=dict(l=70, r=20, t=56, b=56), template=TEMPLATE)
# one palette for classes that are not colours: the same class has the same colour in every figure
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d", "#ff9da6",
           "#bab0ac")
# a class named by a colour is drawn in that colour (readable on white: yellow and cyan a little darker)
COLOUR_WORDS = {"red": "#e42626", "green": "#28b43c", "blue": "#3060f0", "yellow": "#d9c400", "magenta": "#e030dc",
                "cyan": "#14b8c4", "orange": "#fa8c18", "purple": "#823cc8", "pink": "#f28cb4", "brown": "#8c5a2c",
                "black": "#202020", "grey": "#8c8c8c", "gray": "#8c8c8c", "white": "#d0d0d0", "violet": "#8f5fd7"}


def _short(text: str, limit: int = 12) -> str:
    """A head's description in a heat-map cell: two lines of at most ``limit`` characters, broken between words,
    so it is drawn at a readable size instead of shrunk to fit one line."""
    lines, line = [], ""
    for word in str(text).split():
        if line and len(line) + 1 + len(word) > limit:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    shown = [w if len(w) <= limit else w[: limit - 1] + "…" for w in lines[:2]]
    if len(lines) > 2:
        shown[1] = shown[1][: limit - 1] + "…"
    return "<br>".join(label(w) for w in shown)


def label(text: object) -> str:
    """User data (a class folder's name, a bank text) as a figure label: Plotly renders a subset of HTML in
    labels (links, bold), so every markup character is an entity, drawn as typed."""
    return html.escape(str(text), quote=False)


def class_colours(classnames: tuple[str, ...]) -> list[str]:
    """A colour per class: the colour a class is named after when every class names exactly one distinct
    colour (the demo world's colour factor), otherwise the shared palette by class index."""
    named = []
    for name in classnames:
        words = {w.strip(".,:;()").lower() for w in name.split()} & COLOUR_WORDS.keys()
        named.append(COLOUR_WORDS[words.pop()] if len(words) == 1 else None)
    if None not in named and len(set(named)) == len(named):
        return named
    return [PALETTE[i % len(PALETTE)] for i in range(len(classnames))]
PNG_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def heads_heatmap(values: np.ndarray, title: str, unit: str, selected: tuple[int, int] | None = None,
                  blank_below: float = 0.0, words: list[list[str]] | None = None,
                  words_in_cells: bool = False) -> go.Figure:
    """values [n_layers, n_heads]; rows are layers (L0 at the top), columns heads. A cell whose |value| is below
    ``blank_below`` keeps its colour but shows no number (noise would print as '0.00' or '−0.00'). ``words``
    [n_layers][n_heads]: each head's description, on hover, and in its cell instead of the number if asked."""
    n_layers, n_heads = values.shape
    text = [["" if abs(v) < blank_below else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"
             for v in row] for row in values]
    if words is not None and words_in_cells:
        text = [[_short(w.split("; ")[0].removeprefix("+ ")) for w in row] for row in words]  # the first; hover: two
    fig = go.Figure(go.Heatmap(
        z=values, x=[f"H{h}" for h in range(n_heads)], y=[f"L{l}" for l in range(n_layers)], text=text,
        texttemplate="%{text}" if values.size <= 400 else None, colorscale="Viridis",
        textfont=dict(size=13 if words_in_cells else 15),
        colorbar=dict(title=dict(text=unit, side="right")), hoverinfo="skip"))
    # Heatmap cells do not emit Streamlit selection events; invisible markers on the cell centres do.
    xs, ys = np.meshgrid([f"H{h}" for h in range(n_heads)], [f"L{l}" for l in range(n_layers)])
    layer, head = np.divmod(np.arange(values.size), n_heads)  # cell order = head index order
    described = [label(w) for row in words for w in row] if words is not None else [""] * values.size
    fig.add_scatter(x=xs.ravel(), y=ys.ravel(), mode="markers", showlegend=False,
                    customdata=np.stack([layer, head, values.ravel()], 1),  # (layer, head) travel as data
                    hovertext=described,
                    hovertemplate="layer %{customdata[0]}, head %{customdata[1]}<br>" + unit +
                                  " = %{customdata[2]:.4f}<br>%{hovertext}<extra>click to open</extra>",
                    marker=dict(symbol="square", size=max(8, 400 // max(n_heads, n_layers)), opacity=0.01,
                                color="white"))
    if selected is not None:
        fig.add_shape(type="rect", x0=selected[1] - 0.5, x1=selected[1] + 0.5, y0=selected[0] - 0.5,
                      y1=selected[0] + 0.5, line=dict(color="red", width=3))
    every = 1 if n_heads <= 24 else None  # name every head up to 24 (plotly skips every second one)
    fig.update_layout(title=title, yaxis=dict(range=[n_layers - 0.5, -0.5], title="layer", dtick=1),
                      xaxis=dict(title="head", range=[-0.5, n_heads - 0.5], dtick=every),
                      height=max(360, 44 * n_layers + 150), **LAYOUT)
    return fig


def picked(event) -> tuple[int, ...] | None:
    """The integer data a clicked cell carries ((layer, head), then anything after the value), or None."""
    points = event.selection.points if event and event.selection else []
    if not points or "customdata" not in points[0]:
        return None
    raw = points[0]["customdata"]
    if isinstance(raw, dict):  # the browser sends an array as {"0": …, "1": …}
        raw = [raw[k] for k in sorted(raw, key=int)]
    data = [int(round(float(v))) for v in raw]
    return (data[0], data[1], *data[3:])


def units_strip(values: np.ndarray, labels: list[str], title: str, unit: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=values[None], x=labels, y=["value"], colorscale="Viridis", texttemplate="%{z:.2f}",
                               colorbar=dict(title=dict(text=unit, side="right"))))
    fig.update_layout(title=title, height=190, **LAYOUT)
    return fig


def spectrum(eigenvalues: np.ndarray, title: str) -> go.Figure:
    share = eigenvalues / max(float(eigenvalues.sum()), 1e-30)
    cumulative = np.cumsum(share)
    pcs = np.arange(1, len(share) + 1)  # PC1 is the first, as everywhere in the UI
    fig = go.Figure()
    fig.add_bar(x=pcs, y=share, name="explained variance", marker_color="#4c78a8")
    fig.add_scatter(x=pcs, y=cumulative, name="cumulative", mode="lines+markers", line=dict(color="#f58518"))
    for tau, dash in ((0.9, "dash"), (0.99, "dot")):
        k = int(np.searchsorted(cumulative, tau, side="right")) + 1  # strict > τ, as in SPEC
        fig.add_hline(y=tau, line_dash=dash, line_color="grey",
                      annotation_text=f"{tau:g}: k={min(k, len(share))}", annotation_position="bottom right")
    fig.update_layout(title=title, xaxis_title="principal component", yaxis_title="share of the head's variance",
                      yaxis_range=[0, 1.02], height=380, **LAYOUT,
                      # inside, right of the bars and under the curve: a top legend wraps over the title in a column
                      legend=dict(y=0.45, yanchor="middle", x=0.98, xanchor="right", bgcolor="rgba(255,255,255,0.8)"))
    return fig


def coefficient_histogram(coefficients: np.ndarray, labels: np.ndarray, classnames: tuple[str, ...],
                          title: str) -> go.Figure:
    fig = go.Figure()
    colours = class_colours(classnames)
    for c, name in enumerate(classnames):
        values = coefficients[labels == c]
        if len(values):
            fig.add_histogram(x=values, name=label(name), opacity=0.6, nbinsx=40, marker_color=colours[c])
    fig.update_layout(barmode="overlay", title=title, xaxis_title="coefficient on the PC (joint-space units)",
                      yaxis_title="images", height=360, **LAYOUT)
    return fig


def class_scatter(xy: np.ndarray, labels: np.ndarray, classnames: tuple[str, ...], title: str,
                  axis: tuple[str, str], image_rows: np.ndarray | None = None) -> go.Figure:
    """xy [m, 2], labels [m]; a point carries its image row (``image_rows`` [m], default 0..m-1) as customdata."""
    fig = go.Figure()
    colours = class_colours(classnames)
    image_rows = np.arange(len(xy)) if image_rows is None else np.asarray(image_rows)
    for c, name in enumerate(classnames):
        rows = np.flatnonzero(labels == c)
        if len(rows):
            fig.add_scattergl(x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=label(name),
                              customdata=image_rows[rows], marker=dict(size=7, opacity=0.75, color=colours[c]),
                              hovertemplate="image %{customdata}<extra>%{fullData.name}</extra>")
    fig.update_layout(title=title, xaxis_title=axis[0], yaxis_title=axis[1], height=460, dragmode="lasso",
                      clickmode="event+select", **LAYOUT)
    return fig


def bars(names: list[str], values: list[float], title: str, unit: str, horizontal: bool = True,
         digits: str = ".3f") -> go.Figure:
    """``digits``: the d3 format of each bar's number (".1f" for a percentage)."""
    names = [label(name) for name in names]
    fig = go.Figure(go.Bar(x=values if horizontal else names, y=names if horizontal else values,
                           orientation="h" if horizontal else "v", marker_color="#4c78a8",
                           texttemplate=f"%{{x:{digits}}}" if horizontal else f"%{{y:{digits}}}"))
    fig.update_layout(title=title, height=max(260, 34 * len(names) + 100) if horizontal else 360, **LAYOUT)
    if horizontal:
        fig.update_layout(xaxis_title=unit, yaxis=dict(autorange="reversed"))
    else:
        fig.update_layout(yaxis_title=unit)
    return fig


def per_class_bars(classnames: tuple[str, ...], baseline: np.ndarray, ablated: np.ndarray, height: int = 380,
                   font: int = FONT["size"], title: str = "Per-class accuracy") -> alt.Chart:
    """Grouped bars of per-class accuracy [n_classes] each. Drawn in Vega-Lite: the lab redraws them on every
    toggle, and with four sessions sharing this 2-core machine Plotly's redraw cost each browser about 0.1 s
    of CPU more per click (p95 click → number 0.98–1.22 s against 0.60–0.96 s)."""
    which = ["unablated", "ablated"]  # the bars' names; ``title`` names what they count (classes, groups)
    frame = pd.DataFrame({"class": list(classnames) * 2, "accuracy": np.concatenate([baseline, ablated]),
                          "which": np.repeat(which, len(classnames))})
    axis = dict(labelFontSize=font - 1, titleFontSize=font, labelColor=FONT["color"], titleColor=FONT["color"])
    title = alt.Title(title, fontSize=font + 3, anchor="start", color=FONT["color"], offset=12)
    # every class named up to 20, a word a line (slanted names were cut at the chart's edge); beyond, where there is room
    few = len(classnames) <= 20
    labels = alt.Axis(labelAngle=0, labelLimit=160, labelOverlap=False if few else "greedy",
                      **({"labelExpr": "split(datum.label, ' ')"} if few else {}), **axis)
    return alt.Chart(frame, height=height, title=title).mark_bar().encode(
        x=alt.X("class:N", sort=list(classnames), title=None, axis=labels),
        xOffset=alt.XOffset("which:N", sort=which),
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="~g", tickCount=5, **axis)),
        color=alt.Color("which:N", sort=which, scale=alt.Scale(domain=which, range=["#9ecae9", "#e45756"]),
                        legend=alt.Legend(title=None, orient="top", direction="horizontal", labelFontSize=font - 1)),
        tooltip=["class", "which", alt.Tooltip("accuracy:Q", format=".1%")])


def confusion_diff(diff: np.ndarray, classnames: tuple[str, ...]) -> go.Figure:
    limit = max(1, int(np.abs(diff).max()))
    fig = go.Figure(go.Heatmap(z=diff, x=list(classnames), y=list(classnames), colorscale="RdBu_r", zmin=-limit,
                               zmax=limit, texttemplate="%{z}" if diff.size <= 400 else None,
                               colorbar=dict(title=dict(text="Δ images", side="right"))))
    fig.update_layout(title="Confusion matrix change (ablated − unablated)", xaxis_title="predicted",
                      yaxis=dict(title="true", autorange="reversed"), height=460, **LAYOUT)
    return fig


def lambda_spectrum(lam: np.ndarray, eigenvalues: np.ndarray, title: str) -> go.Figure:
    """λ per PC (gaps where pruned) over the head's explained-variance bars."""
    share = eigenvalues / max(float(eigenvalues.sum()), 1e-30)
    pcs = np.arange(1, len(lam) + 1)
    fig = go.Figure()
    fig.add_bar(x=pcs, y=share, name="explained variance", marker_color="#c6d4e8", yaxis="y2")
    fig.add_scatter(x=pcs, y=np.where(np.isnan(lam), None, lam), mode="lines+markers", name="λ",
                    line=dict(color="#e45756"), connectgaps=False)
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey", annotation_text="λ = 1 (unchanged)")
    fig.update_layout(title=title, xaxis_title="principal component", yaxis=dict(title="λ"),
                      yaxis2=dict(title="share of variance", overlaying="y", side="right", showgrid=False,
                                  rangemode="tozero"),
                      height=380, **LAYOUT,
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1.0, xanchor="right",
                                  bgcolor="rgba(0,0,0,0)"))
    return fig


def compare_heatmap(values: np.ndarray, rows: list[str], units: UnitTable, title: str) -> go.Figure:
    """values [n_caches, n_heads] in [0, 1]; click a cell to pick that head and cache (row index)."""
    heads = units.head_labels()
    fig = go.Figure(go.Heatmap(z=values, x=heads, y=rows, zmin=0, zmax=1, colorscale="Viridis",
                               colorbar=dict(title=dict(text="spectral cosine", side="right")), hoverinfo="skip"))
    xs, ys = np.meshgrid(heads, rows)
    row, index = np.divmod(np.arange(values.size), values.shape[1])
    layer, head = np.divmod(index, units.n_heads)
    fig.add_scatter(x=xs.ravel(), y=ys.ravel(), mode="markers", showlegend=False,
                    customdata=np.stack([layer, head, values.ravel(), row], 1),
                    hovertemplate="%{x} · %{y}<br>cosine %{customdata[2]:.3f}<extra>click for matched PCs</extra>",
                    marker=dict(symbol="square", size=max(6, 900 // max(len(heads), 1)), opacity=0.01,
                                color="white"))
    if len(heads) <= 16:  # every head, upright
        axis = dict(title="head", tickmode="array", tickvals=heads, tickangle=0)
    else:  # each layer named once at its first head: 32+ upright names overlap at 1280 px (hover names every head)
        axis = dict(title="head (hover for its name)", tickmode="array", tickvals=heads[::units.n_heads],
                    ticktext=[f"L{layer} →" for layer in range(units.n_layers)], tickangle=0)
    fig.update_layout(title=title, xaxis=axis,
                      yaxis=dict(autorange="reversed"), height=max(260, 40 * len(rows) + 180), **LAYOUT)
    return fig


def jaccard_heatmap(values: np.ndarray, names: list[str]) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=values, x=names, y=names, zmin=0, zmax=1, colorscale="Blues",
                               texttemplate="%{z:.2f}", colorbar=dict(title=dict(text="Jaccard", side="right"))))
    fig.update_layout(title="Jaccard overlap of the top heads", yaxis=dict(autorange="reversed"),
                      height=max(320, 40 * len(names) + 200), **LAYOUT)
    return fig


def topk_curves(report: dict, mode: str) -> go.Figure:
    """Test accuracy of the top-k heads per score, random band, and the H and B baselines (specialize report)."""
    ks = report["k"]
    rand = report["curves"]["random"][mode]
    mean, std = np.array(rand["mean"]), np.array(rand["std"])
    fig = go.Figure()
    fig.add_scatter(x=ks + ks[::-1], y=list(mean + std) + list((mean - std)[::-1]), fill="toself", mode="lines",
                    line=dict(width=0), fillcolor="rgba(150,150,150,0.3)", name="random ± std")
    fig.add_scatter(x=ks, y=mean, mode="lines", line=dict(color="grey", dash="dash"), name="random (mean of 10)")
    for i, name in enumerate(("S", "U|T", "U")):
        fig.add_scatter(x=ks, y=report["curves"][name][mode], mode="lines+markers", name=name,
                        line=dict(color=PALETTE[i]))
    baselines = (("all heads (H)", report["baselines"][f"H_{mode}"]), ("full model (B)", report["baselines"]["B"]))
    # the two lines can sit close together: one label above its line on the left, the other below on the right
    for (label, value), position in zip(baselines, ("top left", "bottom right")):
        fig.add_hline(y=value, line_dash="dot", annotation_text=f"{label}: {value:.1%}",
                      annotation_position=position, annotation_font=dict(size=15))
    fig.update_layout(title="Test accuracy of the top-k heads", yaxis=dict(title="accuracy", tickformat=".0%"),
                      height=440,
                      xaxis=dict(title="k (heads kept, log scale)", type="log", tickmode="array", tickvals=ks,
                                 ticktext=[str(k) for k in ks]), **LAYOUT)
    return fig


def patch_overlay(image: np.ndarray, patches: np.ndarray, title: str, unit: str) -> go.Figure:
    """The image [H, W, 3] uint8 (what the model receives) with a patch map [g, g] over it: a diverging scale
    centred at zero (red pushes toward, blue away), each patch a square of the image's own pixels."""
    height, width = image.shape[:2]
    g = patches.shape[0]
    limit = float(np.abs(patches).max()) or 1.0
    fig = go.Figure(go.Image(z=image, hoverinfo="skip"))
    fig.add_heatmap(z=patches, x0=width / g / 2 - 0.5, dx=width / g, y0=height / g / 2 - 0.5, dy=height / g,
                    zmin=-limit, zmax=limit, zmid=0, colorscale="RdBu_r", opacity=0.55,
                    colorbar=dict(title=dict(text=unit, side="right")),
                    hovertemplate="patch value %{z:.3g}<extra></extra>")
    fig.update_layout(title=title, height=420, xaxis=dict(visible=False), yaxis=dict(visible=False, autorange="reversed"),
                      **(LAYOUT | {"margin": dict(l=10, r=10, t=56, b=10)}))  # the image needs the room, not axes
    return fig
