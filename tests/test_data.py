"""Image loading and the COCO data set: checks with clear errors, box handling, batching, seeds."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from centernet.data.coco import CocoDetection, collate
from centernet.data.errors import DataError, ImageLoadError
from centernet.data.images import load_image
from centernet.data.transforms import EvalTransform, TrainTransform


# ----------------------------------------------------------------------------- images

def pattern(height=40, width=60):
    """An RGB image whose quadrants have distinct colours, so rotations and channel swaps show."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = (220, 30, 30)
    image[: height // 2, width // 2:] = (30, 220, 30)
    image[height // 2:, : width // 2] = (30, 30, 220)
    image[height // 2:, width // 2:] = (230, 230, 40)
    return image


def test_exif_orientation_is_applied(tmp_path):
    image = pattern()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: display rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(image).save(path, quality=95, exif=exif)
    loaded = load_image(path)
    assert loaded.shape == (60, 40, 3) and loaded.dtype == np.uint8
    expected = np.rot90(image, k=-1)  # clockwise
    assert np.abs(loaded.astype(int) - expected).mean() < 6


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "RGB"])
def test_image_modes_load_as_rgb(tmp_path, mode):
    rgb = pattern()
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    path = tmp_path / f"image_{mode.replace(';', '')}.png"
    if mode == "L":
        Image.fromarray(gray).save(path)
        expected = np.repeat(gray[:, :, None], 3, axis=2)
    elif mode == "RGBA":
        alpha = np.full(rgb.shape[:2] + (1,), 80, np.uint8)
        Image.fromarray(np.concatenate([rgb, alpha], axis=2)).save(path)
        expected = rgb  # alpha dropped, like cv2's IMREAD_COLOR
    elif mode == "P":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(path)
        expected = rgb
    elif mode == "I;16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path)
        expected = np.repeat(gray[:, :, None], 3, axis=2)
    else:
        Image.fromarray(rgb).save(path)
        expected = rgb
    loaded = load_image(path)
    assert loaded.shape == (40, 60, 3) and loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, expected)


def test_sixteen_bit_grayscale_scales_to_eight_bit(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(load_image(path)[0, :, 0], [0, 1, 128, 255])


def test_bad_images_raise_naming_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match="nothere.jpg.*not found"):
        load_image(tmp_path / "nothere.jpg")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match="junk.jpg"):
        load_image(junk)
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    with pytest.raises(ImageLoadError, match="truncated.jpg.*truncated"):
        load_image(truncated)
    assert issubclass(ImageLoadError, DataError) and issubclass(DataError, ValueError)


# ----------------------------------------------------------------------------- COCO files

