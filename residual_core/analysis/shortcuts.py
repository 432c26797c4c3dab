"""Find the heads behind a shortcut and switch them off: worst-group accuracy, methods side by side.

Every method picks switches on the val cache, whole heads or single PCs of a head; what they buy is then measured
on the test cache, with them mean-ablated (TextSpan's repair of Waterbirds, ICLR 2024). The methods, each at both
grains (a head's score is over all its PCs; a PC's over itself; PCs are each head's first ``PC_CANDIDATES``):
  words     the unit's variance in the span of the attribute's words (bank texts naming a value: "red" for colour),
            Q an orthonormal basis of the centred value directions: a head's share, Σ_k λ_k ‖Q φ_k‖² / Σ_k λ_k; a
            PC's variance there, λ_k ‖Q φ_k‖².
  contrast  (Locate-Then-Correct style) the unit's centred direct push toward the true class, (c − c̄)·(t_y − mean_c
            t_c), averaged over the groups the model serves well (accuracy at or above the mean) minus over the rest.
  greedy    forward selection: each step switches off what lifts val worst-group accuracy most, as long as it lifts
            it and val mean accuracy stays within ``max_mean_loss`` of the start.
  words+greedy  the greedy search among the GUIDED PCs the words rank first: switches that repair the worst group
            and are about the attribute.
  random    as many random heads (PCs) as greedy chose, over ``draws`` seeds (mean ± std): what luck buys.
A ranking's own count k is chosen on val too: the k ≤ ``max_heads`` (``max_pcs``) with the best val worst group.
Ground truth, where the world knows it: each unit's η² of the attribute (a head's variance-weighted over its PCs).
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from residual_core.read.ablation import AblationMask, apply_mask, as_tensor, pc_coefficients, readout
from residual_core.read.cache import Cache
from residual_core.read.groups import GroupAccuracy, Groups, group_accuracy
from residual_core.read.live import LogitState
from residual_core.engine.units import head_label, pc_label

MAX_HEADS = 8  # the most heads a method may switch off
MAX_PCS = 16  # the most PCs
PC_CANDIDATES = 8  # each head's first PCs are the PC methods' candidates
MAX_MEAN_LOSS = 0.02  # greedy keeps val mean accuracy within 2 points of the start
DRAWS = 20
GUIDED = 64  # words+greedy: the greedy search among this many PCs the words rank first


def label(switch: tuple) -> str:
    """'L2H6' for a head (layer, head), 'L2H6 PC1' for a PC (layer, head, pc)."""
    return head_label(*switch) if len(switch) == 2 else pc_label(*switch)


def mask_of(switches) -> AblationMask:
    """Heads (2-tuples) and PCs (3-tuples) switched off, mean mode."""
    return AblationMask(heads=frozenset(s for s in switches if len(s) == 2),
                        pcs=frozenset(s for s in switches if len(s) == 3))


@dataclass(frozen=True)
class Finding:
    """One method's switches and what they do (val: where they were chosen; test: reported)."""

    method: str
    switches: tuple[tuple[int, ...], ...]
    val: GroupAccuracy
    test: GroupAccuracy
    test_worst_std: float = float("nan")  # random: the spread of test worst-group accuracy over draws
    test_mean_std: float = float("nan")
    note: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label(s) for s in self.switches)


@dataclass(frozen=True)
class ShortcutReport:
    before_val: GroupAccuracy
    before_test: GroupAccuracy
    findings: tuple[Finding, ...]
    groups: str  # where the groups came from
    group_names: tuple[str, ...] = ()  # the test groups' names (before_test.per_group's order)
    truth: np.ndarray | None = None  # [n_heads_total] η² of the attribute per head (val), where known
    truth_pcs: np.ndarray | None = None  # [n_heads_total, PC_CANDIDATES] η² per PC
    rankings: dict = field(default_factory=dict)  # {method: scores}

    def gain(self, finding: Finding) -> float:
        """Test worst-group points recovered, as a share of the gap below the mean before any switch."""
        gap = self.before_test.mean - self.before_test.worst
        return (finding.test.worst - self.before_test.worst) / gap if gap > 0 else float("nan")


