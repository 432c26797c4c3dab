import copy

import open_clip
import pytest
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from open_clip.transformer import Transformer

from residual_core.engine.decompose import (
    DecompositionError, UnitTable, UnsupportedModelError, check_supported, decompose_images,
)

TEXT = CLIPTextCfg(context_length=16, vocab_size=64, width=32, heads=2, layers=1)


def _clip(**vision) -> torch.nn.Module:
    torch.manual_seed(1)
    cfg = dict(layers=2, width=48, head_width=12, patch_size=8, image_size=32) | vision
    quick = cfg.pop("quick_gelu", False)
    return open_clip.CLIP(embed_dim=24, vision_cfg=CLIPVisionCfg(**cfg), text_cfg=TEXT, quick_gelu=quick).eval()


def test_units_sum_to_encode_image(tiny, tiny_images):
    decomp = decompose_images(tiny.model, tiny_images)
    expected = tiny.model.encode_image(tiny_images).detach()
    assert torch.allclose(decomp.total(), expected, atol=1e-5)
    assert decomp.errors()[1] < 1e-5
    arch = tiny.arch
    assert decomp.heads.shape == (6, arch.n_layers, arch.n_heads, arch.d_embed)
    assert decomp.stacked().shape == (6, arch.n_units, arch.d_embed)


def test_unit_table_order():
    table = UnitTable(2, 3)
    assert table.labels == ["emb", "L0MLP", "L1MLP", "L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2"]
    assert table.head_index(1, 2) == 5


@pytest.mark.parametrize("vision", [{"ls_init_value": 0.3}, {"quick_gelu": True}, {"no_ln_pre": True},
                                    {"final_ln_after_pool": True}])
def test_exact_with_layerscale_quickgelu_and_variants(vision, tiny_images):
    model = _clip(**vision)
    if "ls_init_value" in vision:  # random LayerScale so that it is not a uniform factor
        for block in model.visual.transformer.resblocks:
            block.ls_1.gamma.data.uniform_(0.1, 2.0)
            block.ls_2.gamma.data.uniform_(0.1, 2.0)
    decomp = decompose_images(model, tiny_images)
    assert decomp.errors()[1] < 1e-5


def test_sequence_first_layout_is_exact(tiny_images):
    model = _clip()
    seq_first = copy.deepcopy(model)
    old = seq_first.visual.transformer
    seq_first.visual.transformer = Transformer(old.width, old.layers, old.resblocks[0].attn.num_heads,
                                               batch_first=False)
    seq_first.visual.transformer.load_state_dict(old.state_dict())
    seq_first.eval()
    a = decompose_images(model, tiny_images)
    b = decompose_images(seq_first, tiny_images)
    assert not seq_first.visual.transformer.batch_first
    assert b.errors()[1] < 1e-5
    assert torch.allclose(a.heads, b.heads, atol=1e-5)


def test_real_vit_b32_random_weights_exact():
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32").eval()
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    decomp = decompose_images(model, images)
    assert decomp.heads.shape == (2, 12, 12, 512)
    assert decomp.stacked().shape[1] == 157
    assert decomp.errors()[1] <= 1e-5


@pytest.mark.parametrize("vision,match", [({"pool_type": "avg"}, "pool_type"),
                                          ({"attentional_pool": True}, "attentional")])
def test_unsupported_pooling_refused(vision, match, tiny_images):
    model = _clip(**vision)
    with pytest.raises(UnsupportedModelError, match=match):
        decompose_images(model, tiny_images)


def test_resnet_tower_refused():
    torch.manual_seed(0)
    model = open_clip.create_model("RN50").eval()
    with pytest.raises(UnsupportedModelError, match="VisionTransformer"):
        check_supported(model)


def test_custom_block_refused():
    model = _clip(block_type="custom")
    with pytest.raises(UnsupportedModelError, match="ResidualAttentionBlock"):
        check_supported(model)


def test_training_mode_refused(tiny_images):
    model = _clip().train()
    with pytest.raises(ValueError, match="eval"):
        decompose_images(model, tiny_images)


def test_check_catches_a_broken_decomposition(tiny, tiny_images):
    from residual_core.engine.decompose import HeadMaps

    maps = HeadMaps.from_model(tiny.model)
    broken = HeadMaps(maps.A * 1.5, maps.b, maps.gamma_proj, maps.g, maps.bp, maps.w_head, maps.w_other, maps.eps)
    with pytest.raises(DecompositionError, match="differs from the image embedding"):
        decompose_images(tiny.model, tiny_images, maps=broken)


def test_hooks_are_removed(tiny, tiny_images):
    decompose_images(tiny.model, tiny_images)
    modules = list(tiny.model.visual.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in modules)


def test_concurrent_traces_of_one_model_stay_exact(tiny):
    # A Streamlit server decomposes in several threads with one shared model.
    from concurrent.futures import ThreadPoolExecutor

    batches = [torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n)) for n in (3, 5, 7, 4, 6, 2)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda x: decompose_images(tiny.model, x, check=False), batches * 3))
    assert all(r.errors()[1] < 1e-5 for r in results)
