"""The lab's groups: worst-group accuracy beside the mean, and the panel that finds the heads behind a shortcut.

Groups are the engine's (``read.groups``); the methods are ``analysis.shortcuts``. Finding runs on a click, over
the val and test caches of the sidebar's model and dataset; switching a method's heads off is one more click.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.numbers import accuracy_metric
from dashboard.state import current_spec, find_cache, get_cache, get_offer, plain
from residual_core.analysis.shortcuts_run import analyse, default_groups, report_dict
from residual_core.build.store import CacheError
from residual_core.read.cache import Cache
from residual_core.read.groups import GroupAccuracy, Groups, group_accuracy, group_specs, groups_for

NONE = "none"
SHOWN = 6  # the worst groups listed under the metrics


@st.cache_data(show_spinner=False, max_entries=32)
def _groups(path: str, limit: int, spec: str) -> Groups:
    """The groups of the lab's live sample of a cache (ValueError when the spec does not fit it)."""
    return groups_for(get_cache(path).sample(limit), spec)


FROM_FILE = "from a CSV file …"


def choose_groups(cache: Cache) -> str:
    """The lab's group selector: the groups the cache offers, or a CSV file uploaded here; the chosen spec or NONE."""
    offered = group_specs(cache)
    ss = st.session_state
    default = default_groups(cache) if offered else NONE  # shown whenever the dataset has groups
    options = [NONE, *offered, FROM_FILE]
    if ss.get("lab_groups") not in options:
        ss.lab_groups = default
    chosen = st.selectbox("Groups (class × attribute)", options, key="lab_groups",
                          help="split each class by an attribute and show the worst group's accuracy beside the mean; "
                               "a CSV file names each image's group (columns id,group: the image's path in the "
                               "dataset folder; or Waterbirds' metadata.csv)")
    if chosen != FROM_FILE:
        return chosen
    upload = st.file_uploader("Group file (CSV)", type=["csv"], key="lab_group_upload")
    if upload is None:
        return NONE
    try:
        return f"csv:{keep_upload(upload.getvalue())}"
    except (ValueError, CacheError) as err:  # too large, or the cache folder cannot be written
        st.error(plain(str(err)))
        return NONE


def keep_upload(data: bytes) -> str:
    """An uploaded group file, stored by its content's sha256 under the server's cache folder (never by the name the
    browser sent), so that the val and test caches and every rerun read the same file; its path."""
    import hashlib

    from residual_core.build import store
    from residual_core.data.untrusted import MAX_CSV_BYTES

    if len(data) > MAX_CSV_BYTES:
        raise ValueError(f"the group file is {len(data):,} bytes; the limit is {MAX_CSV_BYTES:,}")
    folder = Path(get_offer().cache_dir) / "groups"
    path = folder / f"{hashlib.sha256(data).hexdigest()}.csv"
    if not path.is_file():
        with store.writing(folder):
            store.atomic_write_bytes(path, data)
    return str(path)


def group_metrics(where, cache: Cache, limit: int, spec: str, predictions: np.ndarray) -> None:
    """Worst-group accuracy now and unablated, and the worst groups' rows, on ``cache.sample(limit)``."""
    if spec == NONE:
        return
    live = cache.sample(limit)
    try:
        groups = _groups(str(cache.path), limit, spec)
    except ValueError as err:
        where.caption(plain(str(err)))
        return
    now = group_accuracy(predictions == live.labels, groups)
    before = group_accuracy(live.baseline_predictions() == live.labels, groups)
    w1, w2 = where.columns(2)
    accuracy_metric(w1, "Worst group", now.worst, now.worst - before.worst)
    w2.metric("Worst group, unablated", f"{before.worst:.2%}", plain(before.worst_group), delta_color="off",
              delta_arrow="off")
    where.dataframe(_worst_rows(groups, before, now), hide_index=True, width="stretch")


def _worst_rows(groups: Groups, before: GroupAccuracy, now: GroupAccuracy) -> pd.DataFrame:
    order = np.argsort(np.nan_to_num(now.per_group, nan=2.0), kind="stable")[:SHOWN]
    return pd.DataFrame({"group": [plain(groups.names[g]) for g in order],
                         "images": [int(now.counts[g]) for g in order],
                         "unablated": [f"{before.per_group[g]:.1%}" for g in order],
                         "now": [f"{now.per_group[g]:.1%}" for g in order]})


@st.cache_data(show_spinner="trying every method on val, measuring on test …", max_entries=8)
def shortcut_report(val_path: str, test_path: str, spec: str) -> dict:
    """``report_dict`` of every method on these caches (memoised per server: seconds the first time)."""
    val, test = get_cache(val_path), get_cache(test_path)
    report, used = analyse(val, test, spec)
    return report_dict(report, val.units, used)


def shortcut_panel(spec: str, switch) -> None:
    """Each method's heads and what they buy (val → test); ``switch(heads)`` switches a method's heads off."""
    if spec == NONE:
        return
    base = replace(current_spec(), basis_from=None)
    paths = {split: find_cache(replace(base, split=split)) for split in ("val", "test")}
    missing = [split for split, path in paths.items() if path is None]
    if missing:
        st.caption(plain(f"Needs the {' and '.join(missing)} cache(s) of {base.model} on {base.dataset}: build them "
                         "from the sidebar (split), or on the Specialisation page."))
        return
    if not st.toggle("Find shortcut heads", key="lab_find", help="words, contrast, greedy search and random heads, "
                     "chosen on val and measured on test (seconds)"):
        return
    try:
        report = shortcut_report(paths["val"], paths["test"], spec)
    except ValueError as err:
        st.warning(plain(str(err)))
        return
    st.markdown(plain(report["verdict"]))
    rows = [m for m in report["methods"] if m["method"] != "none"]
    table = pd.DataFrame({
        "method": [m["method"] for m in rows],
        "test worst": [f"{m['test']['worst']:.1%}" + (f" ± {m['test']['worst_std']:.1%}" if "worst_std" in m["test"]
                                                        else "") for m in rows],
        "test mean": [f"{m['test']['mean']:.1%}" for m in rows],
        "gain": ["—" if m["gain"] != m["gain"] else f"{m['gain']:+.0%}" for m in rows],
        "switched off": [", ".join(m["switches"]) or "—" for m in rows]})  # last: the long one
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption("gain: the share of the test gap between the worst group and the mean that switching the heads off "
               "recovers; random: mean ± std over 20 draws of as many heads (PCs) as greedy chose.")
    offered = {m["method"]: m for m in rows if m["switches"] and not m["method"].startswith("random")}
    if offered:
        c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
        best = max(offered, key=lambda name: (offered[name]["val"]["worst"], offered[name]["val"]["mean"]))
        chosen = c1.selectbox("Method whose switches to apply", list(offered), index=list(offered).index(best),
                              key="lab_switch_method", help="first shown: the best on val (where switches are chosen)")
        c2.button("Switch them off", key="lab_switch", type="primary", on_click=switch,
                  args=(tuple(tuple(u) for u in offered[chosen]["units"]),))
