import numpy as np
import pytest
import torch

from residual_core.read.ablation import AblationMask, ablate_embeddings, evaluate
from residual_core.read import live
from residual_core.read.live import LogitState


def test_empty_mask_is_the_baseline_exactly(tiny_cache):
    result = evaluate(tiny_cache, AblationMask())
    direct = torch.from_numpy(tiny_cache.output) @ torch.from_numpy(tiny_cache.classifier)  # (N, C)
    assert np.array_equal(result.logits, direct.numpy())
    assert result.accuracy == tiny_cache.baseline_accuracy() == pytest.approx(tiny_cache.manifest["zeroshot_accuracy"])
    assert np.array_equal(ablate_embeddings(tiny_cache, AblationMask()), tiny_cache.output)


def _everything(cache, mode):
    heads = frozenset((l, h) for l in range(cache.n_layers) for h in range(cache.n_heads))
    return AblationMask(heads=heads, mlps=frozenset(range(cache.n_layers)), embed=True, mode=mode)


def test_mean_ablating_everything_gives_a_constant_prediction(tiny_cache):
    result = evaluate(tiny_cache, _everything(tiny_cache, "mean"))
    assert len(np.unique(result.predictions)) == 1
    emb = ablate_embeddings(tiny_cache, _everything(tiny_cache, "mean"))
    spread = np.abs(emb - emb.mean(0)).max() / np.abs(tiny_cache.output).max()
    assert spread < 2e-3  # only the fp16 rounding of the stored parts is left


def test_zero_ablating_everything_leaves_nothing(tiny_cache):
    emb = ablate_embeddings(tiny_cache, _everything(tiny_cache, "zero"))
    assert np.abs(emb).max() < 2e-3 * np.abs(tiny_cache.output).max()


def test_logits_follow_the_ablated_embeddings(tiny_cache):
    mask = AblationMask(heads=frozenset({(0, 1)}), pcs=frozenset({(1, 2, 0), (1, 2, 3)}), mlps=frozenset({0}),
                        scales=((1, 0, 1, 2.5),), mode="zero")
    result = evaluate(tiny_cache, mask)
    emb = ablate_embeddings(tiny_cache, mask)
    assert np.allclose(result.logits, emb @ tiny_cache.classifier, atol=1e-4)
    # removing head (0, 1) entirely changes the embedding by exactly that head's contribution
    only_head = ablate_embeddings(tiny_cache, AblationMask(heads=frozenset({(0, 1)}), mode="zero"))
    assert np.allclose(tiny_cache.output - only_head, tiny_cache.head_contributions(0, 1), atol=1e-5)


def test_pc_ablation_moves_only_that_direction(tiny_cache):
    cache = tiny_cache
    emb = ablate_embeddings(cache, AblationMask(pcs=frozenset({(1, 3, 0)}), mode="mean"))
    change = cache.output - emb  # [n, d_embed]
    phi = cache.head_components[cache.head_index(1, 3), 0]
    assert np.allclose(change, np.outer(change @ phi, phi), atol=1e-6)
    assert np.allclose(change @ phi, cache.scores(1, 3)[0] - cache.score_mean[cache.head_index(1, 3), 0], atol=1e-5)


def test_lambda_one_is_identity_and_lambda_zero_is_mean_ablation(tiny_cache):
    one = evaluate(tiny_cache, AblationMask(scales=((0, 0, 0, 1.0),)))
    assert np.array_equal(one.logits, tiny_cache.base_logits)
    zero = evaluate(tiny_cache, AblationMask().with_scale(0, 0, 0, 0.0))
    off = evaluate(tiny_cache, AblationMask(pcs=frozenset({(0, 0, 0)})))
    assert np.allclose(zero.logits, off.logits, atol=1e-5)


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_incremental_toggles_match_full_evaluation(tiny_cache, mode):
    state = LogitState(tiny_cache, AblationMask(mode=mode))
    for op in [("pc", 0, 1, 0), ("pc", 1, 2, 4), ("head", 1, 2), ("pc", 1, 2, 5), ("head", 0, 3), ("pc", 0, 1, 0),
               ("head", 1, 2)]:
        if op[0] == "pc":
            state.toggle_pc(*op[1:])
        else:
            state.toggle_head(*op[1:])
        full = evaluate(tiny_cache, state.mask)
        assert np.allclose(state.logits, full.logits, atol=1e-4)
    assert state.mask.heads == frozenset({(0, 3)})
    assert state.mask.pcs == frozenset({(1, 2, 4), (1, 2, 5)})
    assert state.result().accuracy == pytest.approx(evaluate(tiny_cache, state.mask).accuracy)


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_predictions_are_the_arg_max_of_every_block_after_each_toggle(tiny_cache, mode, monkeypatch):
    monkeypatch.setattr(live, "BLOCK_BYTES", 4 * len(tiny_cache.classnames) * 7)  # 7 images a block, 300 images
    state = LogitState(tiny_cache, AblationMask(mode=mode))
    state.set_mask(AblationMask(mode=mode).with_scale(0, 1, 2, 3.0))
    changed = 0
    for op in [("head", 1, 2), ("pc", 0, 1, 2), ("pc", 0, 1, 0), ("head", 0, 1), ("head", 1, 2), ("pc", 1, 0, 1)]:
        before = state.result().predictions
        state.toggle_pc(*op[1:]) if op[0] == "pc" else state.toggle_head(*op[1:])
        after = state.result().predictions
        assert np.array_equal(after, state.logits.argmax(1))  # the last, partial block included
        assert np.allclose(state.logits, evaluate(tiny_cache, state.mask).logits, atol=1e-4)
        changed += int((after != before).sum())
    assert changed > 0  # the toggles moved predictions, so a stale block would have been caught


def test_per_class_accuracy_and_mask_round_trip(tiny_cache):
    mask = AblationMask(heads=frozenset({(1, 1)}), pcs=frozenset({(0, 2, 3)}), scales=((1, 0, 2, 0.5),),
                        mlps=frozenset({1}), embed=True, mode="zero")
    assert AblationMask.from_dict(mask.to_dict()) == mask
    result = evaluate(tiny_cache, mask)
    counts = np.bincount(tiny_cache.labels, minlength=len(tiny_cache.classnames))
    assert np.isclose(np.nansum(result.per_class_accuracy * counts) / counts.sum(), result.accuracy)
    with pytest.raises(ValueError, match="mode"):
        AblationMask(mode="half")


def test_set_mask_reaches_the_same_logits_as_a_fresh_evaluation(tiny_cache):
    state = LogitState(tiny_cache)
    masks = [AblationMask(pcs=frozenset({(0, 0, 1)})), AblationMask(pcs=frozenset({(0, 0, 1)}), heads=frozenset({(1, 1)})),
             AblationMask(heads=frozenset({(1, 1), (0, 2)}), pcs=frozenset({(0, 2, 0)})),
             AblationMask(heads=frozenset({(1, 1)}), mode="zero", mlps=frozenset({1})), AblationMask()]
    for mask in masks:
        state.set_mask(mask)
        assert state.mask == mask
        assert np.allclose(state.logits, evaluate(tiny_cache, mask).logits, atol=1e-4)
