import numpy as np
import pytest
import torch

from residual_core.analysis.adapters import make_adapter
from residual_core.analysis.align import align
from synthetic import planted, subset


def _splits(noise: float, seed: int = 0, label_noise: float | None = None):
    cache, _ = planted(n=600, noise=noise, seed=seed, label_noise=label_noise)
    rows = np.arange(600)
    return subset(cache, rows[:360]), subset(cache, rows[360:480]), subset(cache, rows[480:])


@pytest.mark.parametrize("method", ["coarse", "fine", "full", "linear", "spectral"])
def test_identity_start_reproduces_the_unablated_accuracy(method):
    train, val, test = _splits(noise=0.5)
    result = align(train, val, test, method, epochs=0, identity_start=True)
    assert result.test_acc == pytest.approx(test.baseline_accuracy(), abs=1 / 120)
    assert result.zeroshot_test_acc == pytest.approx(test.baseline_accuracy())


def test_fine_training_beats_zero_shot_when_a_planted_pc_carries_the_label():
    train, val, test = _splits(noise=2.0, seed=1, label_noise=0.2)  # noisy heads drown a clean label head
    result = align(train, val, test, "fine", epochs=30)
    assert result.zeroshot_test_acc < 0.8
    assert result.test_acc > result.zeroshot_test_acc + 0.1
    assert 0 < result.n_params <= train.n_layers * train.n_heads * train.n_pcs


def test_results_are_reproducible_and_parameter_counts_follow_the_method():
    train, val, test = _splits(noise=1.0, seed=2)
    a = align(train, val, test, "coarse", epochs=3)
    b = align(train, val, test, "coarse", epochs=3)
    assert a.test_acc == b.test_acc and np.array_equal(a.lambdas, b.lambdas)
    assert a.n_params == train.n_layers * train.n_heads
    d = train.output.shape[1]
    assert align(train, val, test, "linear", epochs=1).n_params == d * d + d
    assert align(train, val, test, "spectral", epochs=1).n_params == d
    assert align(train, val, test, "zeroshot").n_params == 0


def test_reference_compat_reproduces_the_square_basis_quirk():
    train, _, _ = _splits(noise=1.0)
    batch = {"output": torch.from_numpy(train.output[:5])}
    quirk = make_adapter("spectral", train, compat=True, identity=False, seed=0)
    intended = make_adapter("spectral", train, compat=False, identity=False, seed=0)
    centred = batch["output"] - quirk.out_mean
    assert torch.allclose(quirk.embed(batch), centred * quirk.lam)  # the basis cancels: element-wise scaling
    projected = ((centred @ intended.out_basis.T) * intended.lam) @ intended.out_basis
    assert torch.allclose(intended.embed(batch), projected)
    assert not torch.allclose(quirk.embed(batch), intended.embed(batch))


def test_val_and_test_must_share_the_train_basis():
    train, _, _ = _splits(noise=1.0)
    other, _ = planted(seed=9)
    with pytest.raises(ValueError, match="basis-from"):
        align(train, other, other, "fine")


@pytest.mark.parametrize("method", ["zeroshot", "coarse", "fine", "full", "linear", "spectral"])
@pytest.mark.parametrize("identity", [False, True])
def test_projected_forward_equals_logits_of_the_embedding(method, identity):
    # validation multiplies by B·W instead of forming z; that must give the same class scores
    train, _, _ = _splits(noise=1.0)
    model = make_adapter(method, train, compat=False, identity=identity, seed=3)
    from residual_core.analysis.align import _split_tensors

    batch = _split_tensors(train, model.columns, model.needs)  # only what the method reads: a missing need fails
    w = torch.from_numpy(train.classifier)
    with torch.no_grad():
        assert torch.allclose(model.readout(batch, w), model.embed(batch) @ w, atol=1e-4, rtol=1e-4)


