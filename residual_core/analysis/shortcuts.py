"""Find the heads behind a shortcut and switch them off: worst-group accuracy, methods side by side.

Every method ranks or picks heads on the val cache; what its heads buy is then measured on the test cache, with
the heads mean-ablated (TextSpan's repair of Waterbirds, ICLR 2024). The methods:
  words     the share of a head's variance in the span of the attribute's words (bank texts naming a value:
            "red" for colour), from its PCA: Σ_k λ_k ‖Q φ_k‖² / Σ_k λ_k, Q an orthonormal basis of the centred
            value directions.
  contrast  (Locate-Then-Correct style) a head's centred direct push toward the true class, s ↦ (c_u − c̄_u)·
            (t_y − mean_c t_c), averaged over the images of the groups the model serves well (accuracy at or
            above the mean) minus its average over the rest: heads that help only the favoured groups.
  greedy    forward selection: each step switches off the head that lifts val worst-group accuracy most, as long
            as it lifts it and val mean accuracy stays within ``max_mean_loss`` of the start.
  random    as many random heads as greedy chose, over ``draws`` seeds (mean ± std): what luck buys.
A ranking's own count k is chosen on val too: the k ≤ ``max_heads`` with the best val worst-group accuracy.
Ground truth, where the world knows it: each head's η² of the attribute (variance-weighted over its PCs, val).
"""

from dataclasses import dataclass, field

import numpy as np

from residual_core.read.ablation import AblationMask, apply_mask, pc_coefficients, readout
from residual_core.read.cache import Cache
from residual_core.read.groups import GroupAccuracy, Groups, group_accuracy
from residual_core.read.live import LogitState
from residual_core.engine.units import head_label

MAX_HEADS = 8  # the most heads a method may switch off
MAX_MEAN_LOSS = 0.02  # greedy keeps val mean accuracy within 2 points of the start
DRAWS = 20


@dataclass(frozen=True)
class Finding:
    """One method's heads and what switching them off does (val: where they were chosen; test: reported)."""

    method: str
    heads: tuple[tuple[int, int], ...]
    val: GroupAccuracy
    test: GroupAccuracy
    test_worst_std: float = float("nan")  # random: the spread of test worst-group accuracy over draws
    test_mean_std: float = float("nan")
    note: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(head_label(l, h) for l, h in self.heads)


@dataclass(frozen=True)
class ShortcutReport:
    before_val: GroupAccuracy
    before_test: GroupAccuracy
    findings: tuple[Finding, ...]
    groups: str  # where the groups came from
    group_names: tuple[str, ...] = ()  # the test groups' names (before_test.per_group's order)
    truth: np.ndarray | None = None  # [n_heads_total] η² of the attribute per head (val), where known
    rankings: dict = field(default_factory=dict)  # {method: [n_heads_total] score}

    def gain(self, finding: Finding) -> float:
        """Test worst-group points recovered, as a share of the gap below the mean before any switch."""
        gap = self.before_test.mean - self.before_test.worst
        return (finding.test.worst - self.before_test.worst) / gap if gap > 0 else float("nan")


def accuracy_of(cache: Cache, groups: Groups, heads) -> GroupAccuracy:
    """Mean, per-group and worst-group accuracy of ``cache`` with ``heads`` mean-ablated (exact, from the mask)."""
    logits = apply_mask(cache, AblationMask(heads=frozenset(heads)), readout(cache, logits=True))  # [n, C]
    return group_accuracy(logits.argmax(1) == cache.labels, groups)


def contrast_scores(cache: Cache, groups: Groups) -> np.ndarray:
    """[n_heads_total] push toward the true class on well-served groups minus on the rest (higher: more to blame)."""
    before = group_accuracy(cache.baseline_predictions() == cache.labels, groups)
    favoured_group = before.per_group >= before.mean  # [n_groups]
    inside = groups.index >= 0
    favoured = np.zeros(cache.n_images, dtype=bool)
    favoured[inside] = favoured_group[groups.index[inside]]
    rest = inside & ~favoured
    if not favoured.any() or not rest.any():
        return np.zeros(cache.units.n_heads_total)
    rows = np.arange(cache.n_images)
    scores = np.zeros(cache.units.n_heads_total)
    for u in range(len(scores)):
        centred = pc_coefficients(cache, u, "mean").T.numpy() @ cache.pc_logits[u]  # [n, C] centred logits
        push = centred[rows, cache.labels] - centred.mean(1)  # [n] toward the true class, against the average class
        scores[u] = push[favoured].mean() - push[rest].mean()
    return scores


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
    u, s, vt = np.linalg.svd(directions, full_matrices=False)
    return vt[s > s.max() * 1e-6]


def _names(words: list[str], value: list[str]) -> bool:
    return any(words[i:i + len(value)] == value for i in range(len(words) - len(value) + 1))


def word_scores(cache: Cache, values) -> np.ndarray:
    """[n_heads_total] share of each head's variance in the span of the attribute's words (0 without words)."""
    basis = word_basis(cache, values)  # [r, d_embed]
    if not len(basis):
        return np.zeros(cache.units.n_heads_total)
    inside = np.einsum("ukd,rd->ukr", cache.head_components, basis)  # [heads, n_pcs, r]
    eig = np.asarray(cache.head_eigenvalues, dtype=np.float64)  # [heads, n_pcs]
    return (eig * (inside ** 2).sum(2)).sum(1) / np.maximum(eig.sum(1), 1e-30)


