import torch

from residual_core.engine.decompose import HeadMaps, decompose_images
from residual_core.engine.pca import MomentStats, fit_head_pca, n_components_for, participation_ratio, raw_features, score_map


def _decomp(tiny, n, seed):
    images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return decompose_images(tiny.model, images)


def test_merged_moments_equal_one_pass(tiny):
    parts = [_decomp(tiny, n, seed) for n, seed in ((7, 1), (13, 2), (5, 3))]
    ys = [raw_features(d.z, d.mean, d.std) for d in parts]
    merged = MomentStats.from_batch(ys[0]).merge(MomentStats.from_batch(ys[1])).merge(MomentStats.from_batch(ys[2]))
    whole = MomentStats.from_batch(torch.cat(ys))
    assert merged.count == 25
    assert torch.allclose(merged.mean, whole.mean, atol=1e-12)
    assert torch.allclose(merged.scatter, whole.scatter, atol=1e-9)


def test_pca_matches_direct_svd_and_reconstructs(tiny):
    decomp = _decomp(tiny, 40, 5)
    maps = HeadMaps.from_model(tiny.model)
    pca = fit_head_pca(MomentStats.from_batch(raw_features(decomp.z, decomp.mean, decomp.std)), maps)
    heads = decomp.heads.double()
    centred = heads[:, 1, 3] - heads[:, 1, 3].mean(0)
    direct = torch.linalg.svdvals(centred) ** 2 / 39
    k = pca.eigenvalues.shape[-1]
    assert torch.allclose(pca.eigenvalues[1, 3].double(), direct[:k], rtol=1e-4, atol=1e-9)
    comps = pca.components.double()
    eye = torch.eye(k, dtype=torch.float64)
    assert torch.allclose(comps[0, 0] @ comps[0, 0].T, eye, atol=1e-5)
    scores = pca.project(decomp.heads)
    assert torch.allclose(pca.reconstruct(scores), decomp.heads, atol=1e-5)
    gmat, offset = score_map(pca, maps)
    cheap = torch.einsum("nlhp,lhpk->nlhk", raw_features(decomp.z, decomp.mean, decomp.std).double(), gmat) + offset
    assert torch.allclose(cheap.float(), scores, atol=1e-5)
    assert (pca.eigenvalues[..., :-1] >= pca.eigenvalues[..., 1:] - 1e-9).all()


def test_spectrum_helpers():
    evals = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    assert torch.allclose(participation_ratio(evals), torch.tensor([100 / 30, 4.0]))
    # cumulative [0.4, 0.7, 0.9, 1.0] and [0.25, 0.5, 0.75, 1.0]; k = 1 + first index with cumulative > τ
    assert n_components_for(evals, 0.85).tolist() == [3, 4]
    assert n_components_for(evals, 0.5).tolist() == [2, 3]
    assert n_components_for(evals, 0.7 - 1e-9).tolist() == [2, 3]
