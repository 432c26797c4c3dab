"""Hugging Face ``transformers`` CLIP (``CLIPModel``): checkpoints by hub id or local folder.

Spec strings:
  ``hf:openai/clip-vit-base-patch32``   a hub checkpoint (needs a network once; cached afterwards)
  ``hf:/path/to/folder``                a folder written by ``save_pretrained`` (config.json + weights)
  ``hf-random:NAME``                    a shipped config (assets/hf_configs/NAME.json), seeded random weights;
                                        its tokenizer is open_clip's BPE vocabulary, the one CLIP was trained with

The tower is ``vision_model``: pre_layrnorm → encoder layers (layer_norm1 → self_attn, layer_norm2 → mlp) →
post_layernorm at CLS → visual_projection, the same pre-norm CLS-pooled ViT as open_clip's, with separate
q/k/v projections and no layer scale.
"""

import functools
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from residual_core.engine.families.base import Block, Family, ModelLoadError, Tower, UnsupportedModelError
from residual_core.engine.families.files import ASSETS, file_sha256, load_failure, quiet_checkpoint_reads

CONFIG_DIR = ASSETS / "hf_configs"
_WEIGHT_FILES = ("config.json", "preprocessor_config.json", "model.safetensors", "model.safetensors.index.json",
                 "pytorch_model.bin")


@dataclass(frozen=True)
class HfSpec:
    arch: str  # "hf-random:NAME" for a shipped config, else "hf-clip" (the checkpoint says the rest)
    pretrained: str | None  # hub id or folder; None for random weights
    random_seed: int = 0
    family: str = "hf_clip"

    @property
    def name(self) -> str:
        return f"hf:{self.pretrained}" if self.pretrained else f"{self.arch}:random{self.random_seed}"

    @property
    def is_local_file(self) -> bool:
        return self.pretrained is not None and _looks_local(self.pretrained)


def _looks_local(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or Path(text).expanduser().is_dir()


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


class HfClip(Family):
    name = "hf_clip"
    prefixes = ("hf:", "hf-random:")

    def owns(self, model: nn.Module) -> bool:
        from transformers import CLIPModel

        return isinstance(model, CLIPModel)

    def version(self) -> str:
        import transformers

        return transformers.__version__

    def parse(self, text: str, random_weights: bool, seed: int) -> HfSpec:
        if text.startswith("hf-random:"):
            name = text.split(":", 1)[1]
            if name not in shipped_configs():
                raise ValueError(f"no shipped Hugging Face CLIP config {name!r}; choose one of "
                                 f"{', '.join(shipped_configs())} or pass hf:/path/to/folder")
            return HfSpec(f"hf-random:{name}", None, seed)
        target = text.split(":", 1)[1].strip()
        if not target:
            raise ValueError("hf: needs a hub id or a folder, e.g. 'hf:openai/clip-vit-base-patch32' or 'hf:/path'")
        if random_weights:
            raise ValueError("--random-weights with hf: needs a shipped config: use 'hf-random:NAME' "
                             f"({', '.join(shipped_configs())})")
        return HfSpec("hf-clip", target, seed)

    def weights_id(self, spec: HfSpec) -> str:
        if spec.pretrained is None:
            config = CONFIG_DIR / f"{spec.arch.split(':', 1)[1]}.json"
            return f"random:{spec.random_seed}:{file_sha256(config)[:16]}"
        if not spec.is_local_file:
            return f"hub:{spec.pretrained}"
        folder = _folder(spec)
        digest = hashlib.sha256()
        for name in _WEIGHT_FILES:
            if (folder / name).is_file():
                digest.update(f"{name}:{file_sha256(folder / name)}\n".encode())
        for shard in sorted(folder.glob("model-*.safetensors")):
            digest.update(f"{shard.name}:{file_sha256(shard)}\n".encode())
        return digest.hexdigest()

    def load(self, spec: HfSpec, device: str, text: bool):
        from transformers import CLIPConfig, CLIPModel

        if spec.pretrained is None:
            config = CLIPConfig.from_json_file(str(CONFIG_DIR / f"{spec.arch.split(':', 1)[1]}.json"))
            torch.manual_seed(spec.random_seed)
            model, source = CLIPModel(config), None
        else:
            source = str(_folder(spec)) if spec.is_local_file else spec.pretrained
            if not spec.is_local_file:
                _require_hub_files(spec)
            _check_model_type(source, spec)
            try:
                with quiet_checkpoint_reads():
                    model = CLIPModel.from_pretrained(source, local_files_only=spec.is_local_file)
            except Exception as err:  # noqa: BLE001 - a checkpoint folder is untrusted input: it can raise anything
                raise ModelLoadError(f"{spec.name} is not a loadable CLIPModel checkpoint ({load_failure(err)}); "
                                     "pass a folder written by save_pretrained") from err
        model = model.float().to(device).eval()
        preprocess = _Preprocess(source, model.config.vision_config.image_size)
        if not text:
            return model, preprocess, None
        tokenizer = _tokenizer(source, spec)
        context = model.config.text_config.max_position_embeddings

        def encode_texts(texts: list[str]) -> Tensor:  # [n_texts, d_embed], L2-normalised
            tokens = tokenizer(list(texts), padding="max_length", max_length=context, truncation=True,
                               return_tensors="pt").to(next(model.parameters()).device)
            out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
            out = out if isinstance(out, Tensor) else out.pooler_output
            return out / out.norm(dim=-1, keepdim=True)

        return model, preprocess, encode_texts

    def normalisation(self, preprocess) -> tuple[tuple[float, ...], tuple[float, ...]]:
        processor = preprocess.processor
        return tuple(map(float, processor.image_mean)), tuple(map(float, processor.image_std))

    def tower(self, model: nn.Module) -> Tower:
        if not self.owns(model):
            raise UnsupportedModelError(f"{type(model).__name__} is not a transformers CLIPModel")
        vision = model.vision_model
        cfg = model.config.vision_config
        blocks = []
        for index, layer in enumerate(vision.encoder.layers):
            attn = layer.self_attn
            if abs(attn.scale - attn.head_dim ** -0.5) > 1e-12:
                raise UnsupportedModelError(f"layer {index}: attention scale {attn.scale} is not 1/sqrt(d_head)")
            blocks.append(Block(layer.layer_norm1, layer.mlp, attn.q_proj.weight, attn.q_proj.bias,
                                attn.k_proj.weight, attn.v_proj.weight, attn.v_proj.bias, attn.out_proj.weight,
                                attn.out_proj.bias, None, attn.num_heads))

        def forward(images: Tensor) -> Tensor:
            out = model.get_image_features(pixel_values=images)
            return out if isinstance(out, Tensor) else out.pooler_output

        grid = cfg.image_size // cfg.patch_size
        return Tower(vision.pre_layrnorm, tuple(blocks), vision.post_layernorm, model.visual_projection.weight.T,
                     forward, vision, image_size=cfg.image_size, n_tokens=grid * grid + 1)


def _folder(spec: HfSpec) -> Path:
    folder = Path(spec.pretrained).expanduser()
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a Hugging Face checkpoint folder (no config.json); pass the folder "
                             "that save_pretrained wrote")
    return folder