def write_image(path, height, width, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def make_coco(tmp_path, annotations=None, categories=None, images=None, write_images=True):
    """A small COCO set: two images (100x80, 60x120), categories 7 'cat' / 3 'dog' / 42 'fox'."""
    images = images if images is not None else [
        {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
        {"id": 5, "file_name": "b.png", "width": 60, "height": 120},
    ]
    categories = categories if categories is not None else [
        {"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 42, "name": "fox"}]
    annotations = annotations if annotations is not None else [
        {"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 10, 30, 20], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 42, "bbox": [50, 30, 40, 40], "iscrowd": 0},
        {"id": 12, "image_id": 5, "category_id": 3, "bbox": [5, 60, 30, 50], "iscrowd": 0},
    ]
    (tmp_path / "images").mkdir(exist_ok=True)
    if write_images:
        for seed, image in enumerate(images):
            write_image(tmp_path / "images" / image["file_name"], image["height"], image["width"], seed)
    ann_file = tmp_path / "annotations.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return tmp_path / "images", ann_file


def test_non_contiguous_category_ids_map_to_sorted_labels(tmp_path):
    image_dir, ann_file = make_coco(tmp_path)
    dataset = CocoDetection(image_dir, ann_file, EvalTransform(keep_res=True))
    assert dataset.cat_ids == [3, 7, 42]
    assert dataset.class_names == ["dog", "cat", "fox"]
    assert dataset.num_classes == 3 and len(dataset) == 2 and dataset.image_ids == [1, 5]
    first, second = dataset[0], dataset[1]
    assert first["labels"].tolist() == [1, 2] and second["labels"].tolist() == [0]
    assert first["image_id"] == 1 and first["orig_size"] == (80, 100) and first["file"].endswith("a.png")
    assert first["image"].shape == (3, 96, 128) and first["image"].dtype == torch.float32
    # keep_res: the image is shifted into the canvas; boxes follow, and the inverse maps them back
    back = first["boxes"].reshape(-1, 2) @ first["inverse_affine"][:, :2].T + first["inverse_affine"][:, 2]
    np.testing.assert_allclose(back.reshape(-1, 4).numpy(), [[10, 10, 40, 30], [50, 30, 90, 70]], atol=1e-4)


@pytest.mark.parametrize("content, message", [
    ('{\n"images": [1, 2,,]}', r"bad.json: invalid JSON: .* line 2 column 17"),
    ("", r"bad.json: annotation file is empty"),
    ('{"annotations": [], "categories": []}', r"bad.json: missing list 'images'"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}', r"bad.json: no images"),
    ('{"images": [{"id": 1, "file_name": "a.png", "width": 4}], "annotations": [], "categories": []}',
     r"bad.json: images\[0\] lacks 'height'"),
    ('[1, 2]', r"bad.json: expected a JSON object"),
])
def test_malformed_annotation_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        CocoDetection(tmp_path, path, EvalTransform())


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DataError, match="nope.json: annotation file not found"):
        CocoDetection(tmp_path, tmp_path / "nope.json", EvalTransform())


def test_annotation_errors_name_file_annotation_and_category(tmp_path):
    bad_category = [{"id": 77, "image_id": 1, "category_id": 999, "bbox": [1, 1, 5, 5]}]
    image_dir, ann_file = make_coco(tmp_path, annotations=bad_category, write_images=False)
    with pytest.raises(DataError, match=r"annotations.json: annotation 77 has unknown category id 999"):
        CocoDetection(image_dir, ann_file, EvalTransform())
    bad_image = [{"id": 78, "image_id": 3, "category_id": 7, "bbox": [1, 1, 5, 5]}]
    image_dir, ann_file = make_coco(tmp_path, annotations=bad_image, write_images=False)
    with pytest.raises(DataError, match=r"annotation 78 refers to unknown image id 3"):
        CocoDetection(image_dir, ann_file, EvalTransform())
    bad_bbox = [{"id": 79, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5]}]
    image_dir, ann_file = make_coco(tmp_path, annotations=bad_bbox, write_images=False)
    with pytest.raises(DataError, match=r"annotation 79 bbox must be 4 numbers"):
        CocoDetection(image_dir, ann_file, EvalTransform())
    no_bbox = [{"id": 80, "image_id": 1, "category_id": 7}]
    image_dir, ann_file = make_coco(tmp_path, annotations=no_bbox, write_images=False)
    with pytest.raises(DataError, match=r"annotations\[0\] lacks 'bbox'"):
        CocoDetection(image_dir, ann_file, EvalTransform())


def test_boxes_clipped_and_skipped_with_one_counting_warning(tmp_path):
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [-10, 5, 30, 20]},  # clipped on the left
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [90, 70, 30, 30]},  # clipped right and bottom
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [20, 20, 0, 10]},  # zero width
        {"id": 4, "image_id": 1, "category_id": 3, "bbox": [200, 20, 10, 10]},  # wholly outside
        {"id": 5, "image_id": 1, "category_id": 42, "bbox": [20, 20, 10, 10], "iscrowd": 1},  # crowd
        {"id": 6, "image_id": 5, "category_id": 42, "bbox": [10, 10, 10, 10]},  # fine
    ]
    image_dir, ann_file = make_coco(tmp_path, annotations=annotations)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = CocoDetection(image_dir, ann_file, EvalTransform())
    lines = [str(w.message) for w in caught]
    assert len(lines) == 1, lines
    assert "annotations.json" in lines[0]
    assert "clipped 2 boxes" in lines[0] and "skipped 2 boxes of zero area" in lines[0]
    assert "1 crowd boxes" in lines[0]
    boxes, labels = dataset.original_boxes(0)  # image id 1
    np.testing.assert_allclose(boxes, [[0, 5, 20, 25], [90, 70, 100, 80]])
    assert labels.tolist() == [1, 1]
    assert dataset.coco.anns[6]["area"] == 100  # filled in for COCOeval


