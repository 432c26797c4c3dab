"""``python -m residual_core bench --maps``: per-token maps' speed, and how well they point at the world's objects.

Speed: every head's per-token parts for one 224 px ViT-B-32 image (random weights) and for one demo image, and a new
map on an image whose parts are kept (arithmetic only). Ground truth: on demo test scenes, the share of scenes whose
top patch lies on an object (pointing game) and the share of each map's positive mass on the objects, for the shape
head's push toward the true class, against that head's raw CLS attention (the baseline). Best of ``repeats`` runs.
"""


import torch
from PIL import Image

from residual_core.bench.timing import best_of
from residual_core.explain.heatmaps import map_ground_truth


def run_maps_bench(n_scenes: int = 200, repeats: int = 5) -> dict:
    from residual_core.data import world
    from residual_core.read.cache import load_cache
    from residual_core.engine.models import load_clip, parse_model_spec
    from residual_core.build.pipeline import PrecomputeSpec, precompute
    from residual_core.engine.tokens import (heads_map, token_parts)

    report: dict = {}
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    b32 = load_clip(parse_model_spec("ViT-B-32", True, 0), text=False)
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    report["parts_all_heads_ms_vit_b_32_224px"] = round(1e3 * best_of(lambda: token_parts(b32.model, image), repeats), 1)
    parts = token_parts(b32.model, image)
    direction = torch.randn(b32.arch.d_embed, generator=torch.Generator().manual_seed(1))
    report["new_map_ms_vit_b_32"] = round(1e3 * best_of(lambda: heads_map(parts, [(11, 3)], direction), repeats), 2)
    demo = load_clip("demo")
    cache = load_cache(precompute(PrecomputeSpec(model="demo", dataset="demo-world/shape", limit=2000)))
    one = torch.stack([demo.preprocess(Image.fromarray(world.render_one("test", int(cache.positions[0]))))])
    report["parts_ms_per_image_demo"] = round(1e3 * best_of(lambda: token_parts(demo.model, one), repeats), 1)
    report |= map_ground_truth(demo, cache, n_scenes)
    return report
