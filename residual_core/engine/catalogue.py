"""The registered short model names, and whether each works offline now, read without torch or open_clip.

``python -m residual_core models`` lists them in well under a second: importing torch and open_clip (the model
families) takes 3-5 s here, and nothing in a listing needs them. Which open_clip tags exist and which hub repository
holds each comes in as a table (``build/registry.py`` keeps a snapshot of open_clip's own, keyed by its version).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parents[2] / "assets"  # the same folder as families/files.ASSETS (a test holds it)


@dataclass(frozen=True)
class ShortName:
    spec: str  # a spec string any family parses
    about: str


SHORT_NAMES: dict[str, ShortName] = {
    "demo": ShortName(f"residual-demo:{ASSETS / 'demo/residual-demo.safetensors'}",
                      "the project's small CLIP trained on the attribute world (offline default)"),
    "demo-shortcut": ShortName(f"residual-demo:{ASSETS / 'shortcut/residual-shortcut.safetensors'}",
                               "the demo model fine-tuned where colour follows shape (a known shortcut, offline)"),
    "tiny-random": ShortName("residual-tiny", "2-layer random-weight ViT (tests, smoke runs)"),
    "hf-tiny-random": ShortName("hf-random:tiny", "3-layer random-weight transformers CLIPModel (tests)"),
    "b32": ShortName("ViT-B-32:laion2b_s34b_b79k", "OpenCLIP ViT-B/32, LAION-2B (needs a network once)"),
    "b32-openai": ShortName("ViT-B-32-quickgelu:openai", "OpenAI CLIP ViT-B/32 (needs a network once)"),
    "b32-hf": ShortName("hf:openai/clip-vit-base-patch32", "OpenAI CLIP ViT-B/32 in transformers (network once)"),
    "b16": ShortName("ViT-B-16:laion2b_s34b_b88k", "OpenCLIP-B of the paper (needs a network once)"),
    "b16-openai": ShortName("ViT-B-16:openai", "CLIP-B of the paper (needs a network once)"),
    "l14": ShortName("ViT-L-14:laion2b_s32b_b82k", "OpenCLIP-L of the paper (needs a network once)"),
    "l14-openai": ShortName("ViT-L-14:openai", "CLIP-L of the paper (needs a network once)"),
}


def source_of(spec: str) -> tuple[str, str, str]:
    """(source, arch, weights) of a spec string, by the families' own rules (a test holds them to parse_model_spec):
    source is 'random' (seeded weights, nothing to fetch), 'file' (a checkpoint or folder on disk), 'tag' (an
    open_clip pretrained tag) or 'hub' (a hub repository)."""
    if spec.startswith("hf-random:"):
        return "random", spec, ""
    if spec.startswith("hf:"):
        where = spec[len("hf:"):]
        return ("file" if where.startswith((".", "/", "~")) else "hub"), spec, where
    if spec.startswith("hf-hub:"):
        return "hub", spec, ""
    if ":" not in spec:
        return "random", spec, ""
    arch, weights = spec.split(":", 1)
    local = "/" in weights or Path(weights).suffix != ""  # as OpenClipSpec.is_local_file
    return ("file" if local else "tag"), arch, weights


def list_models(open_clip_tags: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Registered short names and whether each works offline right now; ``open_clip_tags``: {arch: {tag: hub
    repository}} as open_clip registers them (build/registry.open_clip_tags)."""
    rows = []
    for name, short in SHORT_NAMES.items():
        source, arch, weights = source_of(short.spec)
        if source == "random":
            offline = True
        elif source == "file":
            offline = Path(weights).expanduser().exists()
        elif source == "tag" and weights in open_clip_tags.get(arch, {}):
            offline = hub_repo_cached(open_clip_tags[arch][weights])
        else:
            offline, source = False, "hub"
        shown = short.spec if source != "random" else f"{short.spec} (random weights)"
        rows.append({"name": name, "spec": shown, "offline": offline, "source": "hub" if source == "tag" else source,
                     "about": short.about})
    return rows


def hub_repo_cached(repo: str) -> bool:
    """Whether open_clip's weights file of a hub repository is in the local Hugging Face cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    repo = repo.rstrip("/")
    return bool(repo) and any(isinstance(try_to_load_from_cache(repo, name), str)
                              for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
