"""Hostile inputs: image folders, uploads, the CLI, and URLs driven through the real app (AppTest)."""

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

from dashboard.view import encode_mask
from residual_core.read.ablation import AblationMask
from residual_core.data.datasets import DatasetUnavailableError, load_dataset
from residual_core.data.images import MAX_FILES, open_image_bytes, open_uploads, ImageInputError

ROOT = Path(__file__).resolve().parent.parent


def _images(folder: Path, n: int = 3, colour=(200, 0, 0)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), colour).save(folder / f"{i}.png")


def test_folder_dataset_never_leaves_its_root_and_skips_what_it_cannot_read(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    _images(root / "cat")
    _images(root / "dog", colour=(0, 0, 200))
    _images(outside / "secret")
    (root / "cat" / "escape.png").symlink_to(outside / "secret" / "0.png")  # a file link out of the root
    (root / "dog" / "tour").symlink_to(outside)  # a directory link: never walked
    (root / "evil").symlink_to("/")  # a class folder that is a link: not a class
    os.mkfifo(root / "dog" / "x.png")  # would block a reader forever
    (root / "dog" / "garbage.png").write_bytes(b"not an image at all")
    (root / "cat" / "inside.png").symlink_to(root / "dog" / "0.png")  # a link inside the root is fine
    source = load_dataset(f"folder:{root}", "all")
    assert source.classnames == ("cat", "dog")
    assert sorted(source.ids) == sorted(["cat/0.png", "cat/1.png", "cat/2.png", "cat/inside.png", "dog/0.png",
                                         "dog/1.png", "dog/2.png", "dog/garbage.png"])
    assert {s["id"]: s["reason"] for s in source.scan_skipped} == {
        "cat/escape.png": "a link that points outside the dataset folder", "dog/x.png": "not a regular file"}


def test_folder_build_skips_undecodable_images_and_records_them(tmp_path):
    from residual_core.read.cache import load_cache
    from residual_core.build.pipeline import PrecomputeSpec, precompute

    root = tmp_path / "data"
    _images(root / "a", 4)
    _images(root / "b", 4, colour=(0, 200, 0))
    (root / "b" / "broken.png").write_bytes(Image.new("RGB", (8, 8)).tobytes()[:40])
    os.mkfifo(root / "a" / "pipe.png")
    folder = precompute(PrecomputeSpec(model="tiny-random", dataset=f"folder:{root}", split="all",
                                       cache_dir=str(tmp_path / "caches")))
    cache = load_cache(folder)
    assert cache.n_images == 8 and "b/broken.png" not in cache.image_ids
    skipped = cache.manifest["skipped"]
    assert skipped["count"] == 2
    assert {s["id"] for s in skipped["first"]} == {"b/broken.png", "a/pipe.png"}


def test_an_empty_class_folder_is_named_in_the_manifest_the_cli_and_the_sidebar(tmp_path, capsys, open_app):
    from residual_core.cli.main import main

    root = tmp_path / "data"
    _images(root / "cat")
    _images(root / "dog", colour=(0, 0, 200))
    (root / "emu").mkdir()  # a class the user expects, with no image in it
    source = load_dataset(f"folder:{root}", "all")
    assert source.classnames == ("cat", "dog")
    assert {"id": "emu/", "reason": "a class folder with no image: the class is left out"} in source.scan_skipped
    assert main(["precompute", "--model", "tiny-random", "--dataset", f"folder:{root}", "--split", "all",
                 "--limit", "1000", "--cache-dir", str(tmp_path / "caches")]) == 0  # the dashboard's default size
    err = capsys.readouterr().err
    assert "class folder(s) with no image, left out: emu/" in err and "1 entry was left out" in err
    at = open_app(tmp_path / "caches", {"model": "tiny-random", "dataset": f"folder:{root}", "split": "all"})
    captions = [c.value.replace("\\", "").replace("\u2060", "") for c in at.sidebar.caption]
    assert any("6 images · 1 left out" in c for c in captions), (captions, [w.value for w in at.warning])
    assert any("Class folders with no image, left out: emu/" in c for c in captions), captions


def test_a_single_class_folder_is_refused(tmp_path):
    _images(tmp_path / "only")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetUnavailableError, match="at least two"):
        load_dataset(f"folder:{tmp_path}", "all")