def _check_model_type(source: str, spec: HfSpec) -> None:
    if not spec.is_local_file:
        return
    try:
        kind = json.loads((Path(source) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise ModelLoadError(f"{source}/config.json is not readable JSON ({type(err).__name__})") from err
    if kind != "clip":
        raise UnsupportedModelError(f"{source}: model_type {kind!r} is not 'clip'; only transformers CLIPModel "
                                    "checkpoints are decomposed by the hf family")


def _require_hub_files(spec: HfSpec) -> None:
    from huggingface_hub import try_to_load_from_cache

    from residual_core.engine.families.openclip import require_hub

    if not isinstance(try_to_load_from_cache(spec.pretrained, "config.json"), str):
        require_hub(spec, "download it elsewhere with save_pretrained and pass 'hf:/path/to/folder'")


class _Preprocess:
    """PIL image -> [3, H, W]: the checkpoint's own CLIPImageProcessor, or CLIP's defaults at the tower's size."""

    def __init__(self, source: str | None, image_size: int):
        from transformers import CLIPImageProcessor

        if source is not None and (not _looks_local(source) or (Path(source) / "preprocessor_config.json").is_file()):
            self.processor = CLIPImageProcessor.from_pretrained(source, local_files_only=_looks_local(source))
        else:
            self.processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                                crop_size={"height": image_size, "width": image_size})

    def __call__(self, image) -> Tensor:
        return self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"CLIPImageProcessor({self.processor.to_json_string()})"


def _tokenizer(source: str | None, spec: HfSpec):
    from transformers import CLIPTokenizer

    if source is None:
        folder = bpe_vocabulary()
        return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    try:
        return CLIPTokenizer.from_pretrained(source, local_files_only=_looks_local(source))
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(f"{spec.name}: no tokenizer files (vocab.json, merges.txt) beside the weights "
                             f"({type(err).__name__}); save the tokenizer into the folder too, "
                             "or load images only") from err


@functools.lru_cache(maxsize=1)
def bpe_vocabulary() -> Path:
    """open_clip's bundled BPE vocabulary as the vocab.json/merges.txt pair CLIPTokenizer reads (written once)."""
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    folder = Path(tempfile.mkdtemp(prefix="residual-bpe-"))
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # the special tokens' HF names
    vocab = {names.get(token, token): index for token, index in bpe.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")
    return folder


def save_random_checkpoint(name: str, folder: str | Path, seed: int = 0) -> Path:
    """Write a shipped config with seeded random weights as a save_pretrained folder (tests, offline trials)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig.from_json_file(str(CONFIG_DIR / f"{name}.json")))
    model.save_pretrained(folder, safe_serialization=True)
    vocab = bpe_vocabulary()
    CLIPTokenizer(str(vocab / "vocab.json"), str(vocab / "merges.txt")).save_pretrained(folder)
    _Preprocess(None, model.config.vision_config.image_size).processor.save_pretrained(folder)
    return folder
