"""open_clip: every model through open_clip's own factory; the tower is its ``VisionTransformer``.

Spec strings (``models.parse_model_spec`` hands this family everything no other family claims):
  ``ARCH:PRETRAINED``   any open_clip tag, e.g. ``ViT-B-32:laion2b_s34b_b79k``
  ``ARCH:/path/ckpt``   a local checkpoint (.safetensors, .bin, .pt), loaded weights-only
  ``hf-hub:org/repo``   an open_clip model on the Hugging Face hub
  ``ARCH``              the architecture with seeded random weights
"""

import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.transformer import LayerScale, ResidualAttentionBlock, VisionTransformer
from torch import nn

from residual_core.engine.families.base import Block, Family, ModelLoadError, Tower, UnsupportedModelError
from residual_core.engine.families.files import ASSETS, file_sha256, first_line, load_failure, quiet_checkpoint_reads

CONFIG_DIR = ASSETS / "model_configs"


@dataclass(frozen=True)
class OpenClipSpec:
    arch: str
    pretrained: str | None  # open_clip tag, checkpoint path, or None (random weights)
    random_seed: int = 0
    family: str = "open_clip"

    @property
    def name(self) -> str:
        return f"{self.arch}:{self.pretrained}" if self.pretrained else f"{self.arch}:random{self.random_seed}"

    @property
    def is_local_file(self) -> bool:
        return self.pretrained is not None and (os.sep in self.pretrained or Path(self.pretrained).suffix != "")


def ensure_configs_registered() -> None:
    # open_clip's own config mechanism: our small architectures live as JSON next to the weights.
    if "residual-tiny" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def is_tag(arch: str, pretrained: str) -> bool:
    return pretrained in open_clip.list_pretrained_tags_by_model(arch)


def hub_cached(arch: str, tag: str) -> bool:
    from residual_core.engine.catalogue import hub_repo_cached

    return hub_repo_cached(open_clip.get_pretrained_cfg(arch, tag).get("hf_hub") or "")


def offline_message(spec, err: Exception, how: str) -> str:
    return (f"could not fetch pretrained weights {spec.pretrained!r} for {spec.arch!r} ({type(err).__name__}: "
            f"{first_line(err)}). This machine looks offline or the hub is unreachable. Either connect once so the "
            f"weights are cached (they are reused offline afterwards), or {how}, or use the offline demo model ('demo').")


def require_hub(spec, how: str, timeout: float = 3.0) -> None:
    """Fail in seconds, not minutes of retries, when the weights are not cached and the hub is unreachable."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(offline_message(spec, RuntimeError("HF_HUB_OFFLINE is set"), how))
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", constants.ENDPOINT))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise ModelLoadError(offline_message(spec, err, how)) from err


def check_config_supported(arch: str, config: dict | None) -> None:
    """Refuse from open_clip's model config, before building, a tower the decomposition cannot represent."""
    vision = (config or {}).get("vision_cfg") or {}
    if vision.get("timm_model_name"):
        raise UnsupportedModelError(f"{arch}: the image tower is the timm model {vision['timm_model_name']!r}, not "
                                    "open_clip's VisionTransformer; only open_clip ViT towers can be decomposed")
    if isinstance(vision.get("layers"), (list, tuple)):
        raise UnsupportedModelError(f"{arch}: the image tower is a ResNet; only ViT towers have attention heads "
                                    "to decompose (try ViT-B-32, ViT-B-16 or ViT-L-14)")
    if vision.get("attentional_pool"):
        raise UnsupportedModelError(f"{arch}: attentional pooling (CoCa-style) mixes all tokens after the last "
                                    "block, so a CLS decomposition would not be exact; refused")
    if vision.get("pool_type", "tok") != "tok":
        raise UnsupportedModelError(f"{arch}: pool_type={vision['pool_type']!r} pools every token; only CLS-token "
                                    "pooling ('tok') decomposes exactly into per-head CLS contributions")


