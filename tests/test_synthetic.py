"""The synthetic shapes data set: deterministic, valid COCO, boxes in their images, varied."""

import hashlib
import json
import warnings

import numpy as np
import pytest
from pycocotools.coco import COCO

from centernet.data.coco import CocoDetection
from centernet.data.images import load_image
from centernet.data.synthetic import CLASSES, generate_dataset
from centernet.data.transforms import EvalTransform


def digest(split_dir):
    """Hash of a split's annotation file and of every image file, in name order."""
    files = [split_dir / "annotations.json"] + sorted((split_dir / "images").iterdir())
    return [(path.name, hashlib.sha256(path.read_bytes()).hexdigest()) for path in files]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, generate_dataset(out, num_train=24, num_val=4, seed=0)


def test_same_seed_same_bytes_other_seed_other_bytes(dataset, tmp_path):
    out, _ = dataset
    again = generate_dataset(tmp_path / "again", num_train=24, num_val=4, seed=0)
    for split in ("train", "val"):
        assert digest(out / split) == digest(again[f"{split}_ann"].parent)
    other = generate_dataset(tmp_path / "other", num_train=3, num_val=1, seed=1)
    first_images = dict(digest(out / "train"))
    assert all(first_images[name] != value for name, value in digest(other["train_ann"].parent)[1:])


def test_images_do_not_depend_on_split_sizes(dataset, tmp_path):
    out, _ = dataset
    small = generate_dataset(tmp_path / "small", num_train=3, num_val=1, seed=0)
    big_images = dict(digest(out / "train"))
    for name, value in digest(small["train_ann"].parent)[1:]:
        assert big_images[name] == value


def test_valid_coco_with_boxes_inside_images(dataset):
    out, paths = dataset
    for split in ("train", "val"):
        coco = COCO(str(paths[f"{split}_ann"]))
        assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == list(CLASSES)
        assert len(coco.imgs) == (24 if split == "train" else 4)
        for image in coco.imgs.values():
            pixels = load_image(paths[f"{split}_images"] / image["file_name"])
            assert pixels.shape == (image["height"], image["width"], 3)
            assert 240 <= image["height"] <= 640 and 240 <= image["width"] <= 640
        for ann in coco.anns.values():
            x, y, w, h = ann["bbox"]
            image = coco.imgs[ann["image_id"]]
            assert w >= 1 and h >= 1 and x >= 0 and y >= 0
            assert x + w <= image["width"] and y + h <= image["height"]
            assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0
    # our own loader accepts it without any warning about clipped or skipped boxes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CocoDetection(paths["train_images"], paths["train_ann"], EvalTransform()).check_files()


def test_classes_sizes_and_clutter_vary(dataset):
    out, paths = dataset
    data = json.loads(paths["train_ann"].read_text())
    labels = {ann["category_id"] for ann in data["annotations"]}
    assert labels == set(range(1, len(CLASSES) + 1))
    sides = np.array([max(ann["bbox"][2:]) for ann in data["annotations"]])
    image_short = {image["id"]: min(image["width"], image["height"]) for image in data["images"]}
    relative = np.array([max(ann["bbox"][2:]) / image_short[ann["image_id"]] for ann in data["annotations"]])
    assert sides.min() <= 12  # tiny objects
    assert relative.max() >= 0.35  # objects up to about half the image
    per_image = np.bincount([ann["image_id"] for ann in data["annotations"]], minlength=25)[1:]
    assert per_image.max() >= 6 and len({image["width"] / image["height"] for image in data["images"]}) > 10
    # backgrounds are not flat
    pixels = load_image(paths["train_images"] / data["images"][0]["file_name"]).astype(np.float32)
    assert pixels.std(axis=(0, 1)).mean() > 10
