"""``shortcuts`` end to end: caches for val and test, their groups, every method, a report as plain data.

Used by the command line, the docs generator and the lab; the arithmetic lives in ``shortcuts``.
"""

import numpy as np

from residual_core.analysis.shortcuts import (DRAWS, MAX_HEADS, MAX_PCS, Finding, ShortcutReport, find_shortcuts,
                                              label, truth_ranks)
from residual_core.engine.units import head_label
from residual_core.data.world import FACTORS, is_world_dataset, scenes_of, world_factor, world_split
from residual_core.read.cache import Cache
from residual_core.read.groups import GroupAccuracy, cache_dataset, group_specs, groups_for

LITTLE = 0.25  # a best gain below this share of the gap: "little to gain"
SMALL_GAP = 0.05  # a worst group within 5 points of the mean: nothing to repair


def default_groups(cache: Cache) -> str:
    """The groups a cache is read by when none are named: colour on the world's shape, else the first offered."""
    offered = group_specs(cache)
    dataset, _ = cache_dataset(cache)
    if is_world_dataset(dataset) and world_factor(dataset) == "shape":
        return "colour"
    if not offered:
        raise ValueError(f"{dataset or 'this dataset'} has no groups of its own: pass --groups csv:PATH (columns "
                         "id,group) or arrange its images as class/group/image and pass --groups folders")
    return offered[0]


def attribute_truth(cache: Cache, spec: str) -> np.ndarray | None:
    """[n_images] the attribute's value per image where the world knows it (a factor on a world dataset)."""
    dataset, split = cache_dataset(cache)
    if not (is_world_dataset(dataset) and spec in FACTORS):
        return None
    scenes = scenes_of(world_split(split, dataset))
    return np.array([scenes[int(p)].factor(spec) for p in cache.positions], dtype=np.int64)


def analyse(val: Cache, test: Cache, spec: str | None = None, words=None, max_heads: int = MAX_HEADS,
            max_pcs: int = MAX_PCS, draws: int = DRAWS, progress=None) -> tuple[ShortcutReport, str]:
    """Every method on these caches, grouped by ``spec`` (default: ``default_groups``); (report, spec used)."""
    spec = spec or default_groups(val)
    val_groups, test_groups = groups_for(val, spec), groups_for(test, spec)
    values = tuple(words) if words else val_groups.values
    report = find_shortcuts(val, test, val_groups, test_groups, values=values, truth=attribute_truth(val, spec),
                            max_heads=max_heads, max_pcs=max_pcs, draws=draws, progress=progress)
    return report, spec


def best(report: ShortcutReport) -> Finding | None:
    """The method (random and none aside) with the best val worst-group accuracy (then val mean): chosen where the
    switches were, as a user would choose, never by the test numbers it then reports; None when none switches."""
    methods = [f for f in report.findings if f.method != "none" and not f.method.startswith("random") and f.switches]
    return max(methods, key=lambda f: (f.val.worst, f.val.mean), default=None)


def verdict(report: ShortcutReport) -> str:
    """One or two sentences on what the methods found, for a table's foot or the lab."""
    before = report.before_test
    gap = before.mean - before.worst
    head = (f"Before any switch the worst group ({before.worst_group}) is {gap * 100:.1f} points below the mean "
            f"({before.worst:.1%} against {before.mean:.1%}, test).")
    if gap < SMALL_GAP:
        return head + " There is little to repair here."
    top = best(report)
    if top is None or report.gain(top) < LITTLE:
        share = 0.0 if top is None else max(report.gain(top), 0.0)
        return head + f" No method finds much to gain: the best recovers {share:.0%} of the gap."
    return head + (f" Switching off {_listed(top.labels)} ({top.method}) recovers {report.gain(top):.0%} of it: "
                   f"worst group {top.test.worst:.1%}, mean {top.test.mean:.1%}.")


def _accuracy(acc: GroupAccuracy) -> dict:
    return {"mean": round(acc.mean, 4), "worst": round(acc.worst, 4), "worst_group": acc.worst_group}


def report_dict(report: ShortcutReport, units, spec: str) -> dict:
    """The report as JSON-able data (every method's heads and val/test accuracies; gains as shares of the gap)."""
    rows = []
    for f in report.findings:
        row = {"method": f.method, "switches": list(f.labels), "units": [list(s) for s in f.switches],
               "val": _accuracy(f.val), "test": _accuracy(f.test), "gain": round(report.gain(f), 4), "note": f.note}
        if not f.method.startswith("random"):
            row["per_group_test"] = {name: round(float(a), 4) for name, a in zip(report.group_names, f.test.per_group)
                                     if a == a}
        else:
            row["test"] |= {"worst_std": round(f.test_worst_std, 4), "mean_std": round(f.test_mean_std, 4)}
        if report.truth is not None:
            row["truth_ranks"] = list(truth_ranks(report, f, units))
            row["truth_of"] = int(report.truth.size if f.method.endswith("heads") else report.truth_pcs.size)
        rows.append(row)
    out = {"groups": spec, "source": report.groups, "methods": rows, "verdict": verdict(report),
           "per_group_test": {name: round(float(a), 4) for name, a in
                              zip(report.group_names, report.before_test.per_group) if a == a}}
    if report.truth is not None:
        order = np.argsort(-report.truth, kind="stable")[:MAX_HEADS]
        out["truth_top"] = [{"head": head_label(*units.head_at(int(u))), "eta2": round(float(report.truth[u]), 4)}
                            for u in order]
        flat = np.argsort(-report.truth_pcs, axis=None, kind="stable")[:MAX_PCS]
        n_pcs = report.truth_pcs.shape[1]
        out["truth_top_pcs"] = [{"pc": label((*units.head_at(int(i // n_pcs)), int(i % n_pcs))),
                                 "eta2": round(float(report.truth_pcs.flat[i]), 4)} for i in flat]
    return out



def _listed(labels, most: int = 4) -> str:
    return ", ".join(labels[:most]) + (f" and {len(labels) - most} more" if len(labels) > most else "")