class OpenClip(Family):
    name = "open_clip"
    prefixes = ("",)

    def owns(self, model: nn.Module) -> bool:
        return isinstance(getattr(model, "visual", None), nn.Module) and hasattr(model, "encode_image")

    def version(self) -> str:
        return open_clip.__version__

    def parse(self, text: str, random_weights: bool, seed: int) -> OpenClipSpec:
        if text.startswith("hf-hub:"):
            arch, pretrained = text, None
        elif ":" in text:
            arch, pretrained = text.split(":", 1)
        else:
            arch, pretrained = text, None  # a bare architecture name has no weights to load
        ensure_configs_registered()
        if not arch.startswith("hf-hub:") and arch not in open_clip.list_models():
            if "/" in arch or arch.endswith((".pt", ".pth", ".bin", ".safetensors")):  # a path given without its ARCH
                raise ValueError(f"{text!r} looks like a checkpoint path without its architecture: write it as "
                                 "'ARCH:/path/to/checkpoint' (e.g. 'ViT-B-32:/path/my_clip.pt') for open_clip, or "
                                 "'hf:/path/to/folder' for a transformers save_pretrained folder")
            raise ValueError(f"unknown architecture {arch!r}: run `python -m residual_core models` for the list")
        if not arch.startswith("hf-hub:"):
            check_config_supported(arch, open_clip.get_model_config(arch))  # refuse before anything is built
        return OpenClipSpec(arch, None if random_weights else pretrained, seed)

    def weights_id(self, spec: OpenClipSpec) -> str:
        if spec.pretrained is None:
            return f"random:{spec.random_seed}"
        if spec.is_local_file:
            path = Path(spec.pretrained).expanduser()
            if path.is_dir():
                raise ModelLoadError(f"{path} is a folder, not a checkpoint file: pass the file inside it as "
                                     f"'{spec.arch}:{path}/FILE', or 'hf:{path}' if transformers' save_pretrained "
                                     "wrote it")
            if not path.is_file():
                raise ModelLoadError(f"checkpoint file not found: {path}. Pass an existing file as 'ARCH:/path/to/ckpt'.")
            return file_sha256(path)
        return f"tag:{spec.pretrained}"

    def load(self, spec: OpenClipSpec, device: str, text: bool):
        ensure_configs_registered()
        weights_id = self.weights_id(spec)
        pretrained = spec.pretrained
        how = f"download the checkpoint elsewhere and pass it as '{spec.arch}:/path/to/open_clip_model.safetensors'"
        if pretrained is not None and spec.is_local_file:
            path = Path(pretrained).expanduser()
            expected = _expected_sha(path)
            if expected is not None and expected != weights_id:
                raise ModelLoadError(
                    f"checkpoint {path} is corrupted: sha256 {weights_id[:12]}… does not match the recorded "
                    f"{expected[:12]}…. Restore it with `git checkout -- {path.name}` or retrain it.")
            pretrained = str(path)
        elif pretrained is not None and is_tag(spec.arch, pretrained) and not hub_cached(spec.arch, pretrained):
            require_hub(spec, how)
        check_config_supported(spec.arch, open_clip.get_model_config(spec.arch))
        torch.manual_seed(spec.random_seed)
        try:
            with quiet_checkpoint_reads():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    spec.arch, pretrained=pretrained, device=device, precision="fp32", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a local checkpoint is untrusted input: it can raise anything
            raise self._load_error(spec, pretrained, err, how) from err
        model.eval()
        if not text:
            return model, preprocess, None
        try:
            tokenizer = open_clip.get_tokenizer(spec.arch)
        except (OSError, RuntimeError, ValueError, ImportError) as err:
            raise ModelLoadError(f"{spec.arch}: its tokenizer could not be loaded ({type(err).__name__}: "
                                 f"{first_line(err)}); it comes from the Hugging Face hub: connect once so it is "
                                 "cached, or use another model") from err

        def encode_texts(texts: list[str]) -> torch.Tensor:  # [n_texts, d_embed], L2-normalised
            device_of = next(model.parameters()).device
            return model.encode_text(tokenizer(texts).to(device_of), normalize=True)

        return model, preprocess, encode_texts

    @staticmethod
    def _load_error(spec: OpenClipSpec, pretrained: str | None, err: Exception, how: str) -> Exception:
        if not spec.is_local_file and not isinstance(err, (OSError, RuntimeError, ValueError, ImportError)):
            return err
        if pretrained is not None and not spec.is_local_file:
            return ModelLoadError(offline_message(spec, err, how))
        if spec.is_local_file:
            return ModelLoadError(f"checkpoint {pretrained} is not an open_clip {spec.arch} state dict "
                                  f"({load_failure(err)}); pass the matching ARCH or another file")
        hf_text = ((open_clip.get_model_config(spec.arch) or {}).get("text_cfg") or {}).get("hf_model_name")
        if hf_text:
            return ModelLoadError(f"{spec.arch}: its text tower is the Hugging Face model {hf_text!r}, whose config "
                                  "comes from the hub and needs the transformers package; install it and connect "
                                  f"once so the config is cached ({type(err).__name__}: {first_line(err)})")
        return ModelLoadError(f"could not build {spec.name}: {type(err).__name__}: {first_line(err)}")

    def normalisation(self, preprocess) -> tuple[tuple[float, ...], tuple[float, ...]]:
        from torchvision.transforms import Normalize

        found = [t for t in getattr(preprocess, "transforms", []) if isinstance(t, Normalize)]
        if not found:
            return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return tuple(map(float, found[-1].mean)), tuple(map(float, found[-1].std))

    def tower(self, model: nn.Module) -> Tower:
        visual = getattr(model, "visual", None)
        _check_visual(visual)
        blocks = []
        for block in visual.transformer.resblocks:
            attn = block.attn
            w_q, w_k, w_v = attn.in_proj_weight.chunk(3)  # each [d_model, d_model]
            b_q, _, b_v = attn.in_proj_bias.chunk(3)
            ls1 = block.ls_1.gamma if isinstance(block.ls_1, LayerScale) else None
            blocks.append(Block(block.ln_1, block.ls_2, w_q, b_q, w_k, w_v, b_v, attn.out_proj.weight,
                                attn.out_proj.bias, ls1, attn.num_heads))
        grid = visual.grid_size

        def forward(images: torch.Tensor) -> torch.Tensor:
            out = visual(images)
            return out[0] if isinstance(out, tuple) else out

        return Tower(visual.ln_pre, tuple(blocks), visual.ln_post, visual.proj, forward, visual,
                     image_size=visual.image_size[0], n_tokens=grid[0] * grid[1] + 1,
                     token_first=not getattr(visual.transformer, "batch_first", True))


