"""Scorecard: how right is each explanation? Scored against the demo world's ground truth, with the failures shown:
the units whose label names something their images do not share."""

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.builds import page_cache
from dashboard.state import get_cache, lookup_cache, plain
from residual_core.cli_scorecard import COLUMNS

cache = page_cache("Scorecard")
ss = st.session_state
spec = cache.manifest["spec"]
if not str(spec["dataset"]).startswith("demo-world/"):
    st.info(plain(f"{spec['dataset']} has no ground truth for what a head should encode: only the demo world's caches "
                  "(demo-world/…) can be scored. What needs none: how pure each PC's pole images are by class."))
    purity = [(cache.units.head_at(u), k, float(np.bincount(np.asarray(cache.labels)[cache.pole_top[u, k][:8]]).max() / 8))
              for u in range(cache.units.n_heads_total) for k in range(min(3, cache.n_pcs))]
    st.dataframe(pd.DataFrame([{"head": f"L{lh[0]}H{lh[1]}", "PC": f"PC{k + 1}", "+ pole purity@8 by class": p}
                               for lh, k, p in sorted(purity, key=lambda r: -r[2])]), hide_index=True)
    st.stop()


@st.cache_resource(show_spinner="scoring every explanation against the world's ground truth …", max_entries=2)
def scorecard(model: str, limit: int | None, cache_dir: str) -> dict:
    from residual_core.scorecard_run import build_scorecard

    return build_scorecard(model, limit, cache_dir, seeds=5)


st.caption("Each explanation (a PC pole and its nearest text, a TextSpan text, a direction of the weights, and random "
           "baselines) is scored on the demo world's test scenes, whose seven factors are known: does its label name "
           "what its top images share, how much of a factor it explains (η², AP), and does ablating its head hurt "
           "that factor most? Definitions and the generated report: docs/scorecard.md.")
if not ss.get("scorecard_asked") and not st.button("Score the explanations", type="primary",
                                                   help="builds the world's seven test caches if missing (minutes "
                                                        "once), then scores every method"):
    st.stop()
ss.scorecard_asked = True
report = scorecard(spec["model"], spec.get("limit"), str(cache.path.parent))
lookup_cache.clear()
rows = pd.DataFrame([{"method": name} | {k: row[k] for k in COLUMNS} for name, row in report["methods"].items()
                     if "label_accuracy" in row])  # the heatmaps row has scores of its own (below)
st.dataframe(rows.style.format({k: "{:.0%}" for k in COLUMNS} | {"best_eta_mean": "{:.2f}"}), hide_index=True)
maps = report["methods"].get("heatmaps")
if maps:
    st.caption(f"Heatmaps: {maps['head']}'s push toward the true class points at an object (its top patch) in "
               f"{maps['pointing_game']:.0%} of {maps['scenes']} scenes and puts {maps['mass_on_objects']:.0%} of its "
               f"mass on objects; its raw attention, the baseline: {maps['pointing_game_raw_attention']:.0%} and "
               f"{maps['mass_on_objects_raw_attention']:.0%}.")
method = st.selectbox("Where a method's labels fail", ["nearest texts per PC", "TextSpan", "weights' directions"],
                      key="scorecard_method")
wrong = sorted((s for s in report["units"][method] if not s.label_right), key=lambda s: -s.eta[s.factor])[:8]
scored = get_cache(report["cache"])
for s in wrong:
    top = np.argsort(-s.unit.scores, kind="stable")[:8]
    st.markdown(f"**{s.unit.label}**: labelled *{plain(s.unit.text)}*; it explains {s.factor} (η² {s.eta[s.factor]:.2f}) "
                f"and {s.purity:.0%} of its top images are {plain(s.modal)}")
    st.image(np.concatenate(list(scored.thumbs[top]), axis=1), width=64 * len(top))
