"""``python -m residual_core bench --maps``: per-token maps' speed, and how well they point at the world's objects.

Speed: every head's per-token parts for one 224 px ViT-B-32 image (random weights) and for one demo image, and a new
map on an image whose parts are kept (arithmetic only). Ground truth: on demo test scenes, the share of scenes whose
top patch lies on an object (pointing game) and the share of each map's positive mass on the objects, for the shape
head's push toward the true class, against that head's raw CLS attention (the baseline). Best of ``repeats`` runs.
"""


import numpy as np
import torch
from PIL import Image

from residual_core.words_bench import best_of


def run_maps_bench(n_scenes: int = 200, repeats: int = 5) -> dict:
    from residual_core import world
    from residual_core.cache import load_cache
    from residual_core.models import load_clip, parse_model_spec
    from residual_core.pipeline import PrecomputeSpec, precompute
    from residual_core.tokens import (heads_map, token_parts)

    report: dict = {}
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    b32 = load_clip(parse_model_spec("ViT-B-32", True, 0), text=False)
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    report["parts_all_heads_ms_vit_b_32_224px"] = round(1e3 * best_of(lambda: token_parts(b32.model, image), repeats), 1)
    parts = token_parts(b32.model, image)
    direction = torch.randn(b32.arch.d_embed, generator=torch.Generator().manual_seed(1))
    report["new_map_ms_vit_b_32"] = round(1e3 * best_of(lambda: heads_map(parts, [(11, 3)], direction), repeats), 2)
    demo = load_clip("demo")
    cache = load_cache(precompute(PrecomputeSpec(model="demo", dataset="demo-world/shape", limit=1000)))
    one = torch.stack([demo.preprocess(Image.fromarray(world.render_one("test", int(cache.positions[0]))))])
    report["parts_ms_per_image_demo"] = round(1e3 * best_of(lambda: token_parts(demo.model, one), repeats), 1)
    report |= map_ground_truth(demo, cache, n_scenes)
    return report


def map_ground_truth(loaded, cache, n_scenes: int = 200) -> dict:
    """On the first ``n_scenes`` scenes of a demo-world cache: how often the top patch of the most important head's
    push toward the true class lies on an object (pointing game), and the share of its positive mass there, against
    that head's raw CLS attention."""
    from residual_core import world
    from residual_core.cache import most_important_head
    from residual_core.tokens import attention_map, heads_map, mask_to_patches, patch_map, pointing_and_mass, token_parts

    split = cache.manifest["spec"]["split"]
    rows = [int(p) for p in np.asarray(cache.positions)[:n_scenes]]
    pictures = torch.stack([loaded.preprocess(Image.fromarray(world.render_one(split, r))) for r in rows])
    head, parts, labels = most_important_head(cache), token_parts(loaded.model, pictures), np.asarray(cache.labels)
    hits, mass, cover = {"push": [], "attention": []}, {"push": [], "attention": []}, []
    for i, row in enumerate(rows):
        covered = mask_to_patches(world.scene_masks(split, row)[0], parts.grid)
        cover.append(covered.mean())
        column = torch.from_numpy(np.array(cache.classifier[:, labels[i]], np.float32))
        for name, patches in (("push", patch_map(heads_map(parts, [head], column)[0][i], parts.grid)),
                              ("attention", patch_map(attention_map(parts, [head])[i], parts.grid))):
            hit, share = pointing_and_mass(patches, covered)
            hits[name].append(hit)
            mass[name].append(share)
    return {"ground_truth_scenes": len(rows), "ground_truth_head": f"L{head[0]}H{head[1]}",
            "pointing_game_push_to_true_class": round(float(np.mean(hits["push"])), 3),
            "pointing_game_raw_attention": round(float(np.mean(hits["attention"])), 3),
            "mass_on_objects_push": round(float(np.mean(mass["push"])), 3),
            "mass_on_objects_raw_attention": round(float(np.mean(mass["attention"])), 3),
            "object_share_of_patches": round(float(np.mean(cover)), 3)}
