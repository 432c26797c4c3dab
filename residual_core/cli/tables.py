"""The command line's readable summaries: a table on stderr before each command's JSON line."""

import numpy as np

from residual_core.engine.units import head_label


MAX_CELL = 56  # characters a cell shows: a table stays within a terminal (the JSON line keeps every text whole)


def _cell(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned text columns, a rule under the header; a cell longer than MAX_CELL is cut with '…'."""
    headers, rows = [_cell(h) for h in headers], [[_cell(c) for c in row] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def verify_table(report: dict) -> str:
    verdict = "exact" if report["ok"] else "NOT exact (rel_err > 1e-4)"
    return table(["model", "images", "units", "heads", "rel_err", "max_abs_err", "verdict"],
                 [[report["model"], report["n_images"], report["n_units"], report["n_heads"],
                   f"{report['rel_err']:.1e}", f"{report['max_abs_err']:.1e}", verdict]])


def precompute_table(cache, skipped: int) -> str:
    m = cache.manifest
    body = table(["images", "classes", "heads", "PCs per head", "zero-shot accuracy", "rel_err", "dtype", "skipped"],
                 [[f"{cache.n_images:,}", len(cache.classnames), cache.n_layers * cache.n_heads, cache.n_pcs,
                   f"{m['zeroshot_accuracy']:.1%}", f"{m['max_rel_err']:.1e}", m["dtype"], skipped]])
    return f"cache ready at {cache.path}\n{body}"


def align_table(report: dict, n_train: int, n_val: int, n_test: int) -> str:
    return table(["method", "λ / params", "train/val/test images", "zero-shot test", "test at λ = 1", "val", "test",
                  "epochs", "best epoch", "seconds"],
                 [[report["method"], f"{report['n_params']:,}", f"{n_train:,}/{n_val:,}/{n_test:,}",
                   f"{report['zeroshot_test_acc']:.1%}", f"{report['identity_test_acc']:.1%}",
                   f"{report['val_acc']:.1%}", f"{report['test_acc']:.1%}",
                   report["epochs"], report["best_epoch"], f"{report['seconds']:.1f}"]])


def specialize_table(report: dict, val) -> str:
    """Top heads per score and the top-k curves, as text for a terminal."""
    lines = [f"val {val.n_images} images · {report['n_heads']} heads · baselines: all heads "
             f"{report['baselines']['H_zero']:.1%} (zero) / {report['baselines']['H_mean']:.1%} (mean), "
             f"full model {report['baselines']['B']:.1%}"]
    for method in ("S", "U|T", "U"):
        scores = np.array(report["scores"][method])
        best = np.argsort(-scores, kind="stable")[:5]
        heads = ", ".join(f"{head_label(*val.units.head_at(u))} ({scores[u]:.3f})" for u in best)
        lines.append(f"top heads by {method:<3}: {heads}")
    lines.append("test accuracy of the top-k heads (zero / mean ablation of every other unit):")
    lines.append("  k     " + "".join(f"{m:>15}" for m in ("S", "U|T", "U", "random")))
    for i, k in enumerate(report["k"]):
        cells = [f"{report['curves'][m]['zero'][i]:6.1%} /{report['curves'][m]['mean'][i]:6.1%}" for m in ("S", "U|T", "U")]
        rand = report["curves"]["random"]
        cells.append(f"{rand['zero']['mean'][i]:6.1%} /{rand['mean']['mean'][i]:6.1%}")
        lines.append(f"  {k:<6}" + "".join(f"{c:>15}" for c in cells))
    return "\n".join(lines)
