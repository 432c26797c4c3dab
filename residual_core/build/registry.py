"""A snapshot of open_clip's pretrained-tag registry on disk, so that listing models needs no torch.

open_clip's registry (which tags exist for which architecture, and the hub repository of each) lives in its
``pretrained.py`` and is read by importing open_clip, which imports torch: 3-5 s here. The snapshot is keyed by
open_clip's version and the sha256 of that file (found without importing it), checked on every read, and rebuilt
from open_clip itself when either differs or the file is unreadable.
"""

import importlib.metadata
import importlib.util
import json
from pathlib import Path

from residual_core.build.store import atomic_write_text, cache_key, file_digest
from residual_core.data.untrusted import json_value

MAX_BYTES = 1 << 20  # open_clip 3's registry is 14 kB


def open_clip_tags(cache_dir: str | Path) -> dict[str, dict[str, str]]:
    """{arch: {tag: hub repository ("" where none)}} as the installed open_clip registers them; {} without it."""
    found = importlib.util.find_spec("open_clip")
    if found is None or not found.submodule_search_locations:
        return {}
    source = Path(next(iter(found.submodule_search_locations))) / "pretrained.py"
    try:
        key = {"open_clip": importlib.metadata.version("open_clip_torch"), "pretrained_py": file_digest(source)}
    except (OSError, importlib.metadata.PackageNotFoundError):
        return read_open_clip()
    path = Path(cache_dir) / "registry" / f"open_clip-{cache_key(key)}.json"
    try:
        with open(path, "rb") as handle:
            saved = json_value(handle.read(MAX_BYTES + 1), f"registry snapshot {path}", MAX_BYTES)
        if isinstance(saved, dict) and saved.get("key") == key and _valid(saved.get("tags")):
            return saved["tags"]
    except (OSError, ValueError):  # missing, unreadable or malformed: rebuilt below
        pass
    tags = read_open_clip()
    try:
        atomic_write_text(path, json.dumps({"key": key, "tags": tags}, sort_keys=True))
    except OSError:  # a read-only cache folder: the listing still answers, a second slower
        pass
    return tags


def read_open_clip() -> dict[str, dict[str, str]]:
    """The same table read from open_clip itself (imports it, and torch): for a process that loads models anyway,
    such as the dashboard's server, which then writes nothing to the cache folder."""
    import open_clip

    tags: dict[str, dict[str, str]] = {}
    for arch, tag in open_clip.list_pretrained():
        tags.setdefault(arch, {})[tag] = str(open_clip.get_pretrained_cfg(arch, tag).get("hf_hub") or "")
    return tags


def _valid(tags: object) -> bool:
    return isinstance(tags, dict) and all(
        isinstance(arch, str) and isinstance(by_tag, dict)
        and all(isinstance(t, str) and isinstance(repo, str) for t, repo in by_tag.items())
        for arch, by_tag in tags.items())