def truth_scores(cache: Cache, attribute: np.ndarray) -> np.ndarray:
    """[n_heads_total] η² of ``attribute`` [n_images] (≥ 0) in each head's PCA scores, weighting PCs by variance:
    between-value variance over total variance, summed over PCs."""
    counts = np.bincount(attribute)
    out = np.zeros(cache.units.n_heads_total)
    for u in range(len(out)):
        s = pc_coefficients(cache, u, "mean").numpy().astype(np.float64)  # [n_pcs, n] centred
        s -= s.mean(1, keepdims=True)
        means = np.stack([np.bincount(attribute, weights=row, minlength=len(counts)) for row in s]) / \
            np.maximum(counts, 1)  # [n_pcs, n_values]
        out[u] = (means ** 2 @ counts).sum() / max(float((s ** 2).sum()), 1e-30)
    return out


def pick_k(cache: Cache, groups: Groups, ranking: np.ndarray, max_heads: int = MAX_HEADS) -> tuple:
    """The top-k heads of ``ranking`` (k ≤ max_heads) with the best val worst-group accuracy (then mean; then
    fewer heads)."""
    order = np.argsort(-ranking, kind="stable")
    state = LogitState(cache)
    best, best_key = (), _key(group_accuracy(state.result().predictions == cache.labels, groups), 0)
    for k, u in enumerate(order[:max_heads], start=1):
        state.toggle_head(*cache.units.head_at(int(u)))
        key = _key(group_accuracy(state.result().predictions == cache.labels, groups), k)
        if key > best_key:
            best, best_key = tuple(cache.units.head_at(int(v)) for v in order[:k]), key
    return best


def _key(acc: GroupAccuracy, k: int) -> tuple:
    return (round(acc.worst, 9), round(acc.mean, 9), -k)


def greedy(cache: Cache, groups: Groups, max_heads: int = MAX_HEADS, max_mean_loss: float = MAX_MEAN_LOSS,
           candidates=None) -> tuple:
    """Heads chosen one at a time to lift val worst-group accuracy (see the module's text)."""
    state = LogitState(cache)
    start = group_accuracy(state.result().predictions == cache.labels, groups)
    current = start
    candidates = [cache.units.head_at(u) for u in range(cache.units.n_heads_total)] if candidates is None \
        else list(candidates)
    chosen: list = []
    for _ in range(max_heads):
        best, best_acc = None, current
        for head in candidates:
            if head in chosen:
                continue
            state.toggle_head(*head)
            acc = group_accuracy(state.result().predictions == cache.labels, groups)
            state.toggle_head(*head)
            if acc.mean >= start.mean - max_mean_loss and _key(acc, 0) > _key(best_acc, 0) and \
                    acc.worst > current.worst:
                best, best_acc = head, acc
        if best is None:
            break
        chosen.append(best)
        state.toggle_head(*best)
        current = best_acc
    return tuple(chosen)


def random_heads(cache: Cache, k: int, seed: int) -> tuple:
    """``k`` heads drawn without replacement by a generator seeded ``seed``."""
    rng = np.random.default_rng(seed)
    return tuple(cache.units.head_at(int(u)) for u in sorted(rng.choice(cache.units.n_heads_total, k, replace=False)))


def find_shortcuts(val: Cache, test: Cache, val_groups: Groups, test_groups: Groups, values=(),
                   truth: np.ndarray | None = None, max_heads: int = MAX_HEADS, draws: int = DRAWS,
                   progress=None) -> ShortcutReport:
    """Every method on ``val``, measured on ``test``. ``values``: the attribute's words (for ``words``);
    ``truth``: [n_val_images] the attribute's value per val image, where known (for the ground-truth η²)."""
    if val.units != test.units:
        raise ValueError("the val and test caches come from different models")
    tell = progress or (lambda what: None)
    found, rankings = [], {}

    def add(method: str, heads, note: str = "") -> Finding:
        finding = Finding(method, tuple(heads), accuracy_of(val, val_groups, heads),
                          accuracy_of(test, test_groups, heads), note=note)
        found.append(finding)
        return finding

    add("none", (), "no switch: the model as it is")
    tell("words")
    rankings["words"] = word_scores(val, values)
    if rankings["words"].any():
        add("words", pick_k(val, val_groups, rankings["words"], max_heads), "heads whose variance the attribute's "
            "words span most")
    tell("contrast")
    rankings["contrast"] = contrast_scores(val, val_groups)
    add("contrast", pick_k(val, val_groups, rankings["contrast"], max_heads), "heads that push the true class "
        "for well-served groups more than for the rest")
    tell("greedy")
    chosen = add("greedy", greedy(val, val_groups, max_heads), "heads chosen one by one for val worst-group "
                 "accuracy")
    k = max(len(chosen.heads), 1)
    tell("random")
    draws_acc = [accuracy_of(test, test_groups, random_heads(val, k, seed)) for seed in range(draws)]
    worst, mean = np.array([a.worst for a in draws_acc]), np.array([a.mean for a in draws_acc])
    first = random_heads(val, k, 0)
    found.append(Finding("random", first, accuracy_of(val, val_groups, first),
                         GroupAccuracy(float(mean.mean()), float(worst.mean()), "—",
                                       np.full(len(test_groups.names), np.nan), test_groups.counts),
                         float(worst.std()), float(mean.std()),
                         f"{k} random head{'s' * (k > 1)}, mean ± std over {draws} draws (heads: draw 0)"))
    truth_ranking = truth_scores(val, truth) if truth is not None else None
    return ShortcutReport(found[0].val, found[0].test, tuple(found), val_groups.source, test_groups.names,
                          truth_ranking, rankings)


def truth_ranks(report: ShortcutReport, finding: Finding, units) -> tuple[int, ...]:
    """Where each of a finding's heads stands among all heads by the ground truth (1: carries the attribute most)."""
    if report.truth is None:
        return ()
    order = np.argsort(-report.truth, kind="stable")
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(1, len(order) + 1)
    return tuple(int(rank[units.head_index(l, h)]) for l, h in finding.heads)
