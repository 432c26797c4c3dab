"""Scorecard: how right is each explanation? Scored against the demo world's ground truth, with the failures shown:
the units whose label names something their images do not share."""

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.builds import page_cache
from dashboard.state import get_cache, head_weights, lookup_cache, plain
from residual_core.explain.leaderboard import HEADERS, leaderboard_cells, verdict
from residual_core.data.world import is_world_dataset
from residual_core.explain.scorecard import PURITY_K
from residual_core.engine.models import ModelLoadError
from residual_core.engine.units import head_label

cache = page_cache("Scorecard")
SHOWN_FAILURES = 8  # units listed where a method's labels fail
ss = st.session_state
spec = cache.manifest["spec"]


@st.cache_resource(show_spinner="reading every head three ways (nearest texts, TextSpan, the weights) …", max_entries=4)
def method_agreement(path: str, model: str, random_weights: bool, seed: int) -> tuple[tuple, str]:
    """(every head's agreement between methods, why the weights' column is missing or "")."""
    from residual_core.explain.agreement import head_agreement

    try:
        readings, missing = head_weights(path, model, random_weights, seed), ""
    except (ModelLoadError, ValueError) as err:  # the weights are not on this machine
        readings, missing = None, str(err)
    return head_agreement(get_cache(path), readings), missing


def no_ground_truth() -> None:
    """What a dataset without ground truth offers: agreement between methods, and pole purity by class."""
    from residual_core.explain.agreement import MEASURES, pole_purity

    st.info(plain(f"{spec['dataset']} has no ground truth for what a head should encode: only the demo world's caches "
                  "(demo-world/…) can be scored. What needs none: how far the methods agree on each head, and how pure "
                  "each PC's pole images are by class."))
    st.subheader("Do the methods agree?")
    try:
        heads, missing = method_agreement(str(cache.path), spec["model"], bool(spec.get("random_weights")),
                                          int(spec.get("seed", 0)))
    except ValueError as err:  # a cache without a text bank
        st.info(plain(err))
        heads, missing = (), ""
    if heads:
        st.caption("Per head, the texts each method names (nearest texts: both poles of PCs 1–3; TextSpan: its first 6 "
                   "texts; the weights: both signs of their first 3 directions), and the share two methods have in "
                   "common (Jaccard). Data ↔ weights: the weighted spectral cosine of the head's data PCs and its "
                   "write directions. Where methods disagree, read a label with care; on the demo world, how far "
                   "agreement predicts a right label is measured in docs/scorecard.md.")
        table = pd.DataFrame([{"head": head_label(h.layer, h.head)} | {k: m(h) for k, m in MEASURES.items()}
                              | {"texts two methods name": " · ".join(cache.texts[t] for t in h.shared()) or "—"}
                              for h in heads])
        shares = {k: "{:.0%}" for k in MEASURES if k != "data ↔ weights"}
        st.dataframe(table.style.format(shares | {"data ↔ weights": "{:.2f}"}, na_rep="—"), hide_index=True,
                     column_config={k: st.column_config.Column(width="small") for k in MEASURES})
        if missing:
            st.caption(plain(f"The weights' columns are empty: they need the model ({missing})."))
    st.subheader("How pure are the poles' images by class?")
    st.dataframe(pd.DataFrame([{"head": head_label(p.layer, p.head), "PC": f"PC{p.pc + 1} {p.sign}",
                                "purity@8 by class": p.purity, "most common class": p.modal}
                               for p in sorted(pole_purity(cache), key=lambda p: -p.purity)]).style.format(
        {"purity@8 by class": "{:.0%}"}), hide_index=True)
    st.stop()


if not is_world_dataset(spec["dataset"]):
    no_ground_truth()


@st.cache_resource(show_spinner="scoring every explanation against the world's ground truth …", max_entries=2)
def scorecard(model: str, limit: int | None, cache_dir: str) -> dict:
    from residual_core.explain.scorecard_run import build_scorecard

    return build_scorecard(model, limit, cache_dir, seeds=5)


