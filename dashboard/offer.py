"""The server's offer: what a link may select (the link itself is parsed against it in view.py).

What is offered is decided on the server side only, never by a URL or a widget:
  * ``streamlit run app.py -- --model SPEC --dataset NAME --sizes 500,2000 --cache-dir DIR --text-bank FILE``
    (repeatable),
  * the environment: RESIDUAL_MODELS / RESIDUAL_DATASETS / RESIDUAL_BANKS (comma-separated), RESIDUAL_CONFIG (a JSON
    file ``{"models": [...], "datasets": [...], "sizes": [...], "banks": [...]}``), RESIDUAL_CACHE (the folder),
  * what works offline here by default (the demo model, the demo world, mnist-offline, datasets and hub
    weights already on disk), and the model/dataset of every cache already built in the cache folder.
A local checkpoint ``ARCH:/path`` or a ``folder:/path`` dataset enters only through the first two.
No streamlit import here, so the offer is tested without a server.
"""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from residual_core.data.datasets import list_datasets
from residual_core.build.registry import read_open_clip
from residual_core.engine.catalogue import list_models
from residual_core.build.defaults import DEFAULT_IMAGES
from residual_core.build.pipeline import DEFAULT_DATASET, DEFAULT_MODEL, default_cache_dir
from residual_core.build.store import MANIFEST, CacheError, read_manifest
from residual_core.data.untrusted import json_value

SIZES = (500, 1000, 2000, 5000, 10000)  # images per cache a visitor may ask for (a fixed list)
# the first open builds this many: seconds for the demo model on 2 cores (docs/measurements.md), and one head
# still moves accuracy visibly
DEFAULT_LIMIT = DEFAULT_IMAGES
FALLBACK_MODEL = "tiny-random"  # when the demo weights are missing: clearly labelled random weights
MAX_MASK_JSON = 200_000  # bytes it may inflate to (a zip bomb stops here)


@dataclass(frozen=True)
class BuiltCache:
    path: str
    model: str
    dataset: str
    split: str
    limit: int | None
    n_images: int
    shape: tuple[int, int]
    weights: str
    accuracy: float


DEFAULT_BANK = "default"  # the dataset's own default: the world's words on the demo world, photo words elsewhere


def shipped_banks() -> tuple[tuple[str, str | None], ...]:
    from residual_core.engine.textbank import BANK_PATH, PHOTO_BANK_PATH

    return ((DEFAULT_BANK, None), ("demo world words", str(BANK_PATH)), ("photo words", str(PHOTO_BANK_PATH)))


@dataclass(frozen=True)
class Offer:
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    sizes: tuple[int, ...]
    cache_dir: str
    built: tuple[BuiltCache, ...] = ()
    banks: tuple[tuple[str, str | None], ...] = ()  # (name, path): the text banks a view may embed

    @property
    def bank_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.banks) or (DEFAULT_BANK,)

    def bank_path(self, name: str) -> str | None:
        """The file of an offered bank (None: the dataset's default)."""
        return dict(self.banks).get(name)

    @property
    def default_model(self) -> str:
        return self.models[0]

    @property
    def default_dataset(self) -> str:
        return self.datasets[0]

    def sizes_for(self, model: str, dataset: str) -> tuple[int, ...]:
        """The fixed sizes, plus those of caches already built for this model and dataset."""
        built = {b.limit for b in self.built if (b.model, b.dataset) == (model, dataset) and b.limit}
        return tuple(sorted(set(self.sizes) | built))


def _server_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamlit run app.py --", add_help=False)
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--dataset", action="append", default=[])
    parser.add_argument("--sizes", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--text-bank", action="append", default=[])
    args, _ = parser.parse_known_args(argv)
    return args


def _split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _config_file(path: str | None) -> dict:
    if not path:
        return {}
    try:
        data = json_value(Path(path).read_bytes(), f"RESIDUAL_CONFIG={path}", MAX_MASK_JSON)
    except (OSError, ValueError) as err:
        raise SystemExit(f"RESIDUAL_CONFIG={path} cannot be read as JSON ({err})") from err
    if not isinstance(data, dict):
        raise SystemExit(f"RESIDUAL_CONFIG={path} must hold a JSON object with models/datasets/sizes lists")
    return data


def built_caches(cache_dir: str) -> tuple[BuiltCache, ...]:
    """Caches with a well-formed manifest (sizes and digests are checked when one is opened)."""
    rows = []
    for manifest in sorted(Path(cache_dir).glob(f"*/{MANIFEST}")):
        try:
            data = read_manifest(manifest.parent, verify=False)
            if data.get("kind") == "basis":
                continue  # a PCA basis without images: nothing to show
            spec, arch = data["spec"], data["arch"]
            rows.append(BuiltCache(str(manifest.parent), str(spec["model"]), str(spec["dataset"]), str(spec["split"]),
                                   spec.get("limit") if isinstance(spec.get("limit"), int) else None,
                                   int(data["n_images"]), (int(arch["n_layers"]), int(arch["n_heads"])),
                                   str(data["inputs"].get("weights", ""))[:12], float(data["zeroshot_accuracy"])))
        except (CacheError, KeyError, TypeError, ValueError, OSError):
            continue
    return tuple(rows)


def _offline_defaults() -> tuple[list[str], list[str]]:
    offline = [row["name"] for row in list_models(read_open_clip()) if row["offline"]]
    models = [DEFAULT_MODEL] if DEFAULT_MODEL in offline else [FALLBACK_MODEL]
    models += [name for name in offline if name not in models]
    datasets = [row["name"] for row in list_datasets() if row["offline"]]
    return models, datasets


def server_offer(argv: list[str], env: dict[str, str]) -> Offer:
    """The offer from the server's command line, environment and config file (never from a request)."""
    args = _server_args(argv)
    config = _config_file(env.get("RESIDUAL_CONFIG"))
    offline_models, offline_datasets = _offline_defaults()
    # what the operator names comes first, so a server started with --model/--dataset opens on them
    models = list(args.model) + _split_list(env.get("RESIDUAL_MODELS")) + [str(m) for m in config.get("models", [])]
    datasets = (list(args.dataset) + _split_list(env.get("RESIDUAL_DATASETS"))
                + [str(d) for d in config.get("datasets", [])])
    models += offline_models
    datasets += sorted(offline_datasets, key=lambda d: d != DEFAULT_DATASET)  # the demo's shape first otherwise
    sizes = SIZES
    raw_sizes = args.sizes or config.get("sizes")
    if raw_sizes:
        items = raw_sizes if isinstance(raw_sizes, list) else _split_list(str(raw_sizes))
        try:
            sizes = tuple(sorted({int(s) for s in items if int(s) > 0})) or SIZES
        except ValueError as err:
            raise SystemExit(f"--sizes must be positive integers, got {raw_sizes!r}") from err
    cache_dir = args.cache_dir or env.get("RESIDUAL_CACHE") or default_cache_dir()
    built = built_caches(cache_dir)
    models += [b.model for b in built]
    datasets += [b.dataset for b in built]
    banks = list(shipped_banks())
    for path in list(args.text_bank) + _split_list(env.get("RESIDUAL_BANKS")) + [str(b) for b in
                                                                                   config.get("banks", [])]:
        name = Path(path).stem
        while name in dict(banks):
            name += "'"
        banks.append((name, str(Path(path).expanduser())))
    return Offer(tuple(dict.fromkeys(models)), tuple(dict.fromkeys(datasets)), sizes, cache_dir, built, tuple(banks))


def offer_from_process() -> Offer:
    import sys

    return server_offer(sys.argv[1:], dict(os.environ))