def accuracy_of(cache: Cache, groups: Groups, switches) -> GroupAccuracy:
    """Mean, per-group and worst-group accuracy of ``cache`` with ``switches`` mean-ablated (exact, from the mask)."""
    logits = apply_mask(cache, mask_of(switches), readout(cache, logits=True))  # [n, C]
    return group_accuracy(logits.argmax(1) == cache.labels, groups)


def _favoured(cache: Cache, groups: Groups) -> tuple[np.ndarray, np.ndarray]:
    """([n] images of the groups served at or above the mean, [n] images of the other groups)."""
    before = group_accuracy(cache.baseline_predictions() == cache.labels, groups)
    inside = groups.index >= 0
    favoured = np.zeros(cache.n_images, dtype=bool)
    favoured[inside] = (before.per_group >= before.mean)[groups.index[inside]]
    return favoured, inside & ~favoured


def contrast_scores(cache: Cache, groups: Groups) -> tuple[np.ndarray, np.ndarray]:
    """([n_heads_total], [n_heads_total, PC_CANDIDATES]): push toward the true class on well-served groups minus on
    the rest (higher: more to blame)."""
    favoured, rest = _favoured(cache, groups)
    n_pcs = min(cache.n_pcs, PC_CANDIDATES)
    heads, pcs = np.zeros(cache.units.n_heads_total), np.zeros((cache.units.n_heads_total, n_pcs))
    if not favoured.any() or not rest.any():
        return heads, pcs
    for u in range(len(heads)):
        coef = pc_coefficients(cache, u, "mean").numpy()  # [n_pcs, n] centred
        toward = cache.pc_logits[u][:, cache.labels] - cache.pc_logits[u].mean(1, keepdims=True)  # [n_pcs, n]
        push = coef * toward  # [n_pcs, n] each PC's push toward the true class, against the average class
        diff = push[:, favoured].mean(1) - push[:, rest].mean(1)  # [n_pcs]
        heads[u], pcs[u] = diff.sum(), diff[:n_pcs]
    return heads, pcs


def word_basis(cache: Cache, values) -> np.ndarray:
    """[r, d_embed] orthonormal basis of the attribute's value directions, from the bank texts that name a value
    (a whole word); r = 0 when fewer than two values are named."""
    means = []
    for value in values:
        words = str(value).lower().split()
        rows = [i for i, t in enumerate(cache.texts) if _names(t.lower().split(), words)]
        if rows:
            means.append(np.asarray(cache.text_embeds[rows], dtype=np.float64).mean(0))
    if len(means) < 2:
        return np.zeros((0, cache.text_embeds.shape[1]))
    directions = np.stack(means) - np.mean(means, 0)  # [n_values, d_embed] centred: what tells values apart
    _, s, vt = np.linalg.svd(directions, full_matrices=False)
    return vt[s > s.max() * 1e-6]


def _names(words: list[str], value: list[str]) -> bool:
    return any(words[i:i + len(value)] == value for i in range(len(words) - len(value) + 1))


def word_scores(cache: Cache, values) -> tuple[np.ndarray, np.ndarray]:
    """([n_heads_total], [n_heads_total, PC_CANDIDATES]): the share of each head's variance in the span of the
    attribute's words, and each PC's variance in it, λ_k ‖Q φ_k‖² (a share would rank a faint PC that happens to
    point along the words with the head's main one); 0 without words."""
    basis = word_basis(cache, values)  # [r, d_embed]
    n_pcs = min(cache.n_pcs, PC_CANDIDATES)
    if not len(basis):
        return np.zeros(cache.units.n_heads_total), np.zeros((cache.units.n_heads_total, n_pcs))
    inside = (np.einsum("ukd,rd->ukr", cache.head_components, basis) ** 2).sum(2)  # [heads, n_pcs] ‖Q φ_k‖²
    eig = np.asarray(cache.head_eigenvalues, dtype=np.float64)  # [heads, n_pcs]
    return (eig * inside).sum(1) / np.maximum(eig.sum(1), 1e-30), (eig * inside)[:, :n_pcs]