def test_missing_image_file_is_named(tmp_path):
    image_dir, ann_file = make_coco(tmp_path)
    (image_dir / "b.png").unlink()
    dataset = CocoDetection(image_dir, ann_file, EvalTransform())
    dataset[0]  # the other image loads
    with pytest.raises(ImageLoadError, match="b.png"):
        dataset[1]
    with pytest.raises(DataError, match="1 of 2 image files are missing: .*b.png"):
        dataset.check_files()


def test_collate_pads_images_and_targets(tmp_path):
    image_dir, ann_file = make_coco(tmp_path)
    dataset = CocoDetection(image_dir, ann_file, EvalTransform(keep_res=True), with_targets=True)
    items = [dataset[0], dataset[1]]  # inputs 96x128 and 128x64
    batch = collate(items)
    assert batch["image"].shape == (2, 3, 128, 128)
    assert batch["input_size"] == [(96, 128), (128, 64)]
    for i, item in enumerate(items):
        h, w = item["image"].shape[1:]
        torch.testing.assert_close(batch["image"][i, :, :h, :w], item["image"])
        assert batch["image"][i, :, h:, :].abs().sum() == 0 and batch["image"][i, :, :, w:].abs().sum() == 0
    assert batch["heatmap"].shape == (2, 3, 32, 32)
    assert batch["wh"].shape == (2, 128, 2) and batch["index"].shape == (2, 128)
    assert batch["inverse_affine"].shape == (2, 2, 3)
    assert batch["image_id"] == [1, 5] and len(batch["boxes"]) == 2
    # every object's index points at its gaussian's peak (1.0) in the padded heatmap
    for i, item in enumerate(items):
        for slot in torch.nonzero(batch["mask"][i]).flatten():
            label = item["labels"][slot]
            assert batch["heatmap"][i, label].flatten()[batch["index"][i, slot]] == 1.0
    assert batch["mask"].sum() == 3


def test_items_are_reproducible_per_seed_epoch_and_worker_count(tmp_path):
    image_dir, ann_file = make_coco(tmp_path)

    def dataset(seed):
        return CocoDetection(image_dir, ann_file, TrainTransform(input_size=(64, 64)), with_targets=True, seed=seed)

    first, again, other_seed = dataset(0), dataset(0), dataset(1)
    torch.testing.assert_close(first[1]["image"], again[1]["image"])
    assert not torch.equal(first[1]["image"], other_seed[1]["image"])
    before = first[1]["image"]
    first.set_epoch(1)
    assert not torch.equal(before, first[1]["image"])
    first.set_epoch(0)

    def images(workers):
        loader = torch.utils.data.DataLoader(first, batch_size=1, num_workers=workers, collate_fn=collate)
        return [batch["image"] for batch in loader]

    for a, b in zip(images(0), images(2)):
        torch.testing.assert_close(a, b)


def test_skip_empty_leaves_out_images_without_usable_boxes(tmp_path):
    annotations = [{"id": 1, "image_id": 5, "category_id": 7, "bbox": [10, 10, 10, 10]},
                   {"id": 2, "image_id": 1, "category_id": 7, "bbox": [10, 10, 10, 10], "iscrowd": 1}]
    image_dir, ann_file = make_coco(tmp_path, annotations=annotations, write_images=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert CocoDetection(image_dir, ann_file, EvalTransform()).image_ids == [1, 5]
        assert CocoDetection(image_dir, ann_file, EvalTransform(), skip_empty=True).image_ids == [5]