st.caption("Each explanation (a PC pole and its nearest text, a TextSpan text, a direction of the weights, and random "
           "baselines) is scored on the demo world's test scenes, whose seven factors are known: does its label name "
           "what its top images share, how much of a factor it explains (η², AP), and does ablating its head hurt "
           "that factor most? Definitions and the generated report: docs/scorecard.md.")
if not ss.get("scorecard_asked"):
    if not st.button("Score the explanations", type="primary",
                     help="builds the world's seven test caches if missing (minutes once), then scores every method"):
        st.stop()
    ss.scorecard_asked = True
    st.rerun()  # the scores replace the button
report = scorecard(spec["model"], spec.get("limit"), str(cache.path.parent))
lookup_cache.clear()
st.info(plain(verdict(report)))
table = pd.DataFrame(leaderboard_cells(report["methods"]), columns=HEADERS)
# coverage and η² score random directions the same (the verdict says so): the terminal and docs keep them; each AP
# beside its ceiling in one cell, so that the table fits 1280 px
ceiling, lift_ceiling = (table[c].str.split(" ± ").str[0] for c in ("AP ceiling", "its ceiling"))  # spread: noise
table["label AP / ceiling"] = table["label AP"] + " / " + ceiling
table["AP above chance / ceiling"] = table["AP above chance"] + " / " + lift_ceiling
shown = ["method", "labelled", "label accuracy", "label AP / ceiling", "AP above chance / ceiling", "causal agreement",
         "purity@8"]
st.dataframe(table[shown], hide_index=True)
st.caption(f"On {report['n_images']:,} test scenes per factor (numbers elsewhere may use another count: the README's "
           "use 2,000). Random baselines: mean ± std over 5 seeds.")
maps = report["methods"].get("heatmaps")
if maps:
    st.caption(f"Heatmaps: {maps['head']}'s push toward the true class points at an object (its top patch) in "
               f"{maps['pointing_game']:.0%} of {maps['scenes']} scenes and puts {maps['mass_on_objects']:.0%} of its "
               f"mass on objects; its raw attention, the baseline: {maps['pointing_game_raw_attention']:.0%} and "
               f"{maps['mass_on_objects_raw_attention']:.0%}.")
predicts = report.get("agreement", {})
if predicts:
    st.caption("Where there is no ground truth, this page offers agreement between methods instead. Here it can be "
               "checked: does a head on which methods agree have more labels right (all three methods' labels)?")
    agreeing, rest = "labels right, heads agreeing (≥ median)", "labels right, the rest"
    st.dataframe(pd.DataFrame([{"agreement": name, "Spearman ρ with label accuracy": p.rho, "p": p.p_value,
                                agreeing: p.accuracy_agreeing, rest: p.accuracy_disagreeing}
                               for name, p in predicts.items()])
                 .style.format({"Spearman ρ with label accuracy": "{:+.2f}", "p": "{:.2f}", agreeing: "{:.0%}",
                                rest: "{:.0%}"}), hide_index=True)
methods = [name for name in report["units"]]  # read from the images first, where the model could be loaded
method = st.selectbox("Where a method's labels fail", methods,
                      key="scorecard_method")
wrong = sorted((s for s in report["units"][method] if s.labelled and not s.label_right),
               key=lambda s: -s.eta[s.factor])[:SHOWN_FAILURES]
scored = get_cache(report["cache"])
if not wrong:
    st.caption(f"None: every label {method} puts on a unit names what its top images share.")
for s in wrong:
    top = np.argsort(-s.unit.scores, kind="stable")[:PURITY_K]
    st.markdown(f"**{s.unit.label}**: labelled *{plain(s.unit.text)}*; it explains {s.factor} (η² {s.eta[s.factor]:.2f}) "
                f"and {round(s.purity * PURITY_K)} of its top {PURITY_K} images have {s.factor} “{plain(s.modal)}”")
    st.image(np.concatenate(list(scored.thumbs[top]), axis=1), width=64 * len(top))