def truth_scores(cache: Cache, attribute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([n_heads_total], [n_heads_total, PC_CANDIDATES]) η² of ``attribute`` [n_images] in each head's PCA scores
    (between-value variance over total variance: a head's summed over its PCs, a PC's its own)."""
    counts = np.bincount(attribute)
    n_pcs = min(cache.n_pcs, PC_CANDIDATES)
    heads, pcs = np.zeros(cache.units.n_heads_total), np.zeros((cache.units.n_heads_total, n_pcs))
    for u in range(len(heads)):
        s = pc_coefficients(cache, u, "mean").numpy().astype(np.float64)  # [n_pcs, n] centred
        s -= s.mean(1, keepdims=True)
        means = np.stack([np.bincount(attribute, weights=row, minlength=len(counts)) for row in s]) / \
            np.maximum(counts, 1)  # [n_pcs, n_values]
        between, total = means ** 2 @ counts, (s ** 2).sum(1)  # [n_pcs] each
        heads[u] = between.sum() / max(total.sum(), 1e-30)
        pcs[u] = (between / np.maximum(total, 1e-30))[:n_pcs]
    return heads, pcs


def _key(acc: GroupAccuracy, k: int) -> tuple:
    return (round(acc.worst, 9), round(acc.mean, 9), -k)


def _toggle(state: LogitState, switch: tuple) -> None:
    (state.toggle_head if len(switch) == 2 else state.toggle_pc)(*switch)


def pick_k(cache: Cache, groups: Groups, ranked: list, most: int) -> tuple:
    """The first k of ``ranked`` switches (k ≤ most) with the best val worst-group accuracy (then mean; then
    fewer); () when none beats switching nothing."""
    state = LogitState(cache)
    best, best_key = (), _key(group_accuracy(state.result().predictions == cache.labels, groups), 0)
    for k, switch in enumerate(ranked[:most], start=1):
        _toggle(state, switch)
        key = _key(group_accuracy(state.result().predictions == cache.labels, groups), k)
        if key > best_key:
            best, best_key = tuple(ranked[:k]), key
    return best


def ranked_heads(cache: Cache, scores: np.ndarray) -> list:
    return [cache.units.head_at(int(u)) for u in np.argsort(-scores, kind="stable") if scores[u] > 0]


def ranked_pcs(cache: Cache, scores: np.ndarray) -> list:
    """[n_heads_total, n] scores → PC switches, best first (only positive scores)."""
    order = np.argsort(-scores, axis=None, kind="stable")
    return [(*cache.units.head_at(int(i // scores.shape[1])), int(i % scores.shape[1])) for i in order
            if scores.flat[i] > 0]


def greedy(cache: Cache, groups: Groups, max_heads: int = MAX_HEADS, max_mean_loss: float = MAX_MEAN_LOSS,
           candidates=None) -> tuple:
    """Heads (or any switches in ``candidates``) chosen one at a time to lift val worst-group accuracy."""
    state = LogitState(cache)
    start = group_accuracy(state.result().predictions == cache.labels, groups)
    current = start
    candidates = [cache.units.head_at(u) for u in range(cache.units.n_heads_total)] if candidates is None \
        else list(candidates)
    chosen: list = []
    for _ in range(max_heads):
        best, best_acc = None, current
        for switch in candidates:
            if switch in chosen:
                continue
            _toggle(state, switch)
            acc = group_accuracy(state.result().predictions == cache.labels, groups)
            _toggle(state, switch)
            if acc.mean >= start.mean - max_mean_loss and _key(acc, 0) > _key(best_acc, 0) and \
                    acc.worst > current.worst:
                best, best_acc = switch, acc
        if best is None:
            break
        chosen.append(best)
        _toggle(state, best)
        current = best_acc
    return tuple(chosen)


def greedy_pcs(cache: Cache, groups: Groups, max_pcs: int = MAX_PCS, max_mean_loss: float = MAX_MEAN_LOSS,
               batch: int = 64) -> tuple:
    """``greedy`` over each head's first PC_CANDIDATES PCs, every candidate of a step at once: switching PC k off
    in mean mode adds the rank-one −(s_k − s̄_k) ⊗ (φ_k W) to the logits, so a batch of candidates is one
    broadcast sum and one arg-max."""
    n_pcs = min(cache.n_pcs, PC_CANDIDATES)
    candidates = [(*cache.units.head_at(u), k) for u in range(cache.units.n_heads_total) for k in range(n_pcs)]
    left = torch.stack([pc_coefficients(cache, cache.units.head_index(l, h), "mean", np.array([k]))[0]
                        for l, h, k in candidates])  # [m, n]
    right = torch.stack([as_tensor(cache.pc_logits[cache.units.head_index(l, h), k]).float()
                         for l, h, k in candidates])  # [m, C]
    labels = torch.from_numpy(np.asarray(cache.labels, dtype=np.int64))
    inside = groups.index >= 0
    onehot = torch.zeros(cache.n_images, len(groups.names))  # [n, G]
    onehot[torch.from_numpy(np.flatnonzero(inside)), torch.from_numpy(groups.index[inside])] = 1.0
    counts = onehot.sum(0)
    scored = counts > 0
    logits = torch.from_numpy(np.ascontiguousarray(readout(cache, True).base, dtype=np.float32)).clone()  # [n, C]

    def measure(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(worst [b], mean [b]) with each of candidate ``rows`` switched off on top of the current logits."""
        trial = logits[None] - left[rows][:, :, None] * right[rows][:, None, :]  # [b, n, C]
        right_ = (trial.argmax(2) == labels).float()  # [b, n]
        per_group = (right_ @ onehot) / counts.clamp(min=1)  # [b, G]
        return per_group[:, scored].min(1).values, right_.mean(1)

    start_worst, start_mean = (v[0].item() for v in measure_now(logits, labels, onehot, counts, scored))
    chosen: list[int] = []
    current = start_worst
    for _ in range(max_pcs):
        best, best_key = None, (current, -1.0)
        for first in range(0, len(candidates), batch):
            rows = torch.arange(first, min(first + batch, len(candidates)))
            worst, mean = measure(rows)
            for i, (w, m) in enumerate(zip(worst.tolist(), mean.tolist())):
                row = first + i
                if row in chosen or m < start_mean - max_mean_loss or w <= current:
                    continue
                if (round(w, 9), round(m, 9)) > best_key:
                    best, best_key = row, (round(w, 9), round(m, 9))
        if best is None:
            break
        chosen.append(best)
        logits -= left[best][:, None] * right[best][None, :]
        current = best_key[0]
    return tuple(candidates[i] for i in chosen)


def measure_now(logits: torch.Tensor, labels: torch.Tensor, onehot: torch.Tensor, counts: torch.Tensor,
                scored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(worst [1], mean [1]) of the logits as they are."""
    right = (logits.argmax(1) == labels).float()[None]  # [1, n]
    per_group = (right @ onehot) / counts.clamp(min=1)
    return per_group[:, scored].min(1).values, right.mean(1)


def random_switches(cache: Cache, k: int, seed: int, pcs: bool) -> tuple:
    """``k`` heads (or PCs among each head's first PC_CANDIDATES) drawn without replacement, seeded ``seed``."""
    rng = np.random.default_rng(seed)
    per = min(cache.n_pcs, PC_CANDIDATES) if pcs else 1
    drawn = sorted(rng.choice(cache.units.n_heads_total * per, k, replace=False))
    return tuple((*cache.units.head_at(int(i // per)), int(i % per)) if pcs else cache.units.head_at(int(i))
                 for i in drawn)


def find_shortcuts(val: Cache, test: Cache, val_groups: Groups, test_groups: Groups, values=(),
                   truth: np.ndarray | None = None, max_heads: int = MAX_HEADS, max_pcs: int = MAX_PCS,
                   draws: int = DRAWS, progress=None) -> ShortcutReport:
    """Every method on ``val``, measured on ``test``. ``values``: the attribute's words (for ``words``);
    ``truth``: [n_val_images] the attribute's value per val image, where known (for the ground-truth η²)."""
    if val.units != test.units:
        raise ValueError("the val and test caches come from different models")
    tell = progress or (lambda what: None)
    found, rankings = [], {}

    def add(method: str, switches, note: str) -> Finding:
        finding = Finding(method, tuple(switches), accuracy_of(val, val_groups, switches),
                          accuracy_of(test, test_groups, switches), note=note)
        found.append(finding)
        return finding

    def add_random(grain: str, k: int) -> None:
        pcs = grain == "PCs"
        accs = [accuracy_of(test, test_groups, random_switches(val, k, seed, pcs)) for seed in range(draws)]
        worst, mean = np.array([a.worst for a in accs]), np.array([a.mean for a in accs])
        first = random_switches(val, k, 0, pcs)
        found.append(Finding(f"random {grain}", first, accuracy_of(val, val_groups, first),
                             GroupAccuracy(float(mean.mean()), float(worst.mean()), "—",
                                           np.full(len(test_groups.names), np.nan), test_groups.counts),
                             float(worst.std()), float(mean.std()),
                             f"{k} random {grain if k > 1 else grain[:-1]}, mean ± std over {draws} draws (shown: "
                             "draw 0)"))

    add("none", (), "no switch: the model as it is")
    tell("words")
    heads, pcs = rankings["words"] = word_scores(val, values)
    if heads.any():
        add("words heads", pick_k(val, val_groups, ranked_heads(val, heads), max_heads),
            "the heads whose variance the attribute's words span most")
        add("words PCs", pick_k(val, val_groups, ranked_pcs(val, pcs), max_pcs),
            "the PCs the attribute's words span most")
        add("words+greedy PCs", greedy(val, val_groups, max_pcs, candidates=ranked_pcs(val, pcs)[:GUIDED]),
            f"the greedy search among the {GUIDED} PCs the attribute's words span most")
    tell("contrast")
    heads, pcs = rankings["contrast"] = contrast_scores(val, val_groups)
    add("contrast heads", pick_k(val, val_groups, ranked_heads(val, heads), max_heads),
        "the heads that push the true class for well-served groups more than for the rest")
    add("contrast PCs", pick_k(val, val_groups, ranked_pcs(val, pcs), max_pcs), "the same, PC by PC")
    tell("greedy")
    by_heads = add("greedy heads", greedy(val, val_groups, max_heads), "heads chosen one by one for val "
                   "worst-group accuracy")
    by_pcs = add("greedy PCs", greedy_pcs(val, val_groups, max_pcs), "PCs chosen one by one for val worst-group "
                 "accuracy")
    tell("random")
    add_random("heads", max(len(by_heads.switches), 1))
    add_random("PCs", max(len(by_pcs.switches), 1))
    truth_heads, truth_pcs = truth_scores(val, truth) if truth is not None else (None, None)
    return ShortcutReport(found[0].val, found[0].test, tuple(found), val_groups.source, test_groups.names,
                          truth_heads, truth_pcs, rankings)


def truth_ranks(report: ShortcutReport, finding: Finding, units) -> tuple[int, ...]:
    """Where each of a finding's switches stands by the ground truth among its kind (1: carries the attribute
    most): a head among all heads, a PC among every head's first PC_CANDIDATES PCs."""
    if report.truth is None:
        return ()
    ranks = []
    for switch in finding.switches:
        scores = report.truth if len(switch) == 2 else report.truth_pcs
        value = scores[units.head_index(*switch[:2])] if len(switch) == 2 else \
            scores[units.head_index(*switch[:2]), switch[2]]
        ranks.append(int((scores > value).sum()) + 1)
    return tuple(ranks)
