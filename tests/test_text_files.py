"""The shared text/ files (class-prompt classifiers, bank embeddings) are read like cache arrays: bounded, verified
against their digest and against the inputs they were asked for, and written atomically with a one-line error."""

import json
import os

import numpy as np
import pytest
import torch

from residual_core.build.finalize import shared_array
from residual_core.build.store import CacheWriteError


def _bank(seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((5, 4)).astype(np.float32))


def _read(tmp_path, name: str, seed: int, calls: list) -> torch.Tensor:
    def compute():
        calls.append(name)
        return _bank(seed)

    return shared_array(tmp_path, "bank", {"model": "m", "bank": name}, compute)



def test_a_saved_array_is_read_back_without_computing(tmp_path):
    calls = []
    first = _read(tmp_path, "a", 1, calls)
    again = _read(tmp_path, "a", 1, calls)
    assert calls == ["a"]
    assert torch.equal(first, again)


def test_files_swapped_between_two_banks_are_refused_and_recomputed(tmp_path):
    calls = []
    _read(tmp_path, "a", 1, calls)
    _read(tmp_path, "b", 2, calls)
    folder = tmp_path / "text"
    stems = sorted({p.stem for p in folder.iterdir() if not p.name.startswith(".")})
    assert len(stems) == 2
    for suffix in (".npy", ".json"):  # swap both files of the two banks, names kept
        one, two = folder / (stems[0] + suffix), folder / (stems[1] + suffix)
        tmp = folder / ("swap" + suffix)
        one.rename(tmp), two.rename(one), tmp.rename(two)
    calls.clear()
    assert torch.equal(_read(tmp_path, "a", 1, calls), _bank(1))
    assert torch.equal(_read(tmp_path, "b", 2, calls), _bank(2))
    assert sorted(calls) == ["a", "b"]  # neither swapped file was used


@pytest.mark.parametrize("hostile", ["deep", "dev_zero", "not_json", "digest"])
def test_a_hostile_meta_file_is_refused_without_crashing(tmp_path, hostile):
    calls = []
    _read(tmp_path, "a", 1, calls)
    meta = next(p for p in (tmp_path / "text").iterdir() if p.suffix == ".json")
    if hostile == "deep":
        meta.write_text("[" * 200_000 + "]" * 200_000)
    elif hostile == "dev_zero":
        meta.unlink()
        os.symlink("/dev/zero", meta)
    elif hostile == "not_json":
        meta.write_bytes(b"\xff\xfe{")
    else:
        entry = json.loads(meta.read_text())
        meta.write_text(json.dumps(entry | {"xxh3_128": "0" * 32}))
    calls.clear()
    assert torch.equal(_read(tmp_path, "a", 1, calls), _bank(1))
    assert calls == ["a"]


def test_a_read_only_text_folder_is_one_line_naming_it(tmp_path):
    if os.geteuid() == 0:  # root writes anyway; a file where the folder should be fails for everyone
        (tmp_path / "text").write_text("not a folder")
    else:
        (tmp_path / "text").mkdir()
        (tmp_path / "text").chmod(0o500)
    with pytest.raises(CacheWriteError, match="cannot write the cache in .*text") as err:
        _read(tmp_path, "a", 1, [])
    assert "\n" not in str(err.value)


def test_the_photo_bank_names_every_imagenet_category_and_is_the_default_off_the_demo_world():
    from torchvision.models import get_weight

    from residual_core.build.plan import PrecomputeSpec, bank_of
    from residual_core.engine.textbank import BANK_PATH, PHOTO_BANK_PATH, compose_photo_bank, load_bank

    categories = get_weight("ResNet50_Weights.IMAGENET1K_V1").meta["categories"]
    composed = compose_photo_bank(categories)
    assert load_bank(PHOTO_BANK_PATH) == composed  # the shipped file is what the code writes
    named = {c.split(",")[0].strip() for c in categories}
    assert all(f"a photo of a {n}" in composed or f"a photo of an {n}" in composed for n in named)
    assert len(composed) >= 2_000 and not any("hexagon" in t for t in composed)  # no world phrases
    assert bank_of(PrecomputeSpec(dataset="folder:/photos")) == str(PHOTO_BANK_PATH)
    assert bank_of(PrecomputeSpec(dataset="demo-world/shape")) == str(BANK_PATH)
    assert bank_of(PrecomputeSpec(dataset="mnist-offline")) == str(BANK_PATH)
    assert bank_of(PrecomputeSpec(dataset="folder:/photos", text_bank="/mine.txt")) == "/mine.txt"


def test_a_caches_bank_is_joined_by_its_class_prompts_once():
    from residual_core.build.plan import class_prompts
    from residual_core.data.world import CLASSNAMES

    bank = ["a photo of a tench.", "a red car"]
    added = class_prompts("folder:/x", ("tench", "goldfish"), ("a photo of a {}.", "a {} in water.", "x {}"), bank)
    assert added == ["a photo of a goldfish.", "a tench in water.", "a goldfish in water."]  # two templates, no repeat
    world = class_prompts("demo-world/shape", CLASSNAMES["shape"], (), [])
    assert "a plain background." in world and "magenta shapes." in world  # every factor on the demo world
