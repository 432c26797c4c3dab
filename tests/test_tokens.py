"""Where a head looks: per-token terms add up to the head's contribution exactly, and maps read them."""

import numpy as np
import pytest
import torch

from residual_core.engine.tokens import (mask_to_patches, patch_map, pointing_and_mass, rest_in_words, token_parts,
                                         where_in_words)


@pytest.mark.parametrize("name", ["tiny-random", "hf-tiny-random", "demo"])
def test_the_tokens_terms_add_up_to_each_heads_contribution(name):
    from residual_core.engine.decompose import decompose_images
    from residual_core.engine.models import load_clip

    loaded = load_clip(name)
    size = loaded.arch.image_size
    images = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    heads = decompose_images(loaded.model, images).heads.double()  # [n, L, H, d_embed]
    parts = token_parts(loaded.model, images)
    rebuilt = parts.contributions().double()
    assert ((rebuilt - heads).norm() / heads.norm()).item() <= 1e-5
    one = parts.terms(1, 2).sum(1) + parts.constant[:, 1, 2]  # a single head, through its own terms
    assert torch.allclose(one.double(), heads[:, 1, 2], rtol=1e-4, atol=1e-6)
    direction = torch.randn(loaded.arch.d_embed, generator=torch.Generator().manual_seed(1))
    along = parts.along(direction) + 0  # [n, L, H, T]
    assert torch.allclose(along[:, 1, 2], parts.terms(1, 2) @ direction, rtol=1e-4, atol=1e-6)


def test_a_pc_map_adds_up_to_the_cached_coefficient(tmp_path):
    from residual_core.read.cache import load_cache
    from residual_core.data.datasets import load_dataset
    from residual_core.engine.models import load_clip
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    cache = load_cache(precompute(PrecomputeSpec(model="demo", dataset="demo-world/shape", limit=60,
                                                 cache_dir=str(tmp_path), dtype="float32")))
    loaded = load_clip("demo")
    source = load_dataset("demo-world/shape", "test")
    rows = [0, 7, 31]
    images = torch.stack([loaded.preprocess(source.image(int(cache.positions[r]))) for r in rows])
    parts = token_parts(loaded.model, images)
    layer, head, pc = 3, 6, 0
    unit = cache.head_index(layer, head)
    phi = torch.from_numpy(np.asarray(cache.head_components[unit, pc], np.float32))
    tokens = parts.along(phi)[:, layer, head]  # [n, T]
    constant = parts.constant_along(phi)[:, layer, head] - float(np.asarray(cache.head_mean[unit]) @ phi.numpy())
    coefficient = (tokens.sum(1) + constant).double().numpy()
    assert np.allclose(coefficient, np.asarray(cache.head_scores[unit, pc])[rows], rtol=1e-4, atol=1e-5)
    assert patch_map(tokens, parts.grid).shape == (len(rows), parts.grid, parts.grid)


def test_where_a_map_concentrates_in_words_and_against_a_mask():
    patches = np.zeros((6, 6))
    patches[0, 0], patches[0, 1], patches[5, 5] = 5.0, 3.0, 1.0
    where = where_in_words(patches)
    assert (where.sign, where.region, where.share) == (1, "top left", pytest.approx(8 / 9))
    assert where_in_words(np.zeros((6, 6))).region == "nowhere in particular"
    away = np.full((6, 6), 0.01)  # a small push toward everywhere, a large one away at the bottom: say the away part
    away[5, 2:4] = -0.4
    where = where_in_words(away)
    assert (where.sign, where.region) == (-1, "bottom") and where.share == pytest.approx(1.0)
    assert where.positive == pytest.approx(0.34) and where.negative == pytest.approx(-0.8)
    words = rest_in_words(away, -0.2)  # the patches sum to -0.46
    assert "-0.2" in words and "15%" in words and "outweighs" not in words and "outweighs" in rest_in_words(away, 0.7)
    covered = np.zeros((6, 6))
    covered[:2, :2] = 1.0
    assert pointing_and_mass(patches, covered) == (True, pytest.approx(8 / 9))
    assert pointing_and_mass(patches, 1 - covered) == (False, pytest.approx(1 / 9))
    pixels = np.zeros((48, 48))
    pixels[:8, :8] = 1.0
    assert mask_to_patches(pixels, 6)[0, 0] == 1.0 and mask_to_patches(pixels, 6).sum() == 1.0
    scene = np.zeros((48, 48))
    scene[:24, :24] = 1.0  # a quarter of a 48 px scene under a 7 × 7 grid (ViT-B/32): 48 / 7 px a patch
    coverage = mask_to_patches(scene, 7)
    assert coverage.shape == (7, 7) and coverage.mean() == pytest.approx(0.25)
    assert coverage[0, 0] == 1.0 and coverage[3, 3] == pytest.approx((3.5 - 3) ** 2) and coverage[6, 6] == 0.0


def test_the_worlds_masks_cover_what_the_renderer_drew():
    from residual_core.data import world

    for index in range(20):
        image = world.render_one("test", index).astype(np.float64)
        objects, digit = world.scene_masks("test", index)
        scene = world.scenes_of("test")[index]
        colour = np.array(world.RGB[scene.value("colour")], np.float64)
        on_object = np.abs(image - colour).max(-1) < 40  # the object's pixels, colour jitter included
        assert objects[on_object].mean() > 0.8, index  # where the colour is, the mask says object
        assert objects.sum() > 4 and digit.sum() > 4 and (objects * digit).max() <= 0.5


def test_a_probes_pc_map_and_its_rest_are_the_images_pc_coefficient(tiny, tiny_cache):
    from PIL import Image

    from residual_core.read.probe import probe_images

    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)) for _ in range(2)]
    result = probe_images(tiny, tiny_cache, images)
    unit = tiny_cache.head_index(1, 3)
    for pc in (0, 4):
        patches, rest = result.where(1, tiny_cache, [(1, 3)], "pc", pc)
        assert patches.sum() + rest == pytest.approx(float(result.scores[1, unit, pc]), rel=1e-4, abs=1e-5)
    push, rest = result.where(0, tiny_cache, [(0, 1), (1, 3)], "class", 2)
    alone = [result.where(0, tiny_cache, [h], "class", 2) for h in [(0, 1), (1, 3)]]
    assert np.allclose(push, alone[0][0] + alone[1][0])  # heads add up
    attention, cls_share = result.where(0, tiny_cache, [(1, 3)], "attention", 0)
    assert attention.sum() + cls_share == pytest.approx(1.0)  # a softmax row
    with pytest.raises(ValueError, match="one head"):
        result.where(0, tiny_cache, [(0, 1), (1, 3)], "pc", 0)
