"""Model specs and loading: every model goes through open_clip's own factory.

A spec is one string:
  ``ARCH:PRETRAINED``   any open_clip tag, e.g. ``ViT-B-32:laion2b_s34b_b79k``
  ``ARCH:/path/ckpt``   a local checkpoint (.safetensors, .bin, .pt), loaded weights-only
  ``hf-hub:org/repo``   an open_clip model on the Hugging Face hub
  ``NAME``              a registered short name (``python -m residual_core models``)
``random_weights=True`` builds the architecture with seeded random weights: the
decomposition is exact for any weights, so this is how exactness is tested offline.
"""

import hashlib
import json
import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CONFIG_DIR = ASSETS / "model_configs"


@dataclass(frozen=True)
class ShortName:
    arch: str
    pretrained: str | None  # tag, path relative to assets/, or None for random weights
    about: str
    sha256: str | None = None  # checked on load for shipped weights


SHORT_NAMES: dict[str, ShortName] = {
    "demo": ShortName("residual-demo", "demo/residual-demo.safetensors",
                      "the project's small CLIP trained on the attribute world (offline default)"),
    "tiny-random": ShortName("residual-tiny", None, "2-layer random-weight ViT (tests, smoke runs)"),
    "b32": ShortName("ViT-B-32", "laion2b_s34b_b79k", "OpenCLIP ViT-B/32, LAION-2B (needs a network once)"),
    "b32-openai": ShortName("ViT-B-32-quickgelu", "openai", "OpenAI CLIP ViT-B/32 (needs a network once)"),
    "b16": ShortName("ViT-B-16", "laion2b_s34b_b88k", "OpenCLIP-B of the paper (needs a network once)"),
    "b16-openai": ShortName("ViT-B-16", "openai", "CLIP-B of the paper (needs a network once)"),
    "l14": ShortName("ViT-L-14", "laion2b_s32b_b82k", "OpenCLIP-L of the paper (needs a network once)"),
    "l14-openai": ShortName("ViT-L-14", "openai", "CLIP-L of the paper (needs a network once)"),
}


class ModelLoadError(RuntimeError):
    """A model spec could not be turned into a loaded model; the message says what to do."""


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    pretrained: str | None  # open_clip tag, checkpoint path, or None (random weights)
    random_seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.arch}:{self.pretrained}" if self.pretrained else f"{self.arch}:random{self.random_seed}"

    @property
    def is_local_file(self) -> bool:
        return self.pretrained is not None and (os.sep in self.pretrained or Path(self.pretrained).suffix != "")


def parse_model_spec(text: str, random_weights: bool = False, seed: int = 0) -> ModelSpec:
    """Turn ``ARCH:PRETRAINED`` / ``ARCH:/path`` / ``hf-hub:org/repo`` / short name into a ModelSpec."""
    text = text.strip()
    if not text:
        raise ValueError("empty model spec; try 'demo', 'ViT-B-32:laion2b_s34b_b79k' or 'ARCH:/path/to/ckpt'")
    if text in SHORT_NAMES:
        short = SHORT_NAMES[text]
        pretrained = short.pretrained
        if pretrained is not None and not _is_tag(short.arch, pretrained):
            pretrained = str(ASSETS / pretrained)
        arch = short.arch
    elif text.startswith("hf-hub:"):
        arch, pretrained = text, None
    elif ":" in text:
        arch, pretrained = text.split(":", 1)
    else:
        arch, pretrained = text, None
        random_weights = True  # a bare architecture name has no weights to load
    if random_weights:
        pretrained = None
    _ensure_configs_registered()
    if not arch.startswith("hf-hub:") and arch not in open_clip.list_models():
        raise ValueError(f"unknown architecture {arch!r}: run `python -m residual_core models` for the list")
    return ModelSpec(arch=arch, pretrained=pretrained, random_seed=seed)


def _is_tag(arch: str, pretrained: str) -> bool:
    return pretrained in open_clip.list_pretrained_tags_by_model(arch)


def _ensure_configs_registered() -> None:
    # open_clip's own config mechanism: our small architectures live as JSON next to the weights.
    if "residual-tiny" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


