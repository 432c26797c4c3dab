import numpy as np
import pytest
import torch

from residual_core.align import Adapter, align
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
    quirk = Adapter("spectral", train, compat=True, identity=False, seed=0)
    intended = Adapter("spectral", train, compat=False, identity=False, seed=0)
    centred = batch["output"] - quirk.out_mean
    assert torch.allclose(quirk(batch), centred * quirk.lam)  # the basis cancels: element-wise scaling
    projected = ((centred @ intended.out_basis.T) * intended.lam) @ intended.out_basis
    assert torch.allclose(intended(batch), projected)
    assert not torch.allclose(quirk(batch), intended(batch))


def test_val_and_test_must_share_the_train_basis():
    train, _, _ = _splits(noise=1.0)
    other, _ = planted(seed=9)
    with pytest.raises(ValueError, match="basis-from"):
        align(train, other, other, "fine")