def _check_visual(visual) -> None:
    """Raise UnsupportedModelError naming the first feature the exact decomposition cannot represent."""
    if not isinstance(visual, VisionTransformer):
        raise UnsupportedModelError(f"image tower is {type(visual).__name__}, not open_clip's VisionTransformer: "
                                    "only ViT towers (e.g. ViT-B-32, ViT-B-16, ViT-L-14) can be decomposed into heads")
    if visual.attn_pool is not None:
        raise UnsupportedModelError("attentional pooling (CoCa-style) mixes all tokens after the last block; "
                                    "the CLS decomposition would not be exact, so the model is refused")
    if visual.pool_type != "tok":
        raise UnsupportedModelError(f"pool_type={visual.pool_type!r}: only CLS-token pooling ('tok') is exact")
    if not isinstance(visual.ln_post, nn.LayerNorm):
        raise UnsupportedModelError(f"final norm is {type(visual.ln_post).__name__}, expected LayerNorm")
    for index, block in enumerate(visual.transformer.resblocks):
        if type(block) is not ResidualAttentionBlock:
            raise UnsupportedModelError(
                f"block {index} is {type(block).__name__}; only open_clip's ResidualAttentionBlock is supported")
        attn = block.attn
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
            raise UnsupportedModelError(f"block {index}: attention is not a packed nn.MultiheadAttention")
        if attn.bias_k is not None or attn.add_zero_attn or hasattr(block, "ln_1_kv"):
            raise UnsupportedModelError(f"block {index}: extra key/value tokens or cross-attention")
        if not isinstance(block.ls_1, (nn.Identity, LayerScale)):
            raise UnsupportedModelError(f"block {index}: unknown layer-scale module {type(block.ls_1).__name__}")


def _expected_sha(path: Path) -> str | None:
    # A shipped checkpoint records its sha256 in '<file>.sha256' beside it.
    sidecar = path.with_name(path.name + ".sha256")
    return sidecar.read_text().split()[0] if sidecar.is_file() else None
