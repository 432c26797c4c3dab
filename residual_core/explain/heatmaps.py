"""Heatmaps scored against the demo world's object masks: does a head's map point at the objects?"""

import numpy as np
import torch
from PIL import Image


def map_ground_truth(loaded, cache, n_scenes: int = 200) -> dict:
    """On the first ``n_scenes`` scenes of a demo-world cache: how often the top patch of the most important head's
    push toward the true class lies on an object (pointing game), and the share of its positive mass there, against
    that head's raw CLS attention."""
    from residual_core.data import world
    from residual_core.read.cache import most_important_head
    from residual_core.engine.tokens import attention_map, heads_map, mask_to_patches, patch_map, pointing_and_mass, token_parts

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
