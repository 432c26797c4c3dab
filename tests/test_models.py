import pytest
import torch
from safetensors.torch import save_file

from residual_core.engine.models import ModelLoadError, load_clip, parse_model_spec, sha256_file


def test_spec_parsing():
    assert parse_model_spec("ViT-B-32:laion2b_s34b_b79k").pretrained == "laion2b_s34b_b79k"
    assert parse_model_spec("ViT-B-16:/tmp/x.safetensors").is_local_file
    assert parse_model_spec("b16").arch == "ViT-B-16"
    assert parse_model_spec("ViT-B-32:openai", random_weights=True).pretrained is None
    assert parse_model_spec("hf-hub:org/repo").arch == "hf-hub:org/repo"
    with pytest.raises(ValueError, match="unknown architecture"):
        parse_model_spec("ViT-Q-99:foo")
    with pytest.raises(ValueError, match="empty"):
        parse_model_spec(" ")


def _never_download(monkeypatch):
    # "fails fast" as behaviour, not a clock: the refusal comes before the factory would try to download
    def refuse(*args, **kwargs):
        raise AssertionError("the factory was called: it would retry a download")

    monkeypatch.setattr("open_clip.create_model_and_transforms", refuse)


def test_offline_hub_tag_fails_fast_with_instructions(monkeypatch):
    _never_download(monkeypatch)
    with pytest.raises(ModelLoadError) as info:
        load_clip("ViT-B-32:laion2b_s34b_b79k")
    message = str(info.value)
    assert "connect once" in message and "ARCH" not in message and "ViT-B-32:/path/to" in message


def test_unreachable_hub_fails_fast(monkeypatch):
    # A closed local port stands in for an unreachable hub: the check gives up at once, no retries.
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    _never_download(monkeypatch)
    with pytest.raises(ModelLoadError, match="offline or the hub is unreachable"):
        load_clip("ViT-B-16:openai")


def test_local_checkpoint_round_trip_and_corruption(tmp_path, tiny):
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(path))
    loaded = load_clip(f"residual-tiny:{path}")
    assert loaded.weights_id == sha256_file(path)
    images = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded.model.encode_image(images), tiny.model.encode_image(images), atol=1e-6)
    (tmp_path / "tiny.safetensors.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(ModelLoadError, match="corrupted"):
        load_clip(f"residual-tiny:{path}")
    with pytest.raises(ModelLoadError, match="not found"):
        load_clip(f"residual-tiny:{tmp_path / 'missing.safetensors'}")


def test_listed_models_say_whether_they_work_offline(tmp_path):
    from residual_core.build.registry import open_clip_tags
    from residual_core.engine.catalogue import list_models

    rows = {row["name"]: row for row in list_models(open_clip_tags(tmp_path))}
    assert rows["tiny-random"]["offline"] is True
    assert rows["b32"]["offline"] is False


def test_the_registry_snapshot_matches_open_clip_and_a_stale_or_broken_one_is_rebuilt(tmp_path):
    import json

    import open_clip

    from residual_core.build.registry import open_clip_tags

    tags = open_clip_tags(tmp_path)
    assert {(a, t) for a, by_tag in tags.items() for t in by_tag} == set(open_clip.list_pretrained())
    expected = open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")["hf_hub"]
    assert tags["ViT-B-32"]["laion2b_s34b_b79k"] == expected
    (snapshot,) = (tmp_path / "registry").iterdir()
    saved = json.loads(snapshot.read_text())
    for broken in (json.dumps({"key": saved["key"] | {"open_clip": "0.0"}, "tags": {"ViT-B-32": {"fake": "x/y"}}}),
                   json.dumps({"key": saved["key"], "tags": {"ViT-B-32": ["not", "a", "table"]}}),
                   "[" * 100_000, "not json"):
        snapshot.write_text(broken)
        assert open_clip_tags(tmp_path) == tags, broken[:40]
    snapshot.chmod(0o444)
    (tmp_path / "registry").chmod(0o555)  # a read-only cache folder: the listing still answers
    try:
        snapshot_text = snapshot.read_text()
        assert open_clip_tags(tmp_path) == tags and snapshot.read_text() == snapshot_text
    finally:
        (tmp_path / "registry").chmod(0o755)


def test_each_short_names_source_is_the_one_its_family_parses():
    from residual_core.engine import catalogue
    from residual_core.engine.families.files import ASSETS

    assert catalogue.ASSETS == ASSETS
    for name, short in catalogue.SHORT_NAMES.items():
        spec = parse_model_spec(name)
        source, _, weights = catalogue.source_of(short.spec)
        expected = "random" if spec.pretrained is None else "file" if spec.is_local_file else None
        if expected:
            assert source == expected, name
        else:
            assert source == ("tag" if spec.family == "open_clip" else "hub") and weights == spec.pretrained, name
