"""The model-family seam: Hugging Face transformers CLIP decomposes exactly, loads from a folder, fails offline
in one line, and the build side keys its caches without loading any model."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from residual_core.engine import families
from residual_core.engine.decompose import decompose_images
from residual_core.engine.families.hf_clip import bpe_vocabulary, save_random_checkpoint
from residual_core.engine.models import ModelLoadError, load_clip, parse_model_spec
from residual_core.build.pipeline import PrecomputeSpec, lookup, precompute, prepare


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return save_random_checkpoint("tiny", tmp_path_factory.mktemp("hf") / "tiny-clip", seed=3)


@pytest.mark.parametrize("name,size", [("tiny", 32), pytest.param("vit-b-32", 224, marks=pytest.mark.slow)])
def test_hf_clip_decomposes_exactly(name, size):
    loaded = load_clip(f"hf-random:{name}", text=False)
    images = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    decomp = decompose_images(loaded.model, images)
    err, rel = decomp.errors()
    assert err <= 1e-5 and rel <= 1e-5, (err, rel)
    reference = loaded.model.get_image_features(pixel_values=images)
    reference = reference if isinstance(reference, torch.Tensor) else reference.pooler_output
    assert torch.allclose(decomp.total(), reference, atol=1e-5)
    cfg = loaded.model.config.vision_config
    assert decomp.heads.shape == (3, cfg.num_hidden_layers, cfg.num_attention_heads, loaded.model.config.projection_dim)


def test_a_save_pretrained_folder_loads_with_its_tokenizer_and_processor(hf_folder):
    from open_clip import get_tokenizer
    from transformers import CLIPTokenizer

    loaded = load_clip(f"hf:{hf_folder}")
    assert loaded.spec.family == "hf_clip" and loaded.arch.n_layers == 3
    texts = ["a photo of a red square", "two small green circles"]
    emb = loaded.encode_texts(texts)
    assert emb.shape == (2, 32) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    # the folder's tokenizer is open_clip's BPE: the same ids for the same text
    hf_ids = CLIPTokenizer.from_pretrained(hf_folder)(texts[0])["input_ids"]
    oc_ids = get_tokenizer("ViT-B-32")([texts[0]])[0]
    assert hf_ids == oc_ids[: len(hf_ids)].tolist()
    image = loaded.preprocess(Image.new("RGB", (50, 40), "red"))  # resized and centre-cropped by the processor
    assert image.shape == (3, 32, 32)
    assert decompose_images(loaded.model, image[None]).errors()[1] <= 1e-5


def test_weights_id_follows_the_files_not_the_path(hf_folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(hf_folder, copy)
    a, b = (families.by_name("hf_clip").weights_id(parse_model_spec(f"hf:{f}")) for f in (hf_folder, copy))
    assert a == b
    config = json.loads((copy / "config.json").read_text())
    config["vision_config"]["layer_norm_eps"] = 1e-3
    (copy / "config.json").write_text(json.dumps(config))
    assert families.by_name("hf_clip").weights_id(parse_model_spec(f"hf:{copy}")) != a


def test_offline_hub_id_fails_fast_with_instructions(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained was called: it would retry a download")

    monkeypatch.setattr("transformers.CLIPModel.from_pretrained", refuse)
    with pytest.raises(ModelLoadError) as info:
        load_clip("hf:openai/clip-vit-base-patch32")
    message = str(info.value)
    assert "hf:/path/to/folder" in message and "\n" not in message


@pytest.mark.parametrize("change,match", [
    (lambda c: c.update(model_type="siglip"), "not 'clip'"),
    (lambda c: c.clear(), "not 'clip'"),
])
def test_non_clip_folders_are_refused_in_one_line(hf_folder, tmp_path, change, match):
    import shutil

    folder = tmp_path / "other"
    shutil.copytree(hf_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=match):
        load_clip(f"hf:{folder}")


def test_missing_folder_and_garbage_weights_are_one_line_errors(hf_folder, tmp_path):
    import shutil

    with pytest.raises(ModelLoadError, match="no config.json"):
        load_clip(f"hf:{tmp_path / 'nowhere'}")
    folder = tmp_path / "broken"
    shutil.copytree(hf_folder, folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="not a loadable CLIPModel"):
        load_clip(f"hf:{folder}")


def test_an_unknown_module_belongs_to_no_family():
    with pytest.raises(families.UnsupportedModelError, match="no known model family"):
        families.tower(nn.Linear(2, 2))


def test_bpe_vocabulary_matches_open_clip():
    from open_clip.tokenizer import SimpleTokenizer

    vocab = json.loads((bpe_vocabulary() / "vocab.json").read_text())
    ours = SimpleTokenizer().encoder
    assert len(vocab) == len(ours) == 49408 and vocab["<|endoftext|>"] == ours["<end_of_text>"] == 49407
    assert all(vocab[token] == index for token, index in ours.items() if not token.startswith("<"))


def test_cache_key_needs_no_model(tmp_path, monkeypatch):
    spec = PrecomputeSpec(model="hf-random:tiny", dataset="demo-world/shape", split="test", limit=40,
                          cache_dir=str(tmp_path), batch_size=20)
    folder = precompute(spec)

    def no_model(*args, **kwargs):
        raise AssertionError("a lookup must not load a model")

    monkeypatch.setattr("residual_core.build.plan.load_clip", no_model)
    assert prepare(spec).folder == folder
    assert lookup(spec).ready
    assert precompute(spec) == folder  # built: nothing to load


def test_hf_cache_serves_the_read_side(tmp_path):
    from residual_core.read.ablation import AblationMask, evaluate
    from residual_core.read.cache import load_cache, reconstruction_error
    from residual_core.read.probe import counterfactual_probs, probe_images

    spec = PrecomputeSpec(model="hf-random:tiny", dataset="demo-world/shape", split="test", limit=60,
                          cache_dir=str(tmp_path), batch_size=30, dtype="float32")
    cache = load_cache(precompute(spec))
    assert cache.manifest["inputs"]["family"] == "hf_clip"
    assert reconstruction_error(cache) < 1e-5
    assert evaluate(cache, AblationMask()).accuracy == pytest.approx(cache.baseline_accuracy())
    loaded = load_clip("hf-random:tiny")
    from residual_core.data.datasets import load_dataset

    source = load_dataset("demo-world/shape", "test")
    result = probe_images(loaded, cache, [source.image(int(i)) for i in cache.positions[:3]])
    assert np.allclose(result.probs.sum(1), 1.0, atol=1e-5)
    off = counterfactual_probs(result, cache, AblationMask(heads=frozenset({(0, 0), (2, 3)})))
    assert off.shape == result.probs.shape and not np.allclose(off, result.probs)


def test_a_transformers_folder_without_its_tokenizer_is_refused_and_with_it_loads(tmp_path):
    """save_pretrained on a CLIPModel writes config and weights only; its tokenizer then maps every word to one id, so
    every text had one embedding and zero-shot sat at chance, silently. The load now refuses, naming the fix."""
    from transformers import CLIPTokenizer

    from residual_core.engine.families.hf_clip import bpe_vocabulary
    from residual_core.engine.models import ModelLoadError, load_clip

    load_clip("hf-tiny-random").model.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="one embedding for different texts.*tokenizer files"):
        load_clip(f"hf:{tmp_path}")
    assert load_clip(f"hf:{tmp_path}", text=False).encode_texts is None  # images alone still work
    vocab = bpe_vocabulary()
    CLIPTokenizer(str(vocab / "vocab.json"), str(vocab / "merges.txt")).save_pretrained(tmp_path)
    texts = load_clip(f"hf:{tmp_path}").encode_texts(["a red car", "the number seven"])
    assert float((texts[0] @ texts[1]).detach()) < 0.999


def test_a_model_spec_that_misses_its_form_says_which_form_it_needs(tmp_path):
    from residual_core.engine.models import ModelLoadError, load_clip, parse_model_spec

    folder = tmp_path / "my model"
    folder.mkdir()
    with pytest.raises(ModelLoadError, match="is a folder, not a checkpoint file.*hf:"):
        load_clip(f"ViT-B-32:{folder}")
    checkpoint = tmp_path / "my_clip.pt"
    checkpoint.write_bytes(b"x")
    with pytest.raises(ValueError, match="checkpoint path without its architecture.*ARCH:/path"):
        parse_model_spec(str(checkpoint))
    with pytest.raises(ValueError, match="unknown architecture 'ViT-Q-99'"):
        parse_model_spec("ViT-Q-99")
