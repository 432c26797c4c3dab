"""Groups of a cache's images: from the world's factors, sub-folders, an id,group CSV and Waterbirds' metadata;
malformed files refused in one line; the worst-group arithmetic."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from residual_core.data.world import FACTORS, scenes_of
from residual_core.read.groups import Groups, csv_groups, folder_groups, group_accuracy, groups_for, world_groups

CLASSES = ("cat", "dog")


def test_group_accuracy_finds_the_worst_group_and_ignores_ungrouped_images():
    groups = Groups(index=np.array([0, 0, 1, 1, 1, -1]), names=("a", "b"), source="test")
    right = np.array([True, True, True, False, False, False])
    acc = group_accuracy(right, groups)
    assert acc.mean == pytest.approx(3 / 6)
    assert acc.per_group.tolist() == pytest.approx([1.0, 1 / 3])
    assert (acc.worst, acc.worst_group) == (pytest.approx(1 / 3), "b")
    assert acc.gap == pytest.approx(0.5 - 1 / 3)


def test_world_groups_are_the_scenes_ground_truth():
    positions = np.array([5, 17, 3, 40])
    scenes = scenes_of("val")
    labels = np.array([scenes[p].shape for p in positions])
    groups = world_groups("demo-world/shape", "val", positions, labels, "colour")
    for row, p in enumerate(positions):
        assert groups.names[groups.index[row]] == f"{scenes[p].value('shape')} × {scenes[p].value('colour')}"
    assert groups.values == FACTORS["colour"]


@pytest.mark.parametrize("dataset, factor, says", [("demo-world/shape", "shape", "unknown group factor"),
                                                   ("demo-world/shape", "flavour", "unknown group factor"),
                                                   ("folder:/x", "colour", "need a demo-world dataset")])
def test_world_groups_refuse_what_the_world_cannot_answer(dataset, factor, says):
    with pytest.raises(ValueError, match=says):
        world_groups(dataset, "val", np.array([0]), np.array([0]), factor)


def test_folder_groups_read_the_first_sub_folder():
    ids = ("cat/indoor/1.png", "cat/outdoor/2.png", "dog/outdoor/3.png", "dog/4.png")
    groups = folder_groups(ids, np.array([0, 0, 1, 1]), CLASSES)
    assert [groups.names[i] if i >= 0 else None for i in groups.index] == \
        ["cat × indoor", "cat × outdoor", "dog × outdoor", None]
    with pytest.raises(ValueError, match="class/group/image"):
        folder_groups(("cat/1.png", "dog/2.png"), np.array([0, 1]), CLASSES)


def test_csv_groups_by_id_and_group(tmp_path):
    path = tmp_path / "groups.csv"
    path.write_text("id,group\ncat/1.png,indoor\ndog/2.png,outdoor\nelsewhere.png,indoor\n")
    groups = csv_groups(path, ("cat/1.png", "dog/2.png", "dog/9.png"), np.array([0, 1, 1]), CLASSES)
    assert [groups.names[i] if i >= 0 else None for i in groups.index] == ["cat × indoor", "dog × outdoor", None]
    assert len(groups.digest) == 64


def test_waterbirds_metadata_gives_class_by_place(tmp_path):
    path = tmp_path / "metadata.csv"
    path.write_text("img_id,img_filename,y,split,place,place_filename\n"
                    "1,001.Albatross/a.jpg,1,2,1,/o/ocean/x.jpg\n2,002.Sparrow/b.jpg,0,2,1,/o/ocean/y.jpg\n"
                    "3,002.Sparrow/c.jpg,0,2,0,/f/forest/z.jpg\n")
    ids = ("001.Albatross/a.jpg", "002.Sparrow/b.jpg", "002.Sparrow/c.jpg")
    groups = csv_groups(path, ids, np.array([1, 0, 0]), ("landbird", "waterbird"))
    assert [groups.names[i] for i in groups.index] == ["waterbird × water", "landbird × water", "landbird × land"]


@pytest.mark.parametrize("text, says", [
    ("name,kind\na,b\n", "needs columns id,group"),
    ("", "needs columns id,group"),
    ("id,group\nnot-here.png,x\n", "names none of this cache's images"),
    ("id,group\ncat/1.png,\n", "has an empty group"),
    ("img_filename,place\ncat/1.png,7\n", "is not 0 \\(land\\) or 1"),
])
def test_malformed_group_files_are_refused_in_one_line(tmp_path, text, says):
    path = tmp_path / "groups.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=says) as err:
        csv_groups(path, ("cat/1.png",), np.array([0]), CLASSES)
    assert "\n" not in str(err.value)
    assert path.read_text() == text  # nothing lost


def test_unreadable_group_files_are_refused(tmp_path):
    binary = tmp_path / "groups.csv"
    binary.write_bytes(b"id,group\n\xff\xfe\x00")
    for path, says in ((binary, "not UTF-8"), (tmp_path / "missing.csv", "cannot read group file")):
        with pytest.raises(ValueError, match=says):
            csv_groups(path, ("cat/1.png",), np.array([0]), CLASSES)


def test_groups_for_names_what_a_cache_offers(tiny_cache):
    with pytest.raises(ValueError, match="unknown groups 'flavour'"):
        groups_for(tiny_cache, "flavour")
    world = replace(tiny_cache, manifest=tiny_cache.manifest | {"spec": {"dataset": "demo-world/shape",
                                                                         "split": "val"}})
    groups = groups_for(world, "colour")
    assert len(groups.index) == world.n_images and "× " in groups.names[0]


def _waterbirds(tmp_path, rows: str):
    from PIL import Image

    root = tmp_path / "waterbirds"
    for folder, name in (("001.Albatross", "a.png"), ("002.Sparrow", "b.png"), ("002.Sparrow", "c.png")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (200, 30, 30)).save(root / folder / name)
    (root / "metadata.csv").write_text("img_id,img_filename,y,split,place,place_filename\n" + rows)
    return root


ROWS = ("1,001.Albatross/a.png,1,2,1,x\n2,002.Sparrow/b.png,0,2,1,x\n3,002.Sparrow/c.png,0,2,0,x\n"
        "4,002.Sparrow/c.png,0,0,0,x\n")


def test_a_waterbirds_folder_is_a_dataset_labelled_by_bird_with_place_as_its_groups(tmp_path):
    from residual_core.data.datasets import load_dataset

    root = _waterbirds(tmp_path, ROWS)
    source = load_dataset(f"waterbirds:{root}", "test")
    assert source.classnames == ("landbird", "waterbird") and source.labels.tolist() == [1, 0, 0]
    assert source.image(0).size == (8, 8) and len(load_dataset(f"waterbirds:{root}", "train")) == 1
    cache = SimpleNamespace(manifest={"spec": {"dataset": f"waterbirds:{root}", "split": "test"}},
                            image_ids=source.ids, labels=source.labels, classnames=source.classnames, positions=None)
    groups = groups_for(cache, "place")
    assert [groups.names[i] for i in groups.index] == ["waterbird × water", "landbird × water", "landbird × land"]


@pytest.mark.parametrize("rows, says", [("1,a.png,2,2,0,x\n", "outside 0/1/2"),
                                        ("1,../../etc/passwd,0,2,0,x\n", "outside its folder"),
                                        ("", "lacks")])
def test_malformed_waterbirds_metadata_is_refused_in_one_line(tmp_path, rows, says):
    from residual_core.data.datasets import load_dataset

    root = _waterbirds(tmp_path, rows)
    with pytest.raises(ValueError, match=says) as err:
        load_dataset(f"waterbirds:{root}", "test")
    assert "\n" not in str(err.value)


def test_a_waterbirds_image_linked_out_of_its_folder_is_not_read(tmp_path):
    from residual_core.data.datasets import load_dataset
    from residual_core.data.sources import ImageReadError

    root = _waterbirds(tmp_path, ROWS)
    (root / "001.Albatross" / "a.png").unlink()
    (root / "001.Albatross" / "a.png").symlink_to(tmp_path / "elsewhere.png")
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "elsewhere.png")
    with pytest.raises(ImageReadError, match="inside the Waterbirds folder"):
        load_dataset(f"waterbirds:{root}", "test").image(0)


def test_a_fresh_world_is_its_own_scenes_and_names_refuse_anything_but_a_seed():
    from residual_core.data.datasets import load_dataset
    from residual_core.data.world import world_seed, world_split

    shipped, fresh = load_dataset("demo-world/shape", "test"), load_dataset("demo-world/shape@7000", "test")
    assert len(fresh) == len(shipped) and fresh.ids[0].startswith("test@7000/")
    assert not np.array_equal(fresh.labels, shipped.labels)  # other scenes
    assert np.array_equal(fresh.labels, load_dataset("demo-world/shape@7000", "test").labels)  # the same each time
    assert world_split("test", "demo-world/colour@7000") == "test@7000" and world_split("val", "demo-world/x@7") == "val"
    assert np.asarray(fresh.image(3)).shape == (48, 48, 3)
    for bad in ("demo-world/shape@x", "demo-world/shape@-1", "demo-world/shape@99999999999", "demo-world/shape@²"):
        with pytest.raises(ValueError, match="whole-number seed"):
            world_seed(bad)
    groups = world_groups("demo-world/shape@7000", "test", np.arange(5), fresh.labels[:5], "colour")
    assert len(groups.index) == 5


def test_a_group_file_that_is_a_fifo_or_a_folder_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "groups.csv"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path):
        with pytest.raises(ValueError, match="not a regular file"):
            csv_groups(path, ("cat/1.png",), np.array([0]), CLASSES)