def _png(width: int, height: int, mode: str = "RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_oversized_png_is_refused_from_its_header():
    with pytest.raises(ImageInputError, match="MP per image"):
        open_image_bytes(_png(5000, 4000), "big.png")


def test_an_oversized_jpeg_is_decoded_at_reduced_scale():
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 4000), (10, 20, 30)).save(buffer, "JPEG")
    loaded = open_image_bytes(buffer.getvalue(), "big.jpg")
    assert max(loaded.image.size) <= 1024
    assert any("reduced scale" in note for note in loaded.notes)


def test_an_upload_request_has_a_file_and_pixel_budget():
    small = _png(64, 64, "RGB")
    batch = open_uploads([(f"{i}.png", small) for i in range(MAX_FILES + 3)])
    assert len(batch.images) == MAX_FILES and len(batch.errors) == 3
    mid = _png(3900, 3900, "RGB")  # 15.2 MP each: three fit the 48 MP request budget, the fourth does not
    batch = open_uploads([(f"{i}.png", mid) for i in range(4)])
    assert len(batch.images) == 3 and "MP per upload" in batch.errors[0]


@pytest.mark.slow
def test_verify_refuses_a_resnet_tower_in_one_line():
    done = subprocess.run([sys.executable, "-m", "residual_core", "verify", "--model", "RN50", "--random-weights",
                           "--n-images", "1"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: RN50: the image tower is a ResNet")
    assert "Traceback" not in done.stderr


def test_a_foreign_file_as_checkpoint_is_a_message(tmp_path):
    from residual_core.engine.models import ModelLoadError, load_clip

    path = tmp_path / "ckpt.bin"
    path.write_bytes(b"\x80\x04this is no state dict")
    with pytest.raises(ModelLoadError, match="not an open_clip"):
        load_clip(f"residual-tiny:{path}")


class _Payload:
    """Unpickling this runs a command: what a hostile checkpoint would do if it were ever loaded unsafely."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile_pickle(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"visual.proj": _Payload(marker)}, path)
    return path


def test_a_pickled_payload_as_checkpoint_is_refused_in_one_line_that_never_advises_unsafe_loading(tmp_path):
    marker = tmp_path / "ran"
    ckpt = _hostile_pickle(tmp_path / "evil.pt", marker)
    done = subprocess.run([sys.executable, "-m", "residual_core", "verify", "--model", f"residual-tiny:{ckpt}",
                           "--n-images", "1"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint"), done.stderr
    assert "weights-only" in lines[0] and "weights_only" not in lines[0]
    assert not marker.exists()


def test_a_pickled_payload_in_a_hugging_face_folder_is_refused_without_running_it(tmp_path):
    from residual_core.engine.families.hf_clip import save_random_checkpoint
    from residual_core.engine.models import ModelLoadError, load_clip

    marker = tmp_path / "ran"
    folder = save_random_checkpoint("tiny", tmp_path / "clip")
    (folder / "model.safetensors").unlink()
    _hostile_pickle(folder / "pytorch_model.bin", marker)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ModelLoadError, match="only ever loaded weights-only") as refused:
            load_clip(f"hf:{folder}")
    assert "weights_only" not in str(refused.value) and not marker.exists()


# --- URLs through the real app --------------------------------------------------------------------------


BASE = {"model": "tiny-random", "dataset": "mnist-offline", "split": "test", "n": "300"}
HOSTILE = [
    ({"model": "ViT-B-32:/etc/shadow"}, "model"),
    ({"model": "ViT-B-32:/no/such/file"}, "model"),
    ({"model": "ViT-L-14"}, "model"),
    ({"dataset": "folder:/root"}, "dataset"),
    ({"dataset": "folder:/"}, "dataset"),
    ({"dataset": "[Session expired](https://example.org/login)"}, "dataset"),
    ({"n": "2001"}, "number of images"),
    ({"n": "-5"}, "number of images"),
    ({"n": "abc"}, "number of images"),
    ({"split": "evil"}, "split"),
    ({"layer": "abc"}, "layer"),
    ({"head": "99999999999999999999"}, "head"),
    ({"metric": "__class__"}, "metric"),
    ({"mask": encode_mask(AblationMask()).replace("e", "!")}, "mask"),
    ({"basis": "/etc"}, "basis"),
]


@pytest.mark.parametrize("change, what", HOSTILE, ids=[f"{k}={v[:24]}" for (c, _) in HOSTILE for k, v in c.items()])
def test_a_hostile_url_falls_back_with_a_notice_and_builds_nothing(cache_root, open_app, change, what):
    before = sorted(p.name for p in cache_root.iterdir())
    at = open_app(cache_root, BASE | change)
    assert not at.exception, at.exception
    assert any(what in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.session_state["model"] in ("demo", "tiny-random")
    assert not str(at.session_state["dataset"]).startswith(("folder:", "["))
    assert sorted(p.name for p in cache_root.iterdir()) == before  # nothing built, nothing written
    assert at.title[0].value == "Heads map"


def test_a_mask_of_the_wrong_shape_or_size_is_refused(cache_root, open_app, tiny_cache):
    import base64
    import zlib

    wrong = base64.urlsafe_b64encode(zlib.compress(json.dumps({"heads": 5}).encode())).decode()
    at = open_app(cache_root, BASE | {"mask": wrong})
    assert not at.exception and any("mask" in w.value for w in at.warning)
    outside = AblationMask(heads=frozenset({(tiny_cache.n_layers, 0)}))  # one layer past the model
    at = open_app(cache_root, BASE | {"mask": encode_mask(outside)})
    assert not at.exception and any("not in this" in w.value for w in at.warning)
    assert at.session_state["mask"] == AblationMask()


def test_a_first_open_with_no_cache_builds_nothing_until_a_click(tmp_path, open_app):
    empty = tmp_path / "empty"
    empty.mkdir()
    at = open_app(empty, {})
    assert not at.exception
    assert list(empty.iterdir()) == []
    assert [b.label for b in at.button if b.key == "build_main"] == ["Build the cache"]


@pytest.mark.parametrize("content, what", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 10, "not UTF-8"),
    ("".join(f"text {i}\n" for i in range(100_001)).encode(), "100,001 descriptions"),
    (b"a" * 5_000 + b"\n", "5,000 characters"),
    (b"ok\nbad\x00line\n", "NUL"),
])
def test_a_bad_text_bank_is_one_line_naming_the_file(tmp_path, content, what, capsys):
    from residual_core.cli.main import main
    from residual_core.engine.textbank import load_bank

    bank = tmp_path / "bank.txt"
    bank.write_bytes(content)
    with pytest.raises(ValueError, match=what) as caught:
        load_bank(bank)
    assert str(bank) in str(caught.value)
    assert main(["precompute", "--model", "tiny-random", "--dataset", "mnist-offline", "--limit", "20",
                 "--text-bank", str(bank), "--cache-dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: text bank") and str(bank) in err[-1]


def test_a_text_bank_larger_than_the_cap_is_not_read_whole(tmp_path, monkeypatch):
    from residual_core.engine import textbank

    monkeypatch.setattr(textbank, "MAX_BANK_BYTES", 1_000)
    bank = tmp_path / "bank.txt"
    bank.write_text("a description\n" * 1_000)
    with pytest.raises(ValueError, match="larger than"):
        textbank.load_bank(bank)
