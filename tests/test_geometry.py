import numpy as np
import pytest

from residual_core.analysis.geometry import head_geometry, head_spectral_cosine, spectral_cosine, two_nn_dimension
from synthetic import planted


def test_spectral_cosine_is_one_for_identical_and_zero_for_orthogonal_bases():
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((12, 12)))[0].T  # rows orthonormal
    weights = np.array([5.0, 3.0, 1.0, 0.5])
    assert spectral_cosine(basis[:4], weights, basis[:4], weights) == pytest.approx(1.0)
    assert spectral_cosine(basis[:4], weights, basis[4:8], weights) == pytest.approx(0.0, abs=1e-12)
    # PC signs are arbitrary: flipping them changes nothing
    assert spectral_cosine(basis[:4], weights, -basis[:4], weights) == pytest.approx(1.0)
    partly = spectral_cosine(basis[:4], weights, basis[[0, 5, 6, 7]], weights)
    assert 0.0 < partly < 1.0


@pytest.mark.parametrize("dim", [2, 5])
def test_two_nn_recovers_a_planted_dimension(dim):
    rng = np.random.default_rng(dim)
    latent = rng.uniform(size=(1500, dim))
    embedding = np.linalg.qr(rng.standard_normal((20, dim)))[0]  # [20, dim] orthonormal columns
    points = latent @ embedding.T
    assert two_nn_dimension(points) == pytest.approx(dim, rel=0.2)


def test_head_geometry_and_cosine_between_caches():
    a, _ = planted(seed=1)
    b, _ = planted(seed=1)
    c, _ = planted(seed=5)
    geometry = head_geometry(a, n_sample=300)
    assert set(geometry) == {"participation_ratio", "k90", "k99", "two_nn"}
    assert (geometry["k90"] <= geometry["k99"]).all()
    assert np.allclose(head_spectral_cosine(a, b), 1.0, atol=1e-5)
    cos = head_spectral_cosine(a, c)
    assert ((cos > 0) & (cos < 1.0 + 1e-6)).all()


def test_matched_pcs_keep_the_sign_and_pair_each_pc_once():
    from residual_core.analysis.geometry import match_pcs

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((8, 8)))[0][:5]  # 5 orthonormal rows
    w = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    flipped = basis * np.array([[1], [-1], [1], [1], [1]])  # PC2's sign flipped: the same subspace
    pairs = match_pcs(basis, w, flipped, w)
    assert sorted((i, j) for i, j, *_ in pairs) == [(i, i) for i in range(5)]
    cos = {i: c for i, _, c, _ in pairs}
    assert cos[1] == pytest.approx(-1.0) and cos[0] == pytest.approx(1.0)
    assert spectral_cosine(basis, w, flipped, w) == pytest.approx(1.0)
    swapped = basis[[1, 0, 2, 3, 4]]  # PC1 and PC2 change places: matched across the swap
    assert sorted((i, j) for i, j, *_ in match_pcs(basis, w, swapped, w[[1, 0, 2, 3, 4]]))[:2] == [(0, 1), (1, 0)]