def test_fine_multiplies_only_the_kept_pcs_and_matches_the_masked_sum():
    train, _, _ = _splits(noise=1.0)
    model = make_adapter("fine", train, compat=False, identity=False, seed=0)
    keep = model.keep.bool()
    assert model.n_params == int(keep.sum()) == len(model.columns) < keep.numel()
    scores = torch.from_numpy(np.asarray(train.head_scores, dtype=np.float32)).permute(2, 0, 1)  # [n, U, k]
    comps = torch.from_numpy(train.head_components)  # [U, k, E]
    dense = torch.einsum("nuk,uke->ne", scores * model.lam.detach() * keep, comps)  # the formula, all PCs
    from residual_core.analysis.align import _split_tensors

    with torch.no_grad():
        assert torch.allclose(model.embed(_split_tensors(train, model.columns, model.needs)), dense, atol=1e-4)


def test_progress_history_and_head_lambdas_are_reported():
    train, val, test = _splits(noise=1.0, seed=2)
    seen = []
    result = align(train, val, test, "fine", epochs=3, patience=10, progress=lambda e, n, acc: seen.append((e, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    lam = result.head_lambda
    assert lam.shape == (train.n_layers * train.n_heads, train.n_pcs)
    assert np.isnan(lam).sum() == lam.size - result.n_params  # pruned PCs are marked, not trained
    coarse = align(train, val, test, "coarse", epochs=1).head_lambda
    assert np.allclose(coarse, coarse[:, :1])  # one λ per head, shown on every PC


def _fake_manifest(folder, key: str) -> None:
    """A valid manifest of one small file: enough for the results to be keyed by it."""
    from residual_core.build import store

    store.atomic_save_npy(folder / "labels.npy", np.arange(3))
    store.write_manifest(folder, {"key": key, "schema_version": store.SCHEMA_VERSION, "spec": {}, "inputs": {},
                                  "arch": {}, "files": store.describe_files(folder, ["labels.npy"])})


def test_results_are_saved_beside_the_cache_and_lambda_maps_to_lab_scales(tmp_path):
    from residual_core.analysis.align_results import lambda_scales, result_tag, save_result, saved_head_lambdas, saved_results

    train, val, test = _splits(noise=1.0, seed=2)
    _fake_manifest(tmp_path, "k1")
    for method in ("fine", "zeroshot"):
        result = align(train, val, test, method, epochs=2)
        save_result(tmp_path, result, result_tag(method), {"epochs": 2})
    reports = saved_results(tmp_path)
    assert [r["method"] for r in reports] == ["zeroshot", "fine"]  # METHODS order
    lam = saved_head_lambdas(tmp_path, "align_fine")
    assert lam.shape == (train.n_layers * train.n_heads, train.n_pcs)
    scales = dict(((l, h, k), v) for l, h, k, v in lambda_scales(lam, train.n_heads))
    u, k = np.argwhere(np.isnan(lam))[0]
    assert scales[(u // train.n_heads, u % train.n_heads, k)] == 0.0  # pruned PCs are switched off
    u, k = np.argwhere(~np.isnan(lam))[0]
    assert scales.get((u // train.n_heads, u % train.n_heads, k), 1.0) == pytest.approx(lam[u, k], abs=1e-3)
    _fake_manifest(tmp_path, "k2")
    assert saved_results(tmp_path) == []  # results of a rebuilt cache are not shown for the new one


def test_reference_compat_full_keeps_d_head_pcs_per_head():
    from dataclasses import replace

    train, val, test = _splits(noise=1.0, seed=5)
    k = train.n_pcs  # 15 planted PCs per head here; call the last two the "+2" directions
    arch = dict(train.manifest["arch"], d_head=k - 2)
    train, val, test = (replace(c, manifest=dict(c.manifest, arch=arch)) for c in (train, val, test))
    n_heads, n_mlp = train.n_layers * train.n_heads, train.n_layers * train.output.shape[1]
    assert align(train, val, test, "full", epochs=1).n_params == n_heads * k + n_mlp
    compat = align(train, val, test, "full", epochs=1, reference_compat=True)
    assert compat.n_params == n_heads * (k - 2) + n_mlp
    assert np.isnan(compat.head_lambda[:, k - 2:]).all() and not np.isnan(compat.head_lambda[:, :k - 2]).any()


def test_subnormals_are_flushed_only_while_training():
    from residual_core.analysis.align import flushing_denormals

    tiny = torch.tensor([1e-39])  # subnormal in float32
    with flushing_denormals():
        assert (tiny * 1.0).item() == 0.0
    assert (tiny * 1.0).item() != 0.0
    train, val, test = _splits(noise=1.0, seed=6)
    align(train, val, test, "fine", epochs=1)
    assert (tiny * 1.0).item() != 0.0  # align restored the default


def test_training_without_the_subnormal_guards_learns_the_same_thing():
    train, val, test = _splits(noise=2.0, seed=1, label_noise=0.2)
    guarded = align(train, val, test, "fine", epochs=5)
    plain = align(train, val, test, "fine", epochs=5, flush_denormals=False)  # the bench's "before" path
    assert plain.test_acc == pytest.approx(guarded.test_acc, abs=2 / 120)  # 120 test images: at most 2 differ
    assert plain.test_acc > plain.zeroshot_test_acc


def _label_in_the_rest(seed: int = 3):
    """Heads that carry the label weakly and an emb term that carries it strongly: dropping emb costs accuracy."""
    from synthetic import make_cache

    rng = np.random.default_rng(seed)
    n, n_layers, n_heads, d, n_classes = 600, 2, 3, 12, 4
    classifier = np.linalg.qr(rng.standard_normal((d, n_classes)))[0]
    labels = np.arange(n) % n_classes
    heads = rng.standard_normal((n, n_layers, n_heads, d))
    heads[:, 1, 2] += 0.8 * classifier[:, labels].T
    rest = (3.0 * classifier[:, labels].T + rng.standard_normal((n, d))).astype(np.float16).astype(np.float64)
    cache = make_cache(heads, labels, classifier, rest)
    rows = np.arange(n)
    return subset(cache, rows[:360]), subset(cache, rows[360:480]), subset(cache, rows[480:])


def test_coarse_at_lambda_one_is_the_heads_only_readout_the_ablation_engine_gives():
    from residual_core.read.ablation import AblationMask, evaluate

    train, val, test = _label_in_the_rest()
    result = align(train, val, test, "coarse", epochs=2)
    heads_only = evaluate(test, AblationMask(mlps=frozenset(range(test.n_layers)), embed=True, mode="zero"))
    assert result.identity_test_acc == pytest.approx(heads_only.accuracy)
    assert result.identity_test_acc < result.zeroshot_test_acc - 0.1  # the emb term it drops carried the label
    started_whole = align(train, val, test, "coarse", epochs=0, identity_start=True)
    assert started_whole.identity_test_acc == pytest.approx(test.baseline_accuracy(), abs=1 / 120)


@pytest.mark.parametrize("method", ["linear", "zeroshot"])
def test_methods_on_the_whole_output_start_at_zero_shot(method):
    train, val, test = _label_in_the_rest()
    result = align(train, val, test, method, epochs=1)
    assert result.identity_test_acc == pytest.approx(result.zeroshot_test_acc)


@pytest.mark.parametrize("method", ["coarse", "fine", "linear", "spectral"])
def test_measuring_the_start_leaves_the_parameters_being_trained_alone(method):
    from residual_core.analysis.align import _Split, _identity_accuracy

    train, _, test = _label_in_the_rest()
    model = make_adapter(method, train, compat=False, identity=False, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # not the identity, so a missed restore shows
    before = [p.detach().clone() for p in model.parameters()]
    _identity_accuracy(model, _Split(test, model), torch.from_numpy(train.classifier))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_under_compat_the_untrained_start_is_never_the_best_epoch():
    """Lightning's checkpoint sees trained epochs only; here epoch 0 is a candidate unless reference_compat."""
    train, val, test = _splits(noise=0.5)
    ruin = dict(epochs=3, patience=5, lr=1e4, identity_start=True)  # starts at the model, then a huge step ruins it
    default = align(train, val, test, "coarse", **ruin)
    assert default.best_epoch == 0 and default.val_acc == default.history[0]["val_acc"]
    compat = align(train, val, test, "coarse", reference_compat=True, **ruin)
    assert compat.best_epoch >= 1
    assert compat.val_acc == max(h["val_acc"] for h in compat.history[1:])