@dataclass(frozen=True)
class ArchInfo:
    """Architecture facts read from the loaded model, never typed in by hand."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_embed: int
    n_tokens: int
    image_size: int

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> "ArchInfo":
        visual = model.visual
        blocks = visual.transformer.resblocks
        n_heads = blocks[0].attn.num_heads
        d_model = visual.transformer.width
        proj = visual.proj
        grid = visual.grid_size
        return cls(
            n_layers=len(blocks),
            n_heads=n_heads,
            d_model=d_model,
            d_head=d_model // n_heads,
            d_embed=proj.shape[1] if proj is not None else d_model,
            n_tokens=grid[0] * grid[1] + 1,
            image_size=visual.image_size[0],
        )

    @property
    def n_units(self) -> int:
        return 1 + self.n_layers + self.n_layers * self.n_heads


@dataclass(frozen=True)
class LoadedClip:
    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor] | None  # None: loaded with text=False (images only)
    spec: ModelSpec
    arch: ArchInfo
    weights_id: str  # tag, checkpoint sha256 or "random:<seed>": part of every cache key


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else ""


def _offline_message(spec: ModelSpec, err: Exception) -> str:
    return (
        f"could not fetch pretrained weights {spec.pretrained!r} for {spec.arch!r} ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}). This machine looks offline or the hub is unreachable. "
        f"Either connect once so open_clip can cache the weights (they are reused offline afterwards), "
        f"or download the checkpoint elsewhere and pass it as '{spec.arch}:/path/to/open_clip_model.safetensors', "
        f"or use the offline demo model ('demo')."
    )


def load_clip(spec: ModelSpec | str, device: str = "cpu", text: bool = True) -> LoadedClip:
    """Load an open_clip model in eval mode, fp32, through open_clip's factory.

    ``text=False`` skips the tokenizer (``tokenizer`` is then None): enough to decompose images, and it
    keeps models whose tokenizer lives on the Hugging Face hub usable offline for that.
    """
    if isinstance(spec, str):
        spec = parse_model_spec(spec)
    _ensure_configs_registered()
    weights_id = f"random:{spec.random_seed}"
    pretrained = spec.pretrained
    if pretrained is not None and spec.is_local_file:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"checkpoint file not found: {path}. Pass an existing file as 'ARCH:/path/to/ckpt'.")
        weights_id = sha256_file(path)
        expected = _expected_sha(path)
        if expected is not None and expected != weights_id:
            raise ModelLoadError(
                f"checkpoint {path} is corrupted: sha256 {weights_id[:12]}… does not match the recorded "
                f"{expected[:12]}…. Restore it with `git checkout -- {path.name}` or retrain it."
            )
        pretrained = str(path)
    elif pretrained is not None:
        weights_id = f"tag:{pretrained}"
        if _is_tag(spec.arch, pretrained) and not _hub_cached(spec.arch, pretrained):
            _require_hub(spec)
    from residual_core.decompose import check_config_supported

    check_config_supported(spec.arch, open_clip.get_model_config(spec.arch))
    torch.manual_seed(spec.random_seed)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.arch, pretrained=pretrained, device=device, precision="fp32", weights_only=True
        )
    except ModelLoadError:
        raise
    except Exception as err:  # noqa: BLE001 - a local checkpoint is untrusted input: it can raise anything
        if not spec.is_local_file and not isinstance(err, (OSError, RuntimeError, ValueError, ImportError)):
            raise
        if pretrained is not None and not spec.is_local_file:
            raise ModelLoadError(_offline_message(spec, err)) from err
        if spec.is_local_file:
            raise ModelLoadError(f"checkpoint {pretrained} is not an open_clip {spec.arch} state dict "
                                 f"({type(err).__name__}: {_first_line(err)}); pass the matching ARCH or "
                                 "another file") from err
        hf_text = ((open_clip.get_model_config(spec.arch) or {}).get("text_cfg") or {}).get("hf_model_name")
        if hf_text:
            raise ModelLoadError(f"{spec.arch}: its text tower is the Hugging Face model {hf_text!r}, whose config "
                                 "comes from the hub and needs the transformers package; install it and connect "
                                 f"once so the config is cached ({type(err).__name__}: {_first_line(err)})") from err
        raise ModelLoadError(f"could not build {spec.name}: {type(err).__name__}: {_first_line(err)}") from err
    model.eval()
    if not text:
        return LoadedClip(model, preprocess, None, spec, ArchInfo.from_model(model), weights_id)
    try:
        tokenizer = open_clip.get_tokenizer(spec.arch)
    except (OSError, RuntimeError, ValueError, ImportError) as err:
        raise ModelLoadError(f"{spec.arch}: its tokenizer could not be loaded ({type(err).__name__}: "
                             f"{_first_line(err)}); it comes from the Hugging Face hub: connect once so it is "
                             "cached, or use another model") from err
    return LoadedClip(model, preprocess, tokenizer, spec, ArchInfo.from_model(model), weights_id)


def _require_hub(spec: ModelSpec, timeout: float = 3.0) -> None:
    """Fail in seconds, not minutes of retries, when the weights are not cached and the hub is unreachable."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(_offline_message(spec, RuntimeError("HF_HUB_OFFLINE is set")))
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", constants.ENDPOINT))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise ModelLoadError(_offline_message(spec, err)) from err


def _expected_sha(path: Path) -> str | None:
    # A shipped checkpoint records its sha256 in '<file>.sha256' beside it.
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.is_file():
        return sidecar.read_text().split()[0]
    return None


def list_models() -> list[dict[str, Any]]:
    """Registered short names and whether each works offline right now."""
    rows = []
    for name, short in SHORT_NAMES.items():
        if short.pretrained is None:
            offline, source = True, "random"
        elif _is_tag(short.arch, short.pretrained):
            offline, source = _hub_cached(short.arch, short.pretrained), "hub"
        else:
            offline, source = (ASSETS / short.pretrained).is_file(), "file"
        spec = f"{short.arch}:{short.pretrained}" if short.pretrained else f"{short.arch} (random weights)"
        rows.append({"name": name, "spec": spec, "offline": offline, "source": source, "about": short.about})
    return rows


def _hub_cached(arch: str, tag: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    repo = (cfg.get("hf_hub") or "").rstrip("/")
    if not repo:
        return False
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repo, filename), str):
            return True
    return False


def write_model_config(name: str, config: dict[str, Any]) -> Path:
    path = CONFIG_DIR / f"{name}.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path
