import numpy as np
import pytest
from PIL import Image

from residual_core.data.datasets import DatasetUnavailableError, REGISTRY, list_datasets, load_dataset, stratified_split, subset
from residual_core.engine.textbank import COLOURS, DIGITS, LETTERS, OBJECTS, compose_bank, load_bank


def test_offline_mnist_splits_are_disjoint_stratified_and_ordered():
    splits = {s: load_dataset("mnist-offline", s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [3000, 1000, 1000]
    pixels = [{splits[s].image(i).tobytes() for i in range(0, len(splits[s]), 7)} for s in splits]
    assert not (pixels[0] & pixels[1] or pixels[0] & pixels[2] or pixels[1] & pixels[2])
    for source in splits.values():
        assert np.bincount(source.labels).tolist() == [len(source) // 10] * 10
        assert source.classnames == tuple(str(i) for i in range(10))
    image = splits["test"].image(0)
    assert image.mode == "RGB" and image.size == (28, 28)


def test_split_indices_do_not_overlap():
    labels = np.repeat(np.arange(4), 25)
    parts = stratified_split(labels, (0.6, 0.2, 0.2))
    assert sum(len(p) for p in parts) == 100
    assert not set(parts[0]) & set(parts[1]) and not set(parts[1]) & set(parts[2])


def test_subset_is_deterministic_and_exact():
    source = load_dataset("mnist-offline", "test")
    a, b = subset(source, 137, seed=3), subset(source, 137, seed=3)
    assert np.array_equal(a, b) and len(a) == 137 and len(set(a.tolist())) == 137
    assert not np.array_equal(a, subset(source, 137, seed=4))


def test_image_folder_dataset(tmp_path):
    for name, colour in (("red_things", (255, 0, 0)), ("blue_things", (0, 0, 255))):
        (tmp_path / name).mkdir()
        for i in range(5):
            Image.new("RGB", (10, 10), colour).save(tmp_path / name / f"{i}.png")
    source = load_dataset(f"folder:{tmp_path}", "all")
    assert source.classnames == ("blue things", "red things")
    assert len(source) == 10 and source.image(0).getpixel((0, 0)) == (0, 0, 255)


def test_bad_names_and_missing_data_explain_themselves(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="python -m residual_core datasets"):
        load_dataset("imagenet-9000")
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist-offline", "dev")
    with pytest.raises(DatasetUnavailableError, match="not found"):
        load_dataset(f"folder:{tmp_path / 'nope'}", "all")


def test_registry_covers_the_paper_datasets():
    for name in ("cifar10", "cifar100", "dtd", "eurosat", "gtsrb", "mnist", "resisc45", "stanford-cars", "sun397",
                 "svhn"):
        assert name in REGISTRY
    assert len(REGISTRY["gtsrb"].classnames) == 43 and len(REGISTRY["eurosat"].classnames) == 10
    rows = {row["name"]: row for row in list_datasets()}
    assert rows["mnist-offline"]["offline"] is True


def test_text_bank_is_large_and_covers_every_vocabulary():
    bank = load_bank()
    assert len(bank) >= 2000 and len(set(bank)) == len(bank)
    assert bank == compose_bank()
    text = "\n".join(bank)
    for vocab in (COLOURS, OBJECTS, DIGITS):
        assert all(word in text for word in vocab)
    assert all(f"the letter {c}" in text for c in LETTERS)


def test_templates_are_format_strings_with_one_slot():
    for info in REGISTRY.values():
        assert all(isinstance(t, str) and t.count("{}") == 1 for t in info.templates), info.name


def test_mnist_labels_alone_equal_the_full_parse():
    from residual_core.data.sources import mnist_5k, mnist_5k_labels

    labels = mnist_5k_labels()
    assert labels.shape == (5000,) and np.array_equal(labels, mnist_5k()[1])


def _photos(tmp_path):
    for cls in ("n01440764", "n01443537"):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "photos" / cls / f"{i}.png")
    return tmp_path / "photos"


def test_a_folder_gives_its_own_class_names_and_templates(tmp_path):
    root = _photos(tmp_path)
    (root / "classnames.csv").write_text("folder,name\nn01440764,tench\n")
    (root / "templates.txt").write_text("# my prompts\na photo of a {}.\n\nan underwater photo of a {}.\n")
    source = load_dataset(f"folder:{root}", "all")
    assert source.classnames == ("tench", "n01443537")  # an unlisted folder keeps its own name
    assert source.templates == ("a photo of a {}.", "an underwater photo of a {}.")


@pytest.mark.parametrize("name, text, says", [
    ("classnames.csv", "folder,label\nn01440764,tench\n", "needs the columns folder,name"),
    ("classnames.csv", "folder,name\nn99999999,ghost\n", "holds no images here"),
    ("classnames.csv", "folder,name\nn01440764,\n", "empty or longer"),
    ("templates.txt", "a photo of a thing.\n", "exactly one {}"),
    ("templates.txt", "a {} and a {}.\n", "exactly one {}"),
    ("templates.txt", "a {} {0}.\n", "no other braces"),
    ("templates.txt", "# only a comment\n", "holds 0 templates"),
])
def test_a_malformed_words_file_is_refused_in_one_line(tmp_path, name, text, says):
    root = _photos(tmp_path)
    (root / name).write_text(text)
    with pytest.raises(ValueError, match=says) as err:
        load_dataset(f"folder:{root}", "all")
    assert "\n" not in str(err.value) and (root / name).read_text() == text
