"""Heatmaps scored against the demo world's object masks: does a head's map point at the objects?"""

import numpy as np
import torch
from PIL import Image


def map_ground_truth(loaded, cache, n_scenes: int = 200) -> dict:
    """On the first ``n_scenes`` scenes of a demo-world cache: how often a map's top patch lies on an object
    (pointing game), and the share of its positive mass there. The maps: the most important head's push toward the
    true class (the default), the same against the mean of the classes (TextSpan's demo draws maps so), both summed
    over the three most important heads, and the raw CLS attention of one and of three heads (the baselines)."""
    from residual_core.data import world
    from residual_core.engine.tokens import attention_map, heads_map, mask_to_patches, patch_map, pointing_and_mass, token_parts

    split = world.world_split(cache.manifest["spec"]["split"], cache.manifest["spec"]["dataset"])
    rows = [int(p) for p in np.asarray(cache.positions)[:n_scenes]]
    pictures = torch.stack([loaded.preprocess(Image.fromarray(world.render_one(split, r))) for r in rows])
    parts, labels = token_parts(loaded.model, pictures), np.asarray(cache.labels)
    drop = cache.baseline_accuracy() - np.asarray(cache.head_ablated_acc)  # [n_heads_total]
    top = [cache.units.head_at(int(u)) for u in np.argsort(-drop, kind="stable")[:3]]  # top[0]: most_important_head
    classifier = np.asarray(cache.classifier, np.float32)  # [d_embed, n_classes]
    scores: dict[str, list] = {}
    cover = []
    for i, row in enumerate(rows):
        covered = mask_to_patches(world.scene_masks(split, row)[0], parts.grid)
        cover.append(covered.mean())
        column = torch.from_numpy(classifier[:, labels[i]].copy())  # [d_embed]
        contrast = torch.from_numpy((classifier[:, labels[i]] - classifier.mean(1)).copy())
        maps = {"push": heads_map(parts, top[:1], column)[0][i], "contrast": heads_map(parts, top[:1], contrast)[0][i],
                "push_3_heads": heads_map(parts, top, column)[0][i],
                "contrast_3_heads": heads_map(parts, top, contrast)[0][i],
                "attention": attention_map(parts, top[:1])[i], "attention_3_heads": attention_map(parts, top)[i]}
        for name, per_token in maps.items():
            scores.setdefault(name, []).append(pointing_and_mass(patch_map(per_token, parts.grid), covered))
    out = {"ground_truth_scenes": len(rows), "ground_truth_head": f"L{top[0][0]}H{top[0][1]}",
           "ground_truth_heads_3": [f"L{l}H{h}" for l, h in top], "object_share_of_patches": round(float(np.mean(cover)), 3)}
    for name, pairs in scores.items():
        out[f"pointing_game_{name}"] = round(float(np.mean([hit for hit, _ in pairs])), 3)
        out[f"mass_on_objects_{name}"] = round(float(np.mean([share for _, share in pairs])), 3)
    # the names the scorecard, the bench and the docs have always read
    out["pointing_game_push_to_true_class"] = out["pointing_game_push"]
    out["pointing_game_raw_attention"] = out["pointing_game_attention"]
    out["mass_on_objects_raw_attention"] = out["mass_on_objects_attention"]
    return out
