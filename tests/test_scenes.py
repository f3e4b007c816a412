"""The Fashion-MNIST scene dataset: byte-identical rebuilds, masks and boxes that agree
with the pixels, held-out garments, the TFDS builder and the folder export."""

import json

import numpy as np
import pytest

from training.datasets.fashion_scenes import FashionScenes, make_scenes

# Recorded with make_scenes.py at the commit that introduced it: a rebuild anywhere must
# give the same bytes. A change to the generator must update these, README.md's split
# digests, and FashionScenes.VERSION.
SLICE_DIGESTS = {
    ("test", 0, 6, 96): "09a8d0a749de9faae5e1a329d0942bf7149fe3c56b56cc93e8766712cd2f8fea",
    ("train", 100, 104, 96): "f01be68c37211770f1e6e3153a5fcd2b0de1c7a7bab6b9a122d611e8b2ecd927",
    ("test", 0, 3, 48): "1d43d4f9f91d5ae17eae79f3f28b59bca2d4369b487293658684a58726b7c631",
}


@pytest.mark.parametrize("key", sorted(SLICE_DIGESTS))
def test_slices_rebuild_byte_identically(key):
    split, start, stop, size = key
    assert make_scenes.digest(split, start, stop, size) == SLICE_DIGESTS[key]


def test_readme_lists_the_digests_the_generator_checks():
    readme = (make_scenes.Path(make_scenes.__file__).parent / "README.md").read_text()
    assert "make_scenes.py --check" in readme
    for split, count in make_scenes.SPLITS.items():
        assert f"  {split} ({count} scenes, {make_scenes.SIZE}x{make_scenes.SIZE})" in readme


def test_each_scene_is_drawn_alone():
    """A scene depends only on (split, index, size): any slice can be rebuilt alone."""
    first = make_scenes.scene("train", 7)
    make_scenes.scene("train", 3)
    again = make_scenes.scene("train", 7)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = make_scenes.scene("test", 7)
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("split,index", [("train", i) for i in range(12)] + [("test", 0)])
def test_masks_and_boxes_agree_with_the_pixels(split, index):
    image, mask, boxes, labels = make_scenes.scene(split, index)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert mask.shape == (96, 96) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= set(range(11)) | {255}
    assert len(boxes) == len(labels) >= 1 and set(labels) <= set(range(1, 11))
    # every labelled class is in the mask, every mask class is some object's
    assert set(np.unique(mask)) - {0, 255} == set(labels)
    covered = np.zeros_like(mask, bool)
    for (x, y, w, h), label in zip(boxes, labels):
        assert w > 0 and h > 0 and x + w <= 96 and y + h <= 96
        inside = mask[y:y + h, x:x + w]
        # tight: the box's first/last rows and columns hold pixels of its class
        for edge in (inside[0], inside[-1], inside[:, 0], inside[:, -1]):
            assert (edge == label).any()
        covered[y:y + h, x:x + w] = True
    assert not ((mask != 0) & (mask != 255) & ~covered).any()  # no object outside a box


def test_held_out_scenes_use_only_held_out_garments(monkeypatch):
    """The test split draws from the subset's test images: with the train images
    replaced by blanks, test scenes keep their bytes and train scenes change."""
    test_before, train_before = make_scenes.digest("test", 0, 2), make_scenes.digest("train", 0, 2)
    original = make_scenes.fashion

    def blank_train(split):
        images, labels = original(split)
        return (np.zeros_like(images), labels) if split == "train" else (images, labels)

    monkeypatch.setattr(make_scenes, "fashion", blank_train)
    assert make_scenes.digest("test", 0, 2) == test_before
    assert make_scenes.digest("train", 0, 2) != train_before


def test_tfds_builder_stores_what_the_generator_renders(tmp_path, monkeypatch):
    monkeypatch.setattr(make_scenes, "SPLITS", {"train": 3, "test": 2})
    builder = FashionScenes(data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert builder.info.features["objects"]["label"].names == make_scenes.CLASS_NAMES
    examples = sorted(builder.as_dataset(split="test").as_numpy_iterator(),
                      key=lambda ex: ex["image"].tobytes())
    rendered = sorted((make_scenes.scene("test", i) for i in range(2)),
                      key=lambda scene: scene[0].tobytes())
    for example, (image, mask, boxes, labels) in zip(examples, rendered):
        np.testing.assert_array_equal(example["image"], image)
        np.testing.assert_array_equal(example["segmentation_mask"][..., 0], mask)
        np.testing.assert_array_equal(example["objects"]["label"], labels - 1)
        ymin, xmin, ymax, xmax = (example["objects"]["bbox"] * 96).T
        np.testing.assert_allclose(np.stack([xmin, ymin, xmax - xmin, ymax - ymin], -1),
                                   boxes, atol=1e-4)


def test_export_writes_pngs_and_coco_json(tmp_path):
    make_scenes.export(tmp_path, "test", 3)
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == [f"test_{i:06d}.png" for i in range(3)]
    assert len(coco["categories"]) == 10
    _, _, boxes, labels = make_scenes.scene("test", 1)
    mine = [a for a in coco["annotations"] if a["image_id"] == 1]
    assert [a["bbox"] for a in mine] == boxes.tolist()
    assert [a["category_id"] for a in mine] == labels.tolist()
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [
        f"test_{i:06d}.png" for i in range(3)]
